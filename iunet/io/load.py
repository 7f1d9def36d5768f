"""``load_ct``: one entry point for every input kind (file, folder, .zip, list of DICOM files)."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Sequence

from .archives import load_folder, load_zip
from .dicom import is_dicom_preamble, load_dicom_paths, read_dicom_lazy
from .images import is_image_file, load_image
from .formats import volume_file_reader
from .nifti import has_nifti_suffix
from .volume import ACCEPTED_INPUTS, CTLoadError, CTVolume, PathLike, without_paths


def check_file(path: Path) -> None:
    """CTLoadError when ``path`` is missing or an empty file."""
    if not path.exists():
        raise CTLoadError(f"The file or folder '{path.name}' does not exist.")
    if path.is_file() and path.stat().st_size == 0:
        raise CTLoadError(f"The file '{path.name}' is empty (0 bytes); the upload or copy may have failed.")


def _load_one(path: Path, max_voxels: int | None) -> CTVolume:
    check_file(path)
    what = f"'{path.name}'"
    if path.is_dir():
        return load_folder(path, f"The folder {what}", [], max_voxels)
    if (found := volume_file_reader(path)) is not None:
        reader, name = found
        return reader(path, f"The {name} {what}", max_voxels, ())
    if is_dicom_preamble(path):
        return load_dicom_paths([path], f"The DICOM file {what}", [], max_voxels)
    if path.name.lower().endswith(".zip") or zipfile.is_zipfile(path):
        return load_zip(path, f"The archive {what}", max_voxels)
    if is_image_file(path):
        return load_image(path, f"The image {what}", max_voxels)
    if read_dicom_lazy(path) is not None:  # DICOM without the "DICM" preamble
        return load_dicom_paths([path], f"The DICOM file {what}", [], max_voxels)
    raise CTLoadError(f"The file {what} is not a recognised CT file. Accepted inputs: {ACCEPTED_INPUTS}.")


def _load_many(paths: list[Path], max_voxels: int | None) -> CTVolume:
    for p in paths:
        check_file(p)
        if p.is_dir():
            raise CTLoadError(f"'{p.name}' is a folder; give either one folder or several DICOM files, not both.")
    headers = [(p, r) for p in paths if (r := volume_file_reader(p)) is not None and r[1] != "NIfTI file"]
    if len(headers) == 1:  # an NRRD or MetaImage header given with its data file
        (p, (reader, name)), = headers
        return reader(p, f"The {name} '{p.name}'", max_voxels, paths)
    if len(headers) > 1:
        raise CTLoadError(
            f"{len(headers)} NRRD / MetaImage files were given together ({', '.join(p.name for p, _ in headers[:4])}); "
            "give one volume at a time (a detached header together with its data file)."
        )
    what = f"The series of {len(paths)} files given"  # (read as one DICOM series)
    for p in paths:
        if has_nifti_suffix(p) or p.name.lower().endswith(".zip"):
            raise CTLoadError(
                f"{what} includes '{p.name}'; several files are read as one DICOM series. "
                "Give NIfTI volumes and .zip archives one at a time."
            )
        if not is_dicom_preamble(p) and is_image_file(p):
            raise CTLoadError(
                f"{what} includes the picture '{p.name}'; several files are read as one DICOM series. "
                "Give PNG or JPEG images one at a time."
            )
    return load_dicom_paths(paths, what, [], max_voxels)


def _load(source: PathLike | Sequence[PathLike], max_voxels: int | None) -> CTVolume:
    if isinstance(source, (str, os.PathLike)):
        return _load_one(Path(source), max_voxels)
    try:
        paths = [Path(p) for p in source]
    except TypeError as exc:
        raise CTLoadError(f"Expected a file path or a list of file paths, got {type(source).__name__}.") from exc
    if not paths:
        raise CTLoadError(f"No file given. Accepted inputs: {ACCEPTED_INPUTS}.")
    if len(paths) == 1:
        return _load_one(paths[0], max_voxels)
    return _load_many(paths, max_voxels)


def load_ct(source: PathLike | Sequence[PathLike], *, max_voxels: int | None = None) -> CTVolume:
    """Load a CT from a file, folder, .zip or list of DICOM files into display orientation.

    Args:
        source: one path (str or Path) — a DICOM file (with or without extension), a folder or
            ``.zip`` holding a DICOM series or one volume file, a NIfTI ``.nii``/``.nii.gz`` (2D,
            3D, or 4D with a last axis of size 1), an NRRD ``.nrrd`` (or ``.nhdr`` with its data
            file beside it), a MetaImage ``.mha`` (or ``.mhd`` with its data file beside it), or a
            greyscale PNG/JPEG/BMP/TIFF — or a sequence of paths: the DICOM files of one series,
            or an ``.nhdr`` / ``.mhd`` header and its data file.
        max_voxels: refuse inputs with more voxels than this (None: no limit besides the slice
            size). It is checked from the headers, before any image data is decoded.

    Returns:
        CTVolume with ``hu`` float32 (Z, Y, X) in HU, display orientation (anterior at the top,
        patient's left on the image's right, slices inferior → superior).

    Grey-level images carry no HU: 8-bit values v map to ``HU = -160 + v * 400 / 255`` (a
    screenshot in the level 40 / width 400 window comes back close to its HU), 16-bit values to
    ``HU = v - 1024``, 32-bit float TIFF values are taken as HU; spacing is 1 mm. Several DICOM
    series in one input: the one with most images is loaded and ``description`` says so. A
    ``.nii.gz`` is decompressed completely and its gzip checksum verified.

    Raises:
        CTLoadError: for every input that cannot be read as a CT (missing, empty, unknown format,
            damaged DICOM, damaged gzip, 4D NIfTI, slices above MAX_SLICE_PX, more than
            ``max_voxels``, NaN/inf values, …). Its message names files, never server folders.
    """
    try:
        return _load(source, max_voxels)
    except CTLoadError as exc:
        exc.args = (without_paths(str(exc)),)  # same error type (e.g. CTTooLargeError), paths removed
        raise
    except MemoryError as exc:
        raise CTLoadError("The CT is too large to fit in memory.") from exc
    except Exception as exc:  # never let a reader library's exception reach the user raw
        raise CTLoadError(without_paths(f"The input could not be read as a CT ({type(exc).__name__}: {exc}).")) from exc
