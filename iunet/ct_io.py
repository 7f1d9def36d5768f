"""CT input/output: DICOM (file, series, folder, .zip), NIfTI and plain images → HU volume.

Every loader ends in the same place, a :class:`CTVolume` whose ``hu`` array is (Z, Y, X) in the
**display orientation** used by the whole project (radiological convention):

* rows (Y) run anterior → posterior, so the patient's front is at the top of the image;
* columns (X) run patient right → left, so the patient's left is on the image's right;
* slices (Z) run inferior → superior.

In nibabel's axis codes for the voxel index order (x, y, z) = (col, row, slice) this is
exactly ``("L", "P", "S")``. The reorientation is done in one place: each loader builds the
source file's voxel → RAS affine (DICOM's LPS geometry converted by flipping the first two world
axes) and :func:`_to_display` reorients with ``nibabel.orientations``; ``CTVolume.to_source_xyz``
applies the inverse so that masks go back onto the original voxel grid.

Every bad input raises :class:`CTLoadError` (a ValueError) with a message that says what was
wrong and what is accepted; pydicom / nibabel / Pillow exceptions never escape ``load_ct``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence, Union

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

PathLike = Union[str, os.PathLike]

# Largest slice (rows or columns, in pixels) accepted: CT is 512², rarely 1024²; bigger inputs are
# photos or scans of film and would only exhaust memory.
MAX_SLICE_PX = 2048
# Zip archives are extracted to a temporary folder; refuse more than this many uncompressed bytes
# (zip bombs) or members.
MAX_ZIP_UNCOMPRESSED_BYTES = 2 * 1024**3
MAX_ZIP_MEMBERS = 100_000
# Display orientation as nibabel axis codes for index order (x, y, z).
DISPLAY_AXCODES = ("L", "P", "S")
# 8-bit images are read as a screenshot windowed with the soft-tissue window (level 40, width 400):
# HU = IMAGE_8BIT_LOWER_HU + v * IMAGE_8BIT_WIDTH_HU / 255, i.e. -160 HU ... +240 HU.
IMAGE_8BIT_LEVEL_HU = 40.0
IMAGE_8BIT_WIDTH_HU = 400.0
IMAGE_8BIT_LOWER_HU = IMAGE_8BIT_LEVEL_HU - IMAGE_8BIT_WIDTH_HU / 2.0
# 16-bit images are read as CT stored with the usual +1024 offset: HU = v - 1024.
IMAGE_16BIT_OFFSET_HU = -1024.0
# An RGB image counts as a colour photo when more than this fraction of its pixels has channels
# that differ by more than COLOUR_SPREAD_LEVELS grey levels (JPEG noise on grey stays far below).
COLOUR_SPREAD_LEVELS = 16
COLOUR_PIXEL_FRACTION = 0.01

_IMAGE_FORMATS = {"PNG", "JPEG", "MPO", "BMP", "TIFF"}
ACCEPTED_INPUTS = (
    "a DICOM file, a DICOM series (a folder, several files, or a .zip of them), "
    "a NIfTI volume (.nii or .nii.gz), or a greyscale PNG/JPEG/BMP/TIFF image"
)
# DICOM's patient coordinates are LPS; NIfTI/nibabel use RAS: flip the first two world axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class CTLoadError(ValueError):
    """The input could not be read as a CT; the message says why and what is accepted."""


@dataclass(frozen=True, eq=False)
class CTVolume:
    """A CT volume in display orientation with the geometry needed to map results back.

    Attributes:
        hu: float32 (Z, Y, X) Hounsfield units in display orientation (see the module docstring).
        spacing_mm: (z, y, x) voxel size in mm of ``hu``.
        affine_ras: 4x4 float64; maps display voxel index (x, y, z) = (col, row, slice) to RAS mm.
        kind: "dicom", "nifti" or "image" (what the input was).
        source_affine_ras: 4x4 float64; the input's own voxel → RAS affine, index order (i, j, k)
            (for DICOM: (col, row, slice in position-sorted order)).
        source_shape_xyz: (i, j, k) shape of the input's voxel grid.
        dicom_datasets: pydicom Datasets of a DICOM input, one per display slice in display slice
            order (pixel data kept). Exceptions: a multi-frame file gives one Dataset; a series
            whose slices are not axial (shown reformatted) keeps position-sorted order.
        description: one human-readable line, e.g. "DICOM series, 129 slices, 512×512, 0.57×0.57×1.6 mm".
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    affine_ras: np.ndarray
    kind: str
    source_affine_ras: np.ndarray
    source_shape_xyz: tuple[int, int, int]
    dicom_datasets: tuple = ()
    description: str = ""

    def __post_init__(self) -> None:
        hu = np.asarray(self.hu, dtype=np.float32)
        if hu.ndim != 3:
            raise ValueError(f"CTVolume.hu must be (Z, Y, X), got shape {hu.shape}")
        if self.kind not in ("dicom", "nifti", "image"):
            raise ValueError(f"CTVolume.kind must be 'dicom', 'nifti' or 'image', got {self.kind!r}")
        object.__setattr__(self, "hu", hu)
        for name in ("affine_ras", "source_affine_ras"):
            aff = np.array(getattr(self, name), dtype=np.float64)
            if aff.shape != (4, 4):
                raise ValueError(f"CTVolume.{name} must be 4x4, got shape {aff.shape}")
            aff.setflags(write=False)
            object.__setattr__(self, name, aff)
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))
        object.__setattr__(self, "source_shape_xyz", tuple(int(s) for s in self.source_shape_xyz))
        object.__setattr__(self, "dicom_datasets", tuple(self.dicom_datasets))
        if _display_shape_xyz(self.source_shape_xyz, self.source_affine_ras) != hu.shape[::-1]:
            raise ValueError(
                f"CTVolume: source grid {self.source_shape_xyz} reoriented to display does not give "
                f"hu's (X, Y, Z) shape {hu.shape[::-1]}"
            )

    @property
    def n_slices(self) -> int:
        """Number of display slices (Z)."""
        return int(self.hu.shape[0])

    def to_source_xyz(self, mask_zyx: np.ndarray) -> np.ndarray:
        """Map an array in display (Z, Y, X) layout back onto the input file's voxel grid.

        Args:
            mask_zyx: array shaped like ``hu`` (Z, Y, X), any dtype.
        Returns:
            array of the same dtype shaped ``source_shape_xyz``, index order (i, j, k) of the
            source file (for DICOM: (col, row, slice in position-sorted order)).
        """
        arr = np.asarray(mask_zyx)
        if arr.shape != self.hu.shape:
            raise ValueError(f"expected an array shaped like the volume (Z, Y, X) = {self.hu.shape}, got {arr.shape}")
        back = nio.ornt_transform(nio.axcodes2ornt(DISPLAY_AXCODES), nio.io_orientation(self.source_affine_ras))
        out = nio.apply_orientation(arr.transpose(2, 1, 0), back)
        assert out.shape == self.source_shape_xyz, (out.shape, self.source_shape_xyz)
        return np.ascontiguousarray(out)


# --------------------------------------------------------------------------- orientation

def _source_to_display_ornt(source_affine_ras: np.ndarray) -> np.ndarray:
    """nibabel orientation transform from the source voxel axes to display (L, P, S)."""
    src = nio.io_orientation(source_affine_ras)
    if np.isnan(src).any():
        raise CTLoadError("The file's orientation matrix is degenerate (an image axis has no direction in space).")
    return nio.ornt_transform(src, nio.axcodes2ornt(DISPLAY_AXCODES))


def _display_shape_xyz(source_shape_xyz: Sequence[int], source_affine_ras: np.ndarray) -> tuple[int, int, int]:
    ornt = _source_to_display_ornt(source_affine_ras)
    out = [0, 0, 0]
    for src_axis, (dst_axis, _flip) in enumerate(ornt):
        out[int(dst_axis)] = int(source_shape_xyz[src_axis])
    return tuple(out)


def _repair_affine(affine: np.ndarray) -> tuple[np.ndarray, str]:
    """Give a zero-length axis (e.g. the slice axis of a 2D file) a 1 mm normal direction.

    Returns (affine, note); note is "" when nothing changed. Raises CTLoadError when the
    in-plane axes themselves are degenerate.
    """
    aff = np.array(affine, dtype=np.float64)
    cols = aff[:3, :3]
    if not np.isfinite(aff).all():
        raise CTLoadError("The file's orientation matrix contains NaN or infinite numbers.")
    norms = np.linalg.norm(cols, axis=0)
    bad = norms < 1e-6
    if not bad.any():
        if abs(np.linalg.det(cols)) < 1e-9 * float(np.prod(norms)):
            raise CTLoadError("The file's orientation matrix is degenerate (two image axes point the same way).")
        return aff, ""
    if bad.sum() > 1:
        raise CTLoadError("The file's orientation matrix is degenerate (voxel sizes of 0 mm).")
    k = int(np.flatnonzero(bad)[0])
    a, b = [cols[:, i] / norms[i] for i in range(3) if i != k]
    normal = np.cross(a, b)
    if np.linalg.norm(normal) < 1e-6:
        raise CTLoadError("The file's orientation matrix is degenerate (two image axes point the same way).")
    aff[:3, k] = normal / np.linalg.norm(normal)
    return aff, "slice thickness missing, 1 mm assumed"


def _to_display(data_xyz: np.ndarray, source_affine_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient source voxels (i, j, k) to display: returns (hu float32 (Z, Y, X), display affine)."""
    ornt = _source_to_display_ornt(source_affine_ras)
    disp_xyz = nio.apply_orientation(data_xyz, ornt)
    disp_affine = source_affine_ras @ nio.inv_ornt_aff(ornt, data_xyz.shape)
    hu = np.ascontiguousarray(disp_xyz.transpose(2, 1, 0), dtype=np.float32)
    return hu, disp_affine


def _spacing_zyx(display_affine: np.ndarray) -> tuple[float, float, float]:
    sx, sy, sz = np.linalg.norm(display_affine[:3, :3], axis=0)
    return float(sz), float(sy), float(sx)


def _check_display_size(display_shape_xyz: Sequence[int], what: str) -> None:
    nx, ny, nz = (int(s) for s in display_shape_xyz)
    if min(nx, ny, nz) <= 0:
        raise CTLoadError(f"{what} contains no voxels (size {nx}×{ny}×{nz}).")
    if nx > MAX_SLICE_PX or ny > MAX_SLICE_PX:
        raise CTLoadError(
            f"{what} has slices of {nx}×{ny} pixels (width×height); the largest slice accepted is "
            f"{MAX_SLICE_PX}×{MAX_SLICE_PX} pixels (CT slices are usually 512×512)."
        )


def _finish(
    data_xyz: np.ndarray,
    source_affine_ras: np.ndarray,
    kind: str,
    label: str,
    what: str,
    notes: Sequence[str] = (),
    dicom_datasets: tuple = (),
) -> CTVolume:
    """Common last step of every loader: reorient, check the values, describe."""
    hu, disp_affine = _to_display(data_xyz, source_affine_ras)
    if hu.size == 0:
        raise CTLoadError(f"{what} contains no voxels.")
    if not np.isfinite(hu).all():
        n_bad = int(hu.size - np.count_nonzero(np.isfinite(hu)))
        raise CTLoadError(
            f"{what} contains {n_bad} voxel(s) that are not numbers (NaN or infinite); "
            "a CT must hold finite Hounsfield units everywhere."
        )
    spacing = _spacing_zyx(disp_affine)
    nz, ny, nx = hu.shape
    desc = (
        f"{label}, {nz} slice{'s' if nz != 1 else ''}, {nx}×{ny}, "
        f"{spacing[2]:.3g}×{spacing[1]:.3g}×{spacing[0]:.3g} mm"
    )
    notes = [n for n in notes if n]
    if notes:
        desc += "; " + "; ".join(notes)
    return CTVolume(
        hu=hu,
        spacing_mm=spacing,
        affine_ras=disp_affine,
        kind=kind,
        source_affine_ras=source_affine_ras,
        source_shape_xyz=tuple(int(s) for s in data_xyz.shape),
        dicom_datasets=dicom_datasets,
        description=desc,
    )


def _orientation_note(source_affine_ras: np.ndarray) -> str:
    """Say so when display slices are not the stored slices (e.g. a sagittal acquisition)."""
    ornt = _source_to_display_ornt(source_affine_ras)
    if int(ornt[2, 0]) == 2:
        return ""
    plane = {0: "sagittal", 1: "coronal"}[int(ornt[2, 0])]
    return f"stored as {plane} slices, shown as axial slices"


# --------------------------------------------------------------------------- sniffing

def _read_head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _is_dicom_preamble(path: Path) -> bool:
    return _read_head(path, 132)[128:132] == b"DICM"


def _looks_like_nifti(path: Path) -> bool:
    head = _read_head(path, 352)
    if head[:2] == b"\x1f\x8b":  # gzip: look inside
        try:
            with gzip.open(path, "rb") as f:
                head = f.read(352)
        except (OSError, EOFError):
            return False
    return head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00")


def _has_nifti_suffix(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _ensure_transfer_syntax(ds) -> None:
    """Files without a file meta header (read with force=True) lack the Transfer Syntax UID that
    pixel decoding needs; restore it from the encoding the file was actually read with."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _read_dicom_lazy(path: Path):
    """Read a DICOM image file, deferring the pixel data; None when it is not a DICOM image.

    Files with the standard "DICM" preamble are read normally; files without it (old
    ACR-NEMA style, or stripped preambles) are read with ``force=True`` and accepted only
    when they carry an image (Rows, Columns and Pixel Data).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(str(path), defer_size="4 KB")
        except InvalidDicomError:
            try:
                ds = pydicom.dcmread(str(path), defer_size="4 KB", force=True)
            except Exception:
                return None
            if not ("Rows" in ds and "Columns" in ds and "PixelData" in ds):
                return None
        except Exception as exc:
            if _is_dicom_preamble(path):
                raise CTLoadError(
                    f"DICOM file '{path.name}' is damaged and could not be read ({type(exc).__name__}: {exc})."
                ) from exc
            return None
    return ds


def _read_dicom_full(path: Path):
    """Read a DICOM file completely (pixel data included) once it is known to be DICOM."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(str(path), force=not _is_dicom_preamble(path))
        except Exception as exc:
            raise CTLoadError(f"DICOM file {path.name} could not be read ({exc}); it may be truncated or damaged.") from exc
    _ensure_transfer_syntax(ds)
    return ds


# --------------------------------------------------------------------------- DICOM

@dataclass
class _Slice:
    """One 2D image of a DICOM input: a single-frame file or one frame of a multi-frame file."""

    ds: object
    frame: int | None
    path: Path
    ipp: np.ndarray | None  # ImagePositionPatient (LPS mm)
    iop: np.ndarray | None  # ImageOrientationPatient: row cosine (3), column cosine (3)
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns) mm
    thickness_mm: float | None
    instance: int
    slope: float
    intercept: float
    rows: int
    cols: int


def _floats(value, n: int) -> np.ndarray | None:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.isfinite(arr).all() else None


def _float_or(value, default):
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if np.isfinite(v) else default


def _single_frame_slice(ds, path: Path) -> _Slice:
    ps = _floats(ds.get("PixelSpacing"), 2)
    if ps is None:
        ps = _floats(ds.get("ImagerPixelSpacing"), 2)
    return _Slice(
        ds=ds,
        frame=None,
        path=path,
        ipp=_floats(ds.get("ImagePositionPatient"), 3),
        iop=_floats(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=None if ps is None else (float(ps[0]), float(ps[1])),
        thickness_mm=_float_or(ds.get("SpacingBetweenSlices"), None) or _float_or(ds.get("SliceThickness"), None),
        instance=int(_float_or(ds.get("InstanceNumber"), 0)),
        slope=_float_or(ds.get("RescaleSlope"), 1.0) or 1.0,
        intercept=_float_or(ds.get("RescaleIntercept"), 0.0),
        rows=int(ds.get("Rows") or 0),
        cols=int(ds.get("Columns") or 0),
    )


def _multi_frame_slices(ds, path: Path) -> list[_Slice]:
    """Frames of an enhanced (multi-frame) DICOM with their per-frame geometry when present."""
    n_frames = int(_float_or(ds.get("NumberOfFrames"), 1))
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared = shared[0] if shared else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    base = _single_frame_slice(ds, path)

    def lookup(item, seq: str, attr: str):
        for group in (item, shared):
            sq = group.get(seq) if group is not None else None
            if sq and attr in sq[0]:
                return sq[0].get(attr)
        return None

    out = []
    for f in range(n_frames):
        item = per_frame[f] if f < len(per_frame) else None
        ipp = _floats(lookup(item, "PlanePositionSequence", "ImagePositionPatient"), 3)
        iop = _floats(lookup(item, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
        ps = _floats(lookup(item, "PixelMeasuresSequence", "PixelSpacing"), 2)
        thick = _float_or(lookup(item, "PixelMeasuresSequence", "SpacingBetweenSlices"), None) or _float_or(
            lookup(item, "PixelMeasuresSequence", "SliceThickness"), None
        )
        slope = _float_or(lookup(item, "PixelValueTransformationSequence", "RescaleSlope"), None)
        intercept = _float_or(lookup(item, "PixelValueTransformationSequence", "RescaleIntercept"), None)
        out.append(
            _Slice(
                ds=ds,
                frame=f,
                path=path,
                ipp=ipp,
                iop=iop if iop is not None else base.iop,
                pixel_spacing=(float(ps[0]), float(ps[1])) if ps is not None else base.pixel_spacing,
                thickness_mm=thick or base.thickness_mm,
                instance=f,
                slope=slope or base.slope,
                intercept=intercept if intercept is not None else base.intercept,
                rows=base.rows,
                cols=base.cols,
            )
        )
    return out


def _series_geometry(slices: list[_Slice], what: str) -> tuple[list[_Slice], np.ndarray, list[str]]:
    """Sort slices along the slice normal and build the LPS affine of the (col, row, slice) grid.

    Returns (sorted slices, 4x4 affine LPS, notes for the description).
    """
    notes: list[str] = []
    first = slices[0]
    if first.rows <= 0 or first.cols <= 0:
        raise CTLoadError(f"{what} has no image size (Rows/Columns missing or 0).")
    sizes = sorted({(s.rows, s.cols) for s in slices})
    if len(sizes) > 1:
        listed = ", ".join(f"{c}×{r}" for r, c in sizes)
        raise CTLoadError(
            f"{what} mixes slices of different sizes ({listed} pixels, width×height); a series must have one slice "
            "size. Load the slices of one size (one series) at a time."
        )
    iops = [s.iop for s in slices]
    has_geometry = all(i is not None for i in iops) and all(s.ipp is not None for s in slices)
    if has_geometry:
        iop = iops[0]
        if any(np.abs(i - iop).max() > 1e-3 for i in iops):
            raise CTLoadError(
                f"{what} mixes slices with different orientations (e.g. a scout image with axial slices); "
                "load one series with a single orientation."
            )
    else:
        iop = iops[0] if iops[0] is not None else np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
        notes.append("no slice positions in the files: slices ordered by instance number, axial orientation assumed")
    row_cos = iop[:3] / max(np.linalg.norm(iop[:3]), 1e-12)
    col_cos = iop[3:] / max(np.linalg.norm(iop[3:]), 1e-12)
    normal = np.cross(row_cos, col_cos)
    if np.linalg.norm(normal) < 1e-6:
        raise CTLoadError(f"{what} has an invalid Image Orientation (Patient): its row and column directions are parallel.")
    normal /= np.linalg.norm(normal)

    if first.pixel_spacing is None:
        dy_mm, dx_mm = 1.0, 1.0
        notes.append("pixel spacing missing, 1 mm assumed")
    else:
        dy_mm, dx_mm = first.pixel_spacing
        if dy_mm <= 0 or dx_mm <= 0:
            raise CTLoadError(f"{what} has an invalid Pixel Spacing of {dy_mm}×{dx_mm} mm.")

    if has_geometry:
        dist = np.array([float(s.ipp @ normal) for s in slices])
        order = np.argsort(dist, kind="stable")
        slices = [slices[i] for i in order]
        dist = dist[order]
        if len(slices) > 1:
            steps = np.diff(dist)
            if steps.min() < 1e-3:
                i = int(np.argmin(steps))
                raise CTLoadError(
                    f"{what} has two slices at the same position ({dist[i]:.2f} mm along the slice "
                    "direction), e.g. two acquisitions in one series; load one acquisition at a time."
                )
            step_vec = (slices[-1].ipp - slices[0].ipp) / (len(slices) - 1)
            median = float(np.median(steps))
            if np.abs(steps - median).max() > 0.1 * median + 0.01:
                notes.append(
                    f"uneven slice spacing ({steps.min():.3g}–{steps.max():.3g} mm, e.g. missing slices); "
                    f"an even {np.linalg.norm(step_vec):.3g} mm is assumed"
                )
        else:
            step_vec = normal * (first.thickness_mm or 1.0)
        origin = slices[0].ipp
    else:
        slices = sorted(slices, key=lambda s: s.instance)
        step_vec = normal * (first.thickness_mm or 1.0)
        origin = first.ipp if first.ipp is not None else np.zeros(3)
    if not (first.thickness_mm or len(slices) > 1):
        notes.append("slice thickness missing, 1 mm assumed")

    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_cos * dx_mm  # column index runs along the row direction
    affine_lps[:3, 1] = col_cos * dy_mm  # row index runs along the column direction
    affine_lps[:3, 2] = step_vec
    affine_lps[:3, 3] = origin
    return slices, affine_lps, notes


def _decode_slices(slices: list[_Slice], what: str) -> np.ndarray:
    """Decode pixel data and apply the rescale: (n, rows, cols) float32 HU."""
    first = slices[0]
    out = np.empty((len(slices), first.rows, first.cols), dtype=np.float32)
    frames_cache: dict[int, np.ndarray] = {}
    for n, s in enumerate(slices):
        name = s.path.name
        if int(s.ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise CTLoadError(
                f"DICOM file {name} holds a colour image (e.g. a screenshot or secondary capture); "
                "only greyscale CT images are accepted."
            )
        try:
            if s.frame is None:
                arr = s.ds.pixel_array
            else:
                key = id(s.ds)
                if key not in frames_cache:
                    frames_cache[key] = s.ds.pixel_array
                arr = frames_cache[key][s.frame]
        except Exception as exc:  # pydicom raises many types for damaged/unsupported data
            tsyntax = getattr(getattr(s.ds, "file_meta", None), "TransferSyntaxUID", None)
            ts_name = getattr(tsyntax, "name", str(tsyntax)) if tsyntax is not None else "unknown"
            hint = (
                "the file may be truncated or damaged"
                if tsyntax is None or not getattr(tsyntax, "is_compressed", False)
                else f"it is compressed ({ts_name}) in a way that cannot be decoded here; export it uncompressed"
            )
            raise CTLoadError(
                f"Could not read the pixel data (image) of DICOM file {name}: {hint}. (Detail: {exc})"
            ) from exc
        if arr.shape != (first.rows, first.cols):
            raise CTLoadError(
                f"DICOM file {name}: the image is {arr.shape} pixels, expected {first.rows}×{first.cols} "
                "from its header; the file may be damaged."
            )
        out[n] = arr.astype(np.float32) * np.float32(s.slope) + np.float32(s.intercept)
    return out


def _modality_note(datasets: Sequence) -> str:
    modalities = sorted({str(ds.get("Modality", "")).strip() for ds in datasets} - {""})
    other = [m for m in modalities if m != "CT"]
    return f"modality {'/'.join(other)}: values are not Hounsfield units" if other else ""


def _load_dicom_datasets(items: list[tuple[Path, object]], what: str, notes: list[str]) -> CTVolume:
    """Build a volume from (path, lazily read dataset) pairs, picking the largest series."""
    with_pixels = [(p, ds) for p, ds in items if "PixelData" in ds]
    if not with_pixels:
        raise CTLoadError(
            f"{what}: the DICOM file(s) contain no image (no pixel data), e.g. a report, a "
            "structure set or a DICOMDIR. Give the CT image files of the series."
        )
    groups: dict[str, list[tuple[Path, object]]] = {}
    for p, ds in with_pixels:
        groups.setdefault(str(ds.get("SeriesInstanceUID", "") or "unknown"), []).append((p, ds))
    _uid, chosen = max(groups.items(), key=lambda kv: len(kv[1]))
    # Re-read the chosen files completely: the lazy read defers large elements to the file,
    # which may be a temporary copy (zip) that is gone when a DICOM-SEG export reads them.
    chosen = [(p, _read_dicom_full(p)) for p, _ in chosen]
    if len(groups) > 1:
        name = str(chosen[0][1].get("SeriesDescription", "") or "").strip()
        label = f" '{name}'" if name else ""
        notes.append(
            f"{len(groups)} series found, the largest{label} was loaded "
            f"({len(chosen)} of {len(with_pixels)} image files)"
        )

    multi = [(p, ds) for p, ds in chosen if int(_float_or(ds.get("NumberOfFrames"), 1)) > 1]
    if multi:
        if len(chosen) > 1:
            raise CTLoadError(
                f"{what} mixes a multi-frame DICOM file with other images; load the multi-frame file on its own."
            )
        p, ds = multi[0]
        slices = _multi_frame_slices(ds, p)
        label = "DICOM multi-frame file"
    else:
        slices = [_single_frame_slice(ds, p) for p, ds in chosen]
        label = "DICOM series" if len(slices) > 1 else "DICOM file"

    slices, affine_lps, geo_notes = _series_geometry(slices, what)
    affine_ras = _LPS_TO_RAS @ affine_lps
    shape_xyz = (slices[0].cols, slices[0].rows, len(slices))
    _check_display_size(_display_shape_xyz(shape_xyz, affine_ras), what)
    stack = _decode_slices(slices, what)  # (k, j, i)
    datasets = [s.ds for s in slices] if not multi else [slices[0].ds]

    ornt = _source_to_display_ornt(affine_ras)
    if not multi and int(ornt[2, 0]) == 2 and ornt[2, 1] < 0:
        datasets = datasets[::-1]  # display slice order is the reverse of the sorted order
    notes = notes + geo_notes + [_orientation_note(affine_ras), _modality_note(datasets)]
    return _finish(stack.transpose(2, 1, 0), affine_ras, "dicom", label, what, notes, tuple(datasets))


def _load_dicom_paths(paths: Sequence[Path], what: str, notes: list[str]) -> CTVolume:
    items, skipped = [], 0
    for p in paths:
        ds = _read_dicom_lazy(p)
        if ds is None:
            skipped += 1
        else:
            items.append((p, ds))
    if not items:
        raise CTLoadError(f"{what}: no DICOM image files found. Accepted inputs: {ACCEPTED_INPUTS}.")
    if skipped:
        notes = notes + [f"{skipped} file(s) that are not DICOM images were ignored"]
    return _load_dicom_datasets(items, what, notes)


# --------------------------------------------------------------------------- NIfTI

def _nifti_3d_shape(shape: Sequence[int], what: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise CTLoadError(f"{what} is {len(shape)}-dimensional; a CT slice or volume needs 2 or 3 dimensions.")
    if len(shape) == 2:
        return shape[0], shape[1], 1
    if len(shape) > 3:
        if any(s != 1 for s in shape[3:]):
            raise CTLoadError(
                f"{what} is a {len(shape)}D image of size {'×'.join(map(str, shape))} (e.g. several time "
                "points or channels); only a single 2D or 3D CT volume is accepted."
            )
    return shape[0], shape[1], shape[2]


def _nifti_affine(img, what: str) -> tuple[np.ndarray, str]:
    try:
        return _repair_affine(np.asarray(img.affine, dtype=np.float64))
    except CTLoadError:
        base = np.asarray(img.header.get_base_affine(), dtype=np.float64)
        aff, _ = _repair_affine(base)
        return aff, "orientation in the header unusable: voxel sizes only, orientation assumed"


def _load_nifti(path: Path, what: str) -> CTVolume:
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise CTLoadError(f"{what} could not be read as NIfTI ({exc}); the file may be damaged.") from exc
    if not hasattr(img, "dataobj") or not hasattr(img, "affine"):
        raise CTLoadError(f"{what} is not a NIfTI image volume.")
    if img.get_data_dtype().fields is not None:
        raise CTLoadError(f"{what} is a colour (RGB) NIfTI; only greyscale CT volumes are accepted.")
    shape_xyz = _nifti_3d_shape(img.shape, what)
    affine, note = _nifti_affine(img, what)
    _check_display_size(_display_shape_xyz(shape_xyz, affine), what)
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape_xyz)
    except Exception as exc:
        raise CTLoadError(f"{what}: the image data could not be read ({exc}); the file may be truncated.") from exc
    notes = [note, _orientation_note(affine)]
    return _finish(data, affine, "nifti", "NIfTI volume", what, notes)


# --------------------------------------------------------------------------- plain images

def _image_to_hu(path: Path, what: str) -> np.ndarray:
    """A PNG/JPEG/BMP/TIFF → (Y, X) float32 HU with the documented grey-level mapping."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        img = Image.open(path)
    except UnidentifiedImageError as exc:
        raise CTLoadError(f"{what} is not a recognised file. Accepted inputs: {ACCEPTED_INPUTS}.") from exc
    except Exception as exc:
        raise CTLoadError(f"{what} could not be opened as an image ({exc}).") from exc
    with img:
        if img.format not in _IMAGE_FORMATS:
            raise CTLoadError(
                f"{what} is a {img.format} image; accepted image formats are PNG, JPEG, BMP and TIFF "
                f"(accepted inputs: {ACCEPTED_INPUTS})."
            )
        if getattr(img, "n_frames", 1) > 1 and img.format == "TIFF":
            raise CTLoadError(f"{what} is a multi-page TIFF; give one image per file, or the volume as DICOM or NIfTI.")
        width, height = img.size
        _check_display_size((width, height, 1), what)
        try:
            img.load()
            img = ImageOps.exif_transpose(img)  # show photos the way viewers show them
        except Exception as exc:
            raise CTLoadError(f"{what}: the image data could not be decoded ({exc}); the file may be truncated.") from exc
        mode = img.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            return np.asarray(img, dtype=np.float32) + np.float32(IMAGE_16BIT_OFFSET_HU)
        if mode == "I":
            v = np.asarray(img)
            if v.size and (v.min() < 0 or v.max() > 65535):
                raise CTLoadError(f"{what} holds 32-bit integer values outside 0…65535; expected an 8- or 16-bit greyscale image.")
            return v.astype(np.float32) + np.float32(IMAGE_16BIT_OFFSET_HU)
        if mode == "F":
            return np.asarray(img, dtype=np.float32)  # floating-point TIFF: taken as HU directly
        if mode in ("1", "L", "LA", "La"):
            grey = np.asarray(img.convert("L"), dtype=np.float32)
        else:
            rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
            spread = rgb.max(axis=2) - rgb.min(axis=2)
            if spread.size and np.mean(spread > COLOUR_SPREAD_LEVELS) > COLOUR_PIXEL_FRACTION:
                raise CTLoadError(
                    f"{what} looks like a colour photo (its red, green and blue channels differ); "
                    "a CT screenshot must be greyscale. Accepted inputs: " + ACCEPTED_INPUTS + "."
                )
            grey = rgb.mean(axis=2, dtype=np.float32)
    return np.float32(IMAGE_8BIT_LOWER_HU) + grey * np.float32(IMAGE_8BIT_WIDTH_HU / 255.0)


def _load_image(path: Path, what: str) -> CTVolume:
    hu_yx = _image_to_hu(path, what)
    # Images have no geometry: 1 mm voxels, already in display orientation (L, P, S).
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    data_xyz = hu_yx.T[:, :, None]
    return _finish(data_xyz, affine, "image", "image", what, ["no geometry in an image: 1 mm pixels assumed"])


# --------------------------------------------------------------------------- zip and folders

def _format_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _extract_zip_safely(path: Path, dest: Path, what: str) -> None:
    """Extract ``path`` into ``dest``, refusing path traversal, links, encryption and zip bombs."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CTLoadError(f"{what} is not a readable .zip archive ({exc}).") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise CTLoadError(f"{what} holds {len(infos)} files; at most {MAX_ZIP_MEMBERS} are accepted.")
        declared = sum(i.file_size for i in infos)
        if declared > MAX_ZIP_UNCOMPRESSED_BYTES:
            raise CTLoadError(
                f"{what} would unpack to {_format_bytes(declared)}; at most "
                f"{_format_bytes(MAX_ZIP_UNCOMPRESSED_BYTES)} are accepted (protection against zip bombs)."
            )
        root = dest.resolve()
        targets = []
        for info in infos:
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
                raise CTLoadError(
                    f"{what} contains an unsafe file name ({info.filename!r}) that points outside the "
                    "archive; it was not extracted. Re-create the .zip from the DICOM folder."
                )
            target = (root / name).resolve()
            if root not in target.parents and target != root:
                raise CTLoadError(f"{what} contains an unsafe file name ({info.filename!r}); it was not extracted.")
            if info.flag_bits & 0x1:
                raise CTLoadError(f"{what} is password-protected; give an unencrypted .zip.")
            is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
            if not info.is_dir() and not is_link:
                targets.append((info, target))
        written = 0
        for info, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > MAX_ZIP_UNCOMPRESSED_BYTES:  # declared sizes can lie
                            raise CTLoadError(
                                f"{what} would unpack to more than {_format_bytes(MAX_ZIP_UNCOMPRESSED_BYTES)}; "
                                "refused (protection against zip bombs)."
                            )
                        dst.write(chunk)
            except CTLoadError:
                raise
            except Exception as exc:
                raise CTLoadError(f"{what}: member {info.filename!r} could not be extracted ({exc}); the archive may be damaged.") from exc


def _files_under(folder: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        files += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    return files


def _load_folder(folder: Path, what: str, notes: list[str]) -> CTVolume:
    files = [f for f in _files_under(folder) if f.is_file() and f.stat().st_size > 0]
    if not files:
        raise CTLoadError(f"{what} contains no files. Accepted inputs: {ACCEPTED_INPUTS}.")
    dicom = [(p, ds) for p in files if (ds := _read_dicom_lazy(p)) is not None]
    if dicom:
        skipped = len(files) - len(dicom)
        extra = [f"{skipped} file(s) that are not DICOM images were ignored"] if skipped else []
        return _load_dicom_datasets(dicom, what, notes + extra)
    niftis = [p for p in files if _has_nifti_suffix(p) or _looks_like_nifti(p)]
    if len(niftis) == 1:
        return _load_nifti(niftis[0], f"{what} ({niftis[0].name})")
    if len(niftis) > 1:
        raise CTLoadError(f"{what} contains {len(niftis)} NIfTI files; give one NIfTI volume at a time.")
    raise CTLoadError(f"{what} contains no DICOM or NIfTI files ({len(files)} other files). Accepted inputs: {ACCEPTED_INPUTS}.")


def _load_zip(path: Path, what: str) -> CTVolume:
    tmp = Path(tempfile.mkdtemp(prefix="iunet_zip_"))
    try:
        _extract_zip_safely(path, tmp, what)
        return _load_folder(tmp, what, [])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- public API

def _check_file(path: Path) -> None:
    if not path.exists():
        raise CTLoadError(f"The file or folder {str(path)!r} does not exist.")
    if path.is_file() and path.stat().st_size == 0:
        raise CTLoadError(f"The file '{path.name}' is empty (0 bytes); the upload or copy may have failed.")


def _load_one(path: Path) -> CTVolume:
    _check_file(path)
    what = f"'{path.name}'"
    if path.is_dir():
        return _load_folder(path, f"The folder {what}", [])
    if _has_nifti_suffix(path) or _looks_like_nifti(path):
        return _load_nifti(path, f"The NIfTI file {what}")
    if _is_dicom_preamble(path):
        return _load_dicom_paths([path], f"The DICOM file {what}", [])
    if path.name.lower().endswith(".zip") or zipfile.is_zipfile(path):
        return _load_zip(path, f"The archive {what}")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as probe:
            is_image = probe.format is not None
    except (UnidentifiedImageError, OSError, ValueError):
        is_image = False
    except Exception:  # Pillow plugins raise assorted types on garbage
        is_image = False
    if is_image:
        return _load_image(path, f"The image {what}")
    if _read_dicom_lazy(path) is not None:  # DICOM without the "DICM" preamble
        return _load_dicom_paths([path], f"The DICOM file {what}", [])
    raise CTLoadError(f"The file {what} is not a recognised CT file. Accepted inputs: {ACCEPTED_INPUTS}.")


def _load_many(paths: list[Path]) -> CTVolume:
    for p in paths:
        _check_file(p)
        if p.is_dir():
            raise CTLoadError(f"'{p.name}' is a folder; give either one folder or several DICOM files, not both.")
    what = f"The {len(paths)} files given"
    for p in paths:
        if _has_nifti_suffix(p) or p.name.lower().endswith(".zip"):
            raise CTLoadError(
                f"{what} include '{p.name}'; several files are read as one DICOM series. "
                "Give NIfTI volumes and .zip archives one at a time."
            )
    return _load_dicom_paths(paths, what, [])


def load_ct(source: PathLike | Sequence[PathLike]) -> CTVolume:
    """Load a CT from a file, folder, .zip or list of DICOM files into display orientation.

    Args:
        source: one path (str or Path) — a DICOM file (with or without extension), a folder or
            ``.zip`` holding a DICOM series, a NIfTI ``.nii``/``.nii.gz`` (2D, 3D, or 4D with a
            last axis of size 1), or a greyscale PNG/JPEG/BMP/TIFF — or a sequence of paths to the
            DICOM files of one series.

    Returns:
        CTVolume with ``hu`` float32 (Z, Y, X) in HU, display orientation (anterior at the top,
        patient's left on the image's right, slices inferior → superior).

    Grey-level images carry no HU: 8-bit values v map to ``HU = -160 + v * 400 / 255`` (a
    screenshot in the level 40 / width 400 window comes back close to its HU), 16-bit values to
    ``HU = v - 1024``, 32-bit float TIFF values are taken as HU; spacing is 1 mm. Several DICOM
    series in one input: the one with most images is loaded and ``description`` says so.

    Raises:
        CTLoadError: for every input that cannot be read as a CT (missing, empty, unknown format,
            damaged DICOM, 4D NIfTI, slices above MAX_SLICE_PX, NaN/inf values, …).
    """
    try:
        if isinstance(source, (str, os.PathLike)):
            return _load_one(Path(source))
        try:
            paths = [Path(p) for p in source]
        except TypeError as exc:
            raise CTLoadError(f"Expected a file path or a list of file paths, got {type(source).__name__}.") from exc
        if not paths:
            raise CTLoadError(f"No file given. Accepted inputs: {ACCEPTED_INPUTS}.")
        if len(paths) == 1:
            return _load_one(paths[0])
        return _load_many(paths)
    except CTLoadError:
        raise
    except MemoryError as exc:
        raise CTLoadError("The CT is too large to fit in memory.") from exc
    except Exception as exc:  # never let a reader library's exception reach the user raw
        raise CTLoadError(f"The input could not be read as a CT ({type(exc).__name__}: {exc}).") from exc


def _as_label_uint8(mask: np.ndarray) -> np.ndarray:
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    if np.issubdtype(mask.dtype, np.floating):
        if not np.isfinite(mask).all() or not np.array_equal(mask, np.round(mask)):
            raise ValueError("the mask must hold integer labels 0…255; threshold probabilities before saving")
    elif not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"the mask must be boolean or integer labels, got dtype {mask.dtype}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"mask labels must lie in 0…255, got {mask.min()}…{mask.max()}")
    return mask.astype(np.uint8)


def save_mask_nifti(volume: CTVolume, mask_zyx: np.ndarray, path: PathLike, *, slice_index: int | None = None) -> Path:
    """Write a uint8 label NIfTI on the input's own voxel grid and affine.

    The file overlays voxel-for-voxel on the original NIfTI, or on a DICOM series in its physical
    (scanner) space; for an image input the grid is (X, Y, 1).

    Args:
        volume: the CTVolume the mask was drawn on.
        mask_zyx: bool/integer labels 0–255, either (Z, Y, X) like ``volume.hu`` or one (Y, X)
            slice together with ``slice_index`` (the slice is placed in an otherwise empty volume).
        path: output file; ".nii.gz" is appended when it ends neither in ".nii" nor ".nii.gz".
        slice_index: display slice (0 … Z-1) of a 2D mask.

    Returns:
        the Path written.
    """
    mask = np.asarray(mask_zyx)
    shape = volume.hu.shape
    if mask.ndim == 2:
        if slice_index is None:
            raise ValueError("a 2D (Y, X) mask needs slice_index= to say which slice it belongs to")
        if isinstance(slice_index, bool) or not isinstance(slice_index, (int, np.integer)):
            raise ValueError(f"slice_index must be an integer, got {slice_index!r}")
        if not 0 <= int(slice_index) < shape[0]:
            raise ValueError(f"slice_index {slice_index} is outside the volume's slices 0…{shape[0] - 1}")
        if mask.shape != shape[1:]:
            raise ValueError(f"the 2D mask is {mask.shape}, expected a slice of (Y, X) = {shape[1:]}")
        full = np.zeros(shape, dtype=np.uint8)
        full[int(slice_index)] = _as_label_uint8(mask)
    elif mask.ndim == 3:
        if slice_index is not None:
            raise ValueError("slice_index is only for a 2D (Y, X) mask; this mask is 3D")
        if mask.shape != shape:
            raise ValueError(f"the mask is {mask.shape}, expected the volume's (Z, Y, X) = {shape}")
        full = _as_label_uint8(mask)
    else:
        raise ValueError(f"the mask must be (Z, Y, X) or (Y, X), got shape {mask.shape}")

    path = Path(path)
    if not (path.name.lower().endswith(".nii") or path.name.lower().endswith(".nii.gz")):
        path = path.with_name(path.name + ".nii.gz")
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.array(volume.source_affine_ras, dtype=np.float64)
    img = nib.Nifti1Image(volume.to_source_xyz(full), affine)
    img.header.set_data_dtype(np.uint8)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def read_nifti_mask(path: PathLike, like: CTVolume) -> np.ndarray:
    """Load a label NIfTI (e.g. an MSD ``labelsTr`` file) in the display (Z, Y, X) of ``like``.

    The label must share the image's voxel grid (same shape and orientation as the file ``like``
    was loaded from). Returns uint8 labels when they fit 0…255, else int32.

    Raises:
        CTLoadError: unreadable file, non-integer labels, or a grid that differs from the image's.
    """
    path = Path(path)
    what = f"The label file '{path.name}'"
    _check_file(path)
    try:
        img = nib.load(str(path))
        shape_xyz = _nifti_3d_shape(img.shape, what)
        data = np.asarray(img.dataobj).reshape(shape_xyz)
        affine, _ = _nifti_affine(img, what)
    except CTLoadError:
        raise
    except Exception as exc:
        raise CTLoadError(f"{what} could not be read as NIfTI ({type(exc).__name__}: {exc}).") from exc
    if shape_xyz != like.source_shape_xyz:
        raise CTLoadError(
            f"{what} has a grid of {shape_xyz} voxels but the image has {like.source_shape_xyz}; "
            "the label does not belong to this image."
        )
    if not np.array_equal(nio.io_orientation(affine), nio.io_orientation(like.source_affine_ras)):
        raise CTLoadError(
            f"{what} is stored in orientation {''.join(nio.aff2axcodes(affine))} but the image in "
            f"{''.join(nio.aff2axcodes(like.source_affine_ras))}; the label does not overlay the image."
        )
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all() or not np.array_equal(data, np.round(data)):
            raise CTLoadError(f"{what} holds non-integer values; expected integer labels (0 = background).")
    elif not np.issubdtype(data.dtype, np.integer) and data.dtype != bool:
        raise CTLoadError(f"{what} has data type {data.dtype}; expected integer labels.")
    dtype = np.uint8 if data.size == 0 or (data.min() >= 0 and data.max() <= 255) else np.int32
    back = nio.ornt_transform(nio.io_orientation(like.source_affine_ras), nio.axcodes2ornt(DISPLAY_AXCODES))
    disp = nio.apply_orientation(data, back).transpose(2, 1, 0)
    return np.ascontiguousarray(disp, dtype=dtype)
