"""What the web app (app.py) needs besides the UI: checkpoints, per-user annotation, drawing, export.

No gradio here, so everything can be tested as plain Python. Axis order follows the project:
(Z, Y, X) volumes, (Y, X) slices, (y, x) clicks, all in pixels of the loaded CT (display
orientation, see iunet.ct_io). Only the display image is scaled (by an integer
``display_scale``) so that small slices are not shown as postage stamps; app.py maps a
browser click back to slice pixels with :func:`display_to_slice_px`.

The model runs in two plain functions, :func:`infer_click` and :func:`infer_propagate`, that
take and return arrays only. On a Hugging Face ZeroGPU Space they are wrapped in
``spaces.GPU``, which runs them in a GPU worker process: arguments and results cross the process
boundary by pickling, so they must not mutate the caller's objects (a ``Session`` changed in the
worker would never come back).
"""
from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from iunet.clicks import Click, ClickSize
from iunet.ct_io import CTVolume
from iunet.inference import Predictor, Session, propagate
from iunet.model import read_header
from iunet.weight_maps import W_MAX, combined_weight_map
from iunet.windowing import window_to_uint8

# Small slices are enlarged (nearest neighbour, integer factor) until they are about this many
# pixels wide on screen; the browser never enlarges an image itself.
DISPLAY_TARGET_PX = 512
MASK_RGB = (30, 144, 255)  # mask fill, blended
MASK_ALPHA = 0.35
CONTOUR_RGB = (0, 255, 255)
POSITIVE_RGB = (40, 220, 60)
NEGATIVE_RGB = (255, 50, 50)
# A perceptually ordered dark → bright heat scale (after matplotlib's "inferno"), 0 … 1.
_HEAT_ANCHORS = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]],
    dtype=np.float32,
)


# --------------------------------------------------------------------------- checkpoints

@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint file in the weights folder and the name its header gives it."""

    path: str
    name: str

    @property
    def file_name(self) -> str:
        """What the model menu sends: the file name (server paths stay on the server)."""
        return Path(self.path).name

    @property
    def label(self) -> str:
        return f"{self.name} ({Path(self.path).name})" if self.name else Path(self.path).name


def find_checkpoints(weights_dir: str | Path) -> tuple[list[CheckpointInfo], list[str]]:
    """The ``*.safetensors`` checkpoints in ``weights_dir`` (sorted by file name).

    Returns (checkpoints, problems): files that are not iunet checkpoints (e.g. optimiser
    state) are left out and described in ``problems``, one line each.
    """
    found, problems = [], []
    folder = Path(weights_dir)
    for p in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            header = read_header(p)
        except (ValueError, OSError) as e:
            problems.append(f"{p.name}: {e}")
            continue
        found.append(CheckpointInfo(str(p.resolve()), str(header.get("name") or "")))
    return found, problems


class PredictorCache:
    """One shared :class:`Predictor` per checkpoint path, loaded on first use (thread-safe)."""

    def __init__(self, device: str = "auto"):
        self.device = device
        self._predictors: dict[str, Predictor] = {}
        self._lock = threading.Lock()

    def get(self, path: str) -> Predictor:
        with self._lock:
            if path not in self._predictors:
                self._predictors[path] = Predictor(path, device=self.device)
            return self._predictors[path]


PREDICTORS = PredictorCache()


def describe_device(predictor: Predictor) -> str:
    """``GPU (name)`` or ``CPU (n threads)``; never fails (ZeroGPU's main process has no real GPU)."""
    try:
        return predictor.describe_device()
    except Exception:  # noqa: BLE001 - only a label; the device itself works
        return f"GPU ({predictor.device})" if predictor.device.type == "cuda" else "CPU"


# --------------------------------------------------------------------------- inference (GPU tasks)

def gpu_task(duration_s: int) -> Callable:
    """``spaces.GPU(duration=...)`` on a ZeroGPU Space (package ``spaces`` importable), else nothing."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration_s)


@gpu_task(duration_s=20)
def infer_click(
    checkpoint: str, image_hu: np.ndarray, clicks: Sequence[Click], prev_probability: np.ndarray | None
) -> tuple[np.ndarray, float]:
    """Foreground probability (Y, X) float32 for one slice and all its clicks, and the model time in ms."""
    predictor = PREDICTORS.get(checkpoint)
    t0 = time.perf_counter()
    probability = predictor.predict(image_hu, clicks, prev_probability)
    return probability, (time.perf_counter() - t0) * 1000.0


@gpu_task(duration_s=120)
def infer_propagate(
    checkpoint: str, volume_hu: np.ndarray, start_index: int, start_mask: np.ndarray, click_size: ClickSize, max_slices: int
) -> np.ndarray:
    """``iunet.inference.propagate`` on the shared predictor: (Z, Y, X) bool."""
    return propagate(PREDICTORS.get(checkpoint), volume_hu, start_index, start_mask, click_size, max_slices=max_slices)


# --------------------------------------------------------------------------- one user's work

class Annotation:
    """One user's loaded CT and masks: the state behind one browser tab.

    Each slice the user clicked on has its own iunet ``Session`` (clicks, undo history);
    ``base_masks`` holds masks that no click on that slice made (propagated from a neighbour, or
    kept from a previous model). A session started on a slice with a base mask starts from it.
    ``lock`` serialises one user's events (the queue may run two of them at once).
    """

    def __init__(self, volume: CTVolume, name: str, click_size: ClickSize):
        self.volume = volume
        self.name = name
        self.z = volume.n_slices // 2
        self.click_size = click_size
        self.sessions: dict[int, Session] = {}
        self.base_masks: dict[int, np.ndarray] = {}
        self.checkpoint: str | None = None
        self.lock = threading.RLock()
        self._export_dir: str | None = None

    # -- reading -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self.volume.hu.shape[1:]  # type: ignore[return-value]

    @property
    def image_hu(self) -> np.ndarray:
        """The slice on view, (Y, X) float32 HU."""
        return self.volume.hu[self.z]

    @property
    def session(self) -> Session | None:
        return self.sessions.get(self.z)

    def mask(self, z: int | None = None) -> np.ndarray:
        """The mask of slice ``z`` (default: the one on view), (Y, X) bool."""
        z = self.z if z is None else z
        if z in self.sessions:
            return self.sessions[z].mask
        base = self.base_masks.get(z)
        return np.zeros(self.shape, bool) if base is None else base

    @property
    def clicks(self) -> tuple[Click, ...]:
        s = self.session
        return () if s is None else s.clicks

    def mask_volume(self) -> np.ndarray:
        """Every slice's mask, (Z, Y, X) bool."""
        out = np.zeros(self.volume.hu.shape, bool)
        for z in set(self.sessions) | set(self.base_masks):
            out[z] = self.mask(z)
        return out

    def area_mm2(self, mask: np.ndarray) -> float:
        """Area of a (Y, X) mask in mm² (pixel spacing y · x)."""
        _, sy, sx = self.volume.spacing_mm
        return float(mask.sum()) * sy * sx

    def next_radius_px(self) -> float:
        return self.click_size.radius_for(int(self.mask().sum()))

    # -- acting --------------------------------------------------------------------------
    def _new_session(self, predictor: Predictor) -> Session:
        return Session(predictor, self.image_hu, self.click_size, initial_mask=self.base_masks.get(self.z))

    def add_click(self, predictor: Predictor, checkpoint: str, y: int, x: int, positive: bool) -> Session:
        """Add a click at slice pixel (y, x) and predict; ValueError when (y, x) is outside the slice."""
        self.use_model(predictor, checkpoint)
        session = self.sessions.get(self.z) or self._new_session(predictor)
        click = session.make_click(y, x, positive)
        probability, ms = infer_click(checkpoint, session.image_hu, session.clicks + (click,), session.probability)
        # computed outside the session (infer_click may run in a ZeroGPU worker process)
        session.add_prediction(click, probability, ms)
        self.sessions[self.z] = session
        return session

    def undo(self) -> bool:
        s = self.session
        if s is None or not s.undo():
            return False
        if not s.clicks and self.z not in self.base_masks:
            del self.sessions[self.z]
        return True

    def reset(self) -> bool:
        """Clear the slice on view (its clicks and its mask). False when it had neither."""
        had = self.z in self.sessions or self.z in self.base_masks
        self.sessions.pop(self.z, None)
        self.base_masks.pop(self.z, None)
        return had

    def set_click_size(self, click_size: ClickSize) -> None:
        """Size of the next clicks on every slice; clicks already made keep theirs."""
        self.click_size = click_size
        for s in self.sessions.values():
            s.click_size = click_size

    def use_model(self, predictor: Predictor, checkpoint: str) -> bool:
        """Switch to another checkpoint. The slice on view is re-segmented by replaying its clicks
        on the new model; masks of other slices are kept as they are. True when the model changed."""
        if self.checkpoint == checkpoint:
            return False
        old, self.checkpoint = self.checkpoint, checkpoint
        if old is None:
            return True
        replay = self.sessions.pop(self.z, None)
        for z, s in self.sessions.items():
            self.base_masks[z] = s.mask
        self.sessions = {}
        if replay is not None:
            for c in replay.clicks:
                self.add_click(predictor, checkpoint, c.y, c.x, c.positive)
        return True

    def propagate(self, predictor: Predictor, checkpoint: str, max_slices: int) -> tuple[int, int]:
        """Carry the mask on view through the neighbouring slices (iunet.inference.propagate).

        Slices the user clicked on keep their own masks; every other slice takes the propagated
        one. Returns the (first, last) slice index that has a mask afterwards.
        """
        self.use_model(predictor, checkpoint)
        result = infer_propagate(checkpoint, self.volume.hu, self.z, self.mask(), self.click_size, max_slices)
        for z in range(result.shape[0]):
            if z == self.z or (z in self.sessions and self.sessions[z].clicks):
                continue
            self.sessions.pop(z, None)
            if result[z].any():
                self.base_masks[z] = result[z]
            else:
                self.base_masks.pop(z, None)
        filled = np.flatnonzero(self.mask_volume().any(axis=(1, 2)))
        return int(filled.min()), int(filled.max())

    # -- files ---------------------------------------------------------------------------
    def export_dir(self) -> Path:
        if self._export_dir is None or not Path(self._export_dir).is_dir():
            self._export_dir = tempfile.mkdtemp(prefix="iunet_app_")
        return Path(self._export_dir)

    def cleanup(self) -> None:
        """Remove this user's exported files (called when the browser session ends)."""
        if self._export_dir:
            shutil.rmtree(self._export_dir, ignore_errors=True)
            self._export_dir = None


def file_stem(path: str | Path) -> str:
    """A safe base name for exported files: the upload's name without extension(s)."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".dcm", ".zip", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return name or "ct"


# --------------------------------------------------------------------------- drawing

def display_scale(shape_yx: tuple[int, int]) -> int:
    """Integer factor by which a slice is enlarged on screen (1 for slices of 512 px and more)."""
    return max(1, DISPLAY_TARGET_PX // max(int(shape_yx[0]), int(shape_yx[1]), 1))


def display_to_slice_px(x_display: float, y_display: float, scale: int) -> tuple[int, int]:
    """A point of the displayed image, as the browser reports it (x, y), → slice pixel (y, x)."""
    return int(y_display) // scale, int(x_display) // scale


def _enlarge(a: np.ndarray, scale: int) -> np.ndarray:
    return a if scale == 1 else np.repeat(np.repeat(a, scale, axis=0), scale, axis=1)


def _draw_click(rgb: np.ndarray, click: Click, scale: int) -> None:
    """A circle of the click's radius (its real footprint in the guidance map) and a centre dot."""
    h, w = rgb.shape[:2]
    cy, cx = (click.y + 0.5) * scale, (click.x + 0.5) * scale
    r = max(click.radius_px, 0.5) * scale
    line = max(1.0, scale * 0.5)
    dot = max(2.0, scale * 0.6)
    reach = int(np.ceil(r + line + dot)) + 1
    y0, y1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, h)
    x0, x1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, w)
    yy, xx = np.ogrid[y0:y1, x0:x1]
    d = np.sqrt((yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2)
    paint = (np.abs(d - r) <= line / 2 + 0.35) | (d <= dot)
    rgb[y0:y1, x0:x1][paint] = POSITIVE_RGB if click.positive else NEGATIVE_RGB


def render_slice(
    image_hu: np.ndarray, level_hu: float, width_hu: float, mask: np.ndarray, clicks: Sequence[Click], scale: int
) -> np.ndarray:
    """The slice in the display window with the mask (fill + contour) and the clicks drawn on it.

    Returns uint8 (Y·scale, X·scale, 3). The window only affects this picture, never the model.
    """
    grey = _enlarge(window_to_uint8(image_hu, level_hu, width_hu), scale)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    m = _enlarge(np.asarray(mask, bool), scale)
    if m.any():
        fill = np.asarray(MASK_RGB, np.float32)
        rgb[m] = np.rint((1 - MASK_ALPHA) * rgb[m] + MASK_ALPHA * fill).astype(np.uint8)
        inner = ndimage.binary_erosion(m, iterations=1 if scale < 2 else 2, border_value=0)
        rgb[m & ~inner] = CONTOUR_RGB
    for c in clicks:
        _draw_click(rgb, c, scale)
    return rgb


def heat_colormap(values01: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 (..., 3) on a dark-to-bright heat scale."""
    v = np.clip(np.nan_to_num(np.asarray(values01, np.float32)), 0.0, 1.0) * (len(_HEAT_ANCHORS) - 1)
    i = np.minimum(v.astype(np.int64), len(_HEAT_ANCHORS) - 2)
    f = (v - i)[..., None]
    return np.rint(_HEAT_ANCHORS[i] * (1 - f) + _HEAT_ANCHORS[i + 1] * f).astype(np.uint8)


def render_weight_map(mask: np.ndarray, clicks: Sequence[Click], scale: int) -> np.ndarray:
    """The training loss's weight map ``max(d, w)`` (boundary map + equal-weight foreground
    clicks, 0 … 10) of the current mask and clicks as a heat map, uint8 (Y·scale, X·scale, 3)."""
    w = combined_weight_map(mask, clicks, boundary=True, click_mode="equal")
    return _enlarge(heat_colormap(w / W_MAX), scale)


def mask_png(mask: np.ndarray, path: str | Path) -> Path:
    """Write a (Y, X) mask as an 8-bit greyscale PNG (0 background, 255 foreground)."""
    from PIL import Image

    path = Path(path)
    Image.fromarray(np.where(np.asarray(mask, bool), 255, 0).astype(np.uint8), mode="L").save(path)
    return path


# --------------------------------------------------------------------------- examples

PHANTOM_SPACING_MM = (2.5, 0.8, 0.8)  # (z, y, x)


def phantom_volume(seed: int = 7, grid_px: int = 256, n_slices: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic CT volume for the offline example: organ-like blobs that shrink towards the
    first and last slice, rendered with ``iunet.data.render_ct``.

    Returns (hu float32 (Z, Y, X), labels int16 (Z, Y, X)); voxel size ``PHANTOM_SPACING_MM``.
    Each slice is rendered with the same seed and body outline, so an organ keeps its HU and
    texture from slice to slice.
    """
    from iunet.data import LabelSlice, render_ct, synthetic_labels

    rng = np.random.default_rng(seed)
    labels2d = synthetic_labels(grid_px, rng).labels
    yy, xx = np.mgrid[:grid_px, :grid_px]
    body = ((yy - 0.5 * grid_px) / (0.36 * grid_px)) ** 2 + ((xx - 0.5 * grid_px) / (0.46 * grid_px)) ** 2 <= 1.0
    labels = np.zeros((n_slices, grid_px, grid_px), np.int16)
    hu = np.zeros(labels.shape, np.float32)
    mid = (n_slices - 1) / 2.0
    for z in range(n_slices):
        shrink = (abs(z - mid) / (mid + 1.0)) ** 2  # 0 in the middle → ~0.8 at the ends
        for k in np.unique(labels2d)[1:]:
            organ = labels2d == k
            depth = ndimage.distance_transform_edt(organ)
            labels[z][depth > shrink * depth.max()] = k
        sl = LabelSlice(labels[z], 512, body=body | (labels2d > 0), source="phantom")
        hu[z] = render_ct(sl, np.random.default_rng(seed + 1))
    return hu, labels


def write_phantom_nifti(path: str | Path, seed: int = 7) -> Path:
    """Write :func:`phantom_volume` as a NIfTI in display orientation (voxel axes L, P, S)."""
    import nibabel as nib

    hu, _ = phantom_volume(seed)
    sz, sy, sx = PHANTOM_SPACING_MM
    affine = np.diag([-sx, -sy, sz, 1.0])  # x → patient left, y → posterior, z → superior
    path = Path(path)
    nib.save(nib.Nifti1Image(np.round(hu).astype(np.int16).transpose(2, 1, 0), affine), str(path))
    return path


# --------------------------------------------------------------------------- DICOM-SEG

def _source_rank(datasets: Sequence) -> list[tuple[int, int | None]]:
    """For each source image (dataset, frame) in the order highdicom expects the segmentation
    frames, its slice index along the sorted source axis of ``CTVolume.to_source_xyz``.

    ct_io sorts slices by position along the slice normal (IPP · (row × column cosine)), or,
    with no positions in the files, keeps their order; this recomputes that order from the
    datasets themselves, so it does not depend on the order the volume lists them in.
    Returns a list of (rank, frame index or None for single-frame datasets).
    """
    def position(ipp, iop) -> float | None:
        try:
            ipp = np.array([float(v) for v in ipp])
            iop = np.array([float(v) for v in iop])
        except (TypeError, ValueError):
            return None
        if ipp.shape != (3,) or iop.shape != (6,):
            return None
        return float(ipp @ np.cross(iop[:3], iop[3:]))

    if len(datasets) == 1 and int(datasets[0].get("NumberOfFrames", 1) or 1) > 1:
        ds = datasets[0]
        n = int(ds.NumberOfFrames)
        shared = ds.get("SharedFunctionalGroupsSequence")
        shared_iop = None
        if shared and "PlaneOrientationSequence" in shared[0]:
            shared_iop = shared[0].PlaneOrientationSequence[0].get("ImageOrientationPatient")
        per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
        keys = []
        for f in range(n):
            item = per_frame[f] if f < len(per_frame) else None
            ipp = iop = None
            if item is not None and "PlanePositionSequence" in item:
                ipp = item.PlanePositionSequence[0].get("ImagePositionPatient")
            if item is not None and "PlaneOrientationSequence" in item:
                iop = item.PlaneOrientationSequence[0].get("ImageOrientationPatient")
            keys.append(position(ipp, iop if iop is not None else shared_iop or ds.get("ImageOrientationPatient")))
        frames: list[int | None] = list(range(n))
    else:
        keys = [position(ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")) for ds in datasets]
        frames = [None] * len(datasets)
    if any(k is None for k in keys):
        return [(i, f) for i, f in enumerate(frames)]
    order = np.argsort(np.asarray(keys), kind="stable")
    rank = np.empty(len(keys), int)
    rank[order] = np.arange(len(keys))
    return [(int(r), f) for r, f in zip(rank, frames)]


def export_dicom_seg(volume: CTVolume, mask_zyx: np.ndarray, path: str | Path, algorithm: str) -> Path:
    """Write a binary DICOM Segmentation (highdicom) of ``mask_zyx`` referencing the source images.

    mask_zyx: (Z, Y, X) bool in display orientation. Each segmentation frame is the mask on one
    source image, in that image's own rows and columns (the display orientation is undone with
    ``volume.to_source_xyz``). Raises ValueError for non-DICOM input or an empty mask.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if volume.kind != "dicom" or not volume.dicom_datasets:
        raise ValueError("DICOM-SEG export needs a DICOM input; use NIfTI or PNG for this image.")
    mask = np.asarray(mask_zyx, bool)
    if not mask.any():
        raise ValueError("The mask is empty: there is nothing to export. Click on the object first.")
    src = volume.to_source_xyz(mask.astype(np.uint8))  # (col, row, sorted slice)
    datasets = list(volume.dicom_datasets)
    ranks = _source_rank(datasets)
    if len(ranks) != src.shape[2]:
        raise ValueError(
            f"DICOM-SEG export: the {len(ranks)} source images do not match the volume's {src.shape[2]} slices."
        )
    frames = np.stack([src[:, :, r].T for r, _ in ranks])  # (frame, rows, cols)
    version = "1"
    algorithm_id = hd.AlgorithmIdentificationSequence(name=algorithm[:64] or "iunet", family=codes.cid7162.ArtificialIntelligence, version=version)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Segmented region",
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
        algorithm_identification=algorithm_id,
    )
    first = datasets[0]
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=int(first.get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="iunet",
        manufacturer_model_name="IU-Net interactive segmentation",
        software_versions=version,
        device_serial_number="none",
        series_description="IU-Net interactive segmentation",
    )
    path = Path(path)
    seg.save_as(str(path))
    return path


__all__ = [
    "Annotation", "CheckpointInfo", "PREDICTORS", "PredictorCache", "describe_device", "display_scale",
    "display_to_slice_px", "export_dicom_seg", "file_stem", "find_checkpoints", "gpu_task", "heat_colormap",
    "infer_click", "infer_propagate", "mask_png", "phantom_volume", "write_phantom_nifti", "render_slice", "render_weight_map",
]
