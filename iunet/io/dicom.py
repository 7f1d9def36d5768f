"""DICOM reading: single files, series (several files), multi-frame files → :class:`CTVolume`.

Headers are read first (pixel data deferred), the slices sorted along the slice normal and the
size checked; only then is the pixel data decoded, one file at a time, and dropped from the
dataset afterwards (the volume keeps the headers, which is all DICOM-SEG export needs).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .volume import (
    ACCEPTED_INPUTS,
    LPS_TO_RAS,
    CTLoadError,
    CTVolume,
    SliceSource,
    check_display_size,
    display_shape_xyz,
    finish_volume,
    orientation_note,
    source_to_display_ornt,
)


def read_head(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of a file."""
    with open(path, "rb") as f:
        return f.read(n)


def is_dicom_preamble(path: Path) -> bool:
    """True when the file has DICOM's 128-byte preamble and "DICM" marker."""
    return read_head(path, 132)[128:132] == b"DICM"


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


def read_dicom_lazy(path: Path):
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
            if is_dicom_preamble(path):
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
            ds = pydicom.dcmread(str(path), force=not is_dicom_preamble(path))
        except Exception as exc:
            raise CTLoadError(f"DICOM file {path.name} could not be read ({exc}); it may be truncated or damaged.") from exc
    _ensure_transfer_syntax(ds)
    return ds


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


def float_or(value, default):
    """``float(value)`` when it is a finite number, else ``default``."""
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
        thickness_mm=float_or(ds.get("SpacingBetweenSlices"), None) or float_or(ds.get("SliceThickness"), None),
        instance=int(float_or(ds.get("InstanceNumber"), 0)),
        slope=float_or(ds.get("RescaleSlope"), 1.0) or 1.0,
        intercept=float_or(ds.get("RescaleIntercept"), 0.0),
        rows=int(ds.get("Rows") or 0),
        cols=int(ds.get("Columns") or 0),
    )


def _multi_frame_slices(ds, path: Path) -> list[_Slice]:
    """Frames of an enhanced (multi-frame) DICOM with their per-frame geometry when present."""
    n_frames = int(float_or(ds.get("NumberOfFrames"), 1))
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
        thick = float_or(lookup(item, "PixelMeasuresSequence", "SpacingBetweenSlices"), None) or float_or(
            lookup(item, "PixelMeasuresSequence", "SliceThickness"), None
        )
        slope = float_or(lookup(item, "PixelValueTransformationSequence", "RescaleSlope"), None)
        intercept = float_or(lookup(item, "PixelValueTransformationSequence", "RescaleIntercept"), None)
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
    unique, seen = [], set()
    for s in slices:  # the same image given twice (a file uploaded twice): one copy is enough
        uid = str(s.ds.get("SOPInstanceUID") or "") if s.frame is None else ""
        if uid and uid in seen:
            continue
        seen.add(uid)
        unique.append(s)
    if len(unique) < len(slices):
        n = len(slices) - len(unique)
        notes.append(f"{n} duplicate{'s' if n > 1 else ''} of the same image{'s' if n > 1 else ''} left out")
        slices = unique
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


def _pixel_error(ds, name: str, exc: Exception) -> CTLoadError:
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    ts_name = getattr(tsyntax, "name", str(tsyntax)) if tsyntax is not None else "unknown"
    hint = (
        "the file may be truncated or damaged"
        if tsyntax is None or not getattr(tsyntax, "is_compressed", False)
        else f"it is compressed ({ts_name}) in a way that cannot be decoded here; export it uncompressed"
    )
    return CTLoadError(f"Could not read the pixel data (image) of DICOM file {name}: {hint}. (Detail: {exc})")


def _decode_slices(slices: list[_Slice]) -> np.ndarray:
    """Read each file in full, decode its pixel data and apply the rescale: (n, rows, cols) float32 HU.

    Afterwards every ``slices[i].ds`` is the complete header of its file without the pixel data
    (so the volume holds the HU once, not twice, and never reads a deleted temporary file).
    """
    first = slices[0]
    out = np.empty((len(slices), first.rows, first.cols), dtype=np.float32)
    headers: dict[int, object] = {}  # id(lazy dataset) → header-only full dataset
    frames_cache: dict[int, np.ndarray] = {}
    for n, s in enumerate(slices):
        name = s.path.name
        if int(s.ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise CTLoadError(
                f"DICOM file {name} holds a colour image (e.g. a screenshot or secondary capture); "
                "only greyscale CT images are accepted."
            )
        key = id(s.ds)
        if key in headers:
            arr = frames_cache[key][s.frame]
        else:
            full = _read_dicom_full(s.path)
            try:
                pixels = full.pixel_array
            except Exception as exc:  # pydicom raises many types for damaged/unsupported data
                raise _pixel_error(full, name, exc) from exc
            if s.frame is not None:
                frames_cache[key] = pixels if pixels.ndim == 3 else pixels[None]
                arr = frames_cache[key][s.frame]
            else:
                arr = pixels
            del full.PixelData  # the HU go into the volume; keep only the header
            headers[key] = full
        if arr.shape != (first.rows, first.cols):
            raise CTLoadError(
                f"DICOM file {name}: the image is {arr.shape} pixels, expected {first.rows}×{first.cols} "
                "from its header; the file may be damaged."
            )
        out[n] = arr.astype(np.float32) * np.float32(s.slope) + np.float32(s.intercept)
    for s in slices:
        s.ds = headers[id(s.ds)]
    return out


def _modality_note(datasets: Sequence) -> str:
    modalities = sorted({str(ds.get("Modality", "")).strip() for ds in datasets} - {""})
    other = [m for m in modalities if m != "CT"]
    return f"modality {'/'.join(other)}: values are not Hounsfield units" if other else ""


def load_dicom_datasets(
    items: list[tuple[Path, object]], what: str, notes: list[str], max_voxels: int | None = None
) -> CTVolume:
    """Build a volume from (path, lazily read dataset) pairs, picking the largest series.

    The size (slices × rows × columns) is checked against ``max_voxels`` before any pixel data
    is decoded.
    """
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
    if len(groups) > 1:
        name = str(chosen[0][1].get("SeriesDescription", "") or "").strip()
        label = f" '{name}'" if name else ""
        notes = notes + [
            f"{len(groups)} series found, the largest{label} was loaded "
            f"({len(chosen)} of {len(with_pixels)} image files)"
        ]

    multi = [(p, ds) for p, ds in chosen if int(float_or(ds.get("NumberOfFrames"), 1)) > 1]
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
    affine_ras = LPS_TO_RAS @ affine_lps
    shape_xyz = (slices[0].cols, slices[0].rows, len(slices))
    check_display_size(display_shape_xyz(shape_xyz, affine_ras), what, max_voxels)
    stack = _decode_slices(slices)  # (k, j, i)
    sources = tuple(SliceSource(s.ds, s.frame, s.path.name) for s in slices)
    datasets = [s.ds for s in slices] if not multi else [slices[0].ds]

    ornt = source_to_display_ornt(affine_ras)
    if not multi and int(ornt[2, 0]) == 2 and ornt[2, 1] < 0:
        datasets = datasets[::-1]  # display slice order is the reverse of the sorted order
    notes = notes + geo_notes + [orientation_note(affine_ras), _modality_note(datasets)]
    return finish_volume(stack.transpose(2, 1, 0), affine_ras, "dicom", label, what, notes, tuple(datasets), sources)


def load_dicom_paths(paths: Sequence[Path], what: str, notes: list[str], max_voxels: int | None = None) -> CTVolume:
    """Read DICOM files (one series, or the largest of several) into a volume."""
    items, skipped = [], 0
    for p in paths:
        ds = read_dicom_lazy(p)
        if ds is None:
            skipped += 1
        else:
            items.append((p, ds))
    if not items:
        raise CTLoadError(f"{what}: no DICOM image files found. Accepted inputs: {ACCEPTED_INPUTS}.")
    if skipped:
        notes = notes + [f"{skipped} file(s) that are not DICOM images were ignored"]
    return load_dicom_datasets(items, what, notes, max_voxels)
