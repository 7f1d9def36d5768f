"""NIfTI reading (.nii, .nii.gz; NIfTI-1 and NIfTI-2, single file) → :class:`CTVolume`.

The header is read and checked (dimensions, slice size, number of voxels) before any image
data is decoded, so an oversized file is refused at the cost of a few hundred bytes. A gzip
file is then decompressed completely and its CRC-32 and length are verified (a damaged
``.nii.gz`` is refused instead of being shown as noise); the image is built from those bytes.
"""
from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from .rawdata import inflate
from .volume import CTLoadError, CTVolume, check_display_size, display_shape_xyz, finish_volume, format_bytes, orientation_note, repair_affine

_NIFTI1_MAGIC = (b"n+1\x00",)
_NIFTI2_MAGIC = (b"n+2\x00",)
_PAIR_MAGIC = (b"ni1\x00", b"ni2\x00")  # header of a two-file .hdr/.img pair
_HEADER_BYTES = 540  # NIfTI-2 header; NIfTI-1 uses the first 348


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _head(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of the file's content (decompressed for gzip); b"" when unreadable."""
    try:
        if is_gzip(path):
            with gzip.open(path, "rb") as f:
                return f.read(n)
        with open(path, "rb") as f:
            return f.read(n)
    except (OSError, EOFError, zlib.error):
        return b""


def looks_like_nifti(path: Path) -> bool:
    """True when the (decompressed) content starts with a NIfTI-1 or NIfTI-2 header."""
    head = _head(path, _HEADER_BYTES)
    return head[344:348] in _NIFTI1_MAGIC + _PAIR_MAGIC[:1] or head[4:8] in _NIFTI2_MAGIC + _PAIR_MAGIC[1:]


def has_nifti_suffix(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def nifti_3d_shape(shape: Sequence[int], what: str) -> tuple[int, int, int]:
    """(i, j, k) of a 2D, 3D or singleton-4D+ NIfTI shape; CTLoadError for anything else."""
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


def nifti_affine(img_or_header, what: str) -> tuple[np.ndarray, str]:
    """The voxel → RAS affine of an image or header, repaired when degenerate; (affine, note)."""
    header = getattr(img_or_header, "header", img_or_header)
    affine = img_or_header.affine if hasattr(img_or_header, "affine") else header.get_best_affine()
    try:
        return repair_affine(np.asarray(affine, dtype=np.float64))
    except CTLoadError:
        aff, _ = repair_affine(np.asarray(header.get_base_affine(), dtype=np.float64))
        return aff, "orientation in the header unusable: voxel sizes only, orientation assumed"


_MAX_EXTENSION_BYTES = 16 << 20  # header extensions are read up to this size


def read_header(path: Path, what: str):
    """Parse the NIfTI header (the first bytes only). Returns (header, image class)."""
    head = _head(path, _HEADER_BYTES)
    if len(head) >= 348 and head[344:348] in _NIFTI1_MAGIC:
        header_class, image_class = nib.Nifti1Header, nib.Nifti1Image
    elif len(head) >= _HEADER_BYTES and head[4:8] in _NIFTI2_MAGIC:
        header_class, image_class = nib.Nifti2Header, nib.Nifti2Image
    elif len(head) >= 348 and (head[344:348] in _PAIR_MAGIC or head[4:8] in _PAIR_MAGIC):
        raise CTLoadError(f"{what} is the header of a two-file NIfTI (.hdr/.img); convert it to one .nii or .nii.gz file.")
    else:
        kind = "a gzip file" if is_gzip(path) else "a file"
        raise CTLoadError(f"{what} is {kind} without a NIfTI header; it is not a NIfTI volume (or it is damaged).")
    try:
        size = _HEADER_BYTES if header_class is nib.Nifti2Header else 348
        offset = int(header_class(binaryblock=head[:size], check=False).get_data_offset())
        if offset > len(head):  # header extensions (e.g. TotalSegmentator's label names) follow the header
            head = _head(path, min(offset, _MAX_EXTENSION_BYTES))
        header = header_class.from_fileobj(io.BytesIO(head))
    except Exception as exc:
        raise CTLoadError(f"{what} has a damaged NIfTI header ({type(exc).__name__}: {exc}).") from exc
    return header, image_class


def _expected_bytes(header) -> int:
    shape = header.get_data_shape()
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 0
    return int(header.get_data_offset()) + n * header.get_data_dtype().itemsize


def gunzip_verified(path: Path, what: str, max_bytes: int) -> bytes:
    """Decompress a whole gzip file, verifying every member's CRC-32 and length
    (:func:`.rawdata.inflate`; only zero bytes may follow the last member).

    Raises CTLoadError for a damaged stream (bad CRC, bad length, invalid data, truncated) or
    when the content is longer than ``max_bytes`` (a header that lies about its size).
    """
    return inflate(path.read_bytes(), "zlib", max_bytes, what, padding=b"\x00")


def load_nifti(path: Path, what: str, max_voxels: int | None = None) -> CTVolume:
    """Read a single-file NIfTI into a volume; the size is checked from the header first."""
    header, image_class = read_header(path, what)
    if header.get_data_dtype().fields is not None:
        raise CTLoadError(f"{what} is a colour (RGB) NIfTI; only greyscale CT volumes are accepted.")
    shape_xyz = nifti_3d_shape(header.get_data_shape(), what)
    affine, note = nifti_affine(header, what)
    check_display_size(display_shape_xyz(shape_xyz, affine), what, max_voxels)
    expected = _expected_bytes(header)
    if is_gzip(path):
        # NIfTI files may carry extensions after the header; allow a little slack over the image.
        raw = gunzip_verified(path, what, expected + (16 << 20))
    else:
        raw = path.read_bytes()
    if len(raw) < expected:
        raise CTLoadError(
            f"{what} is truncated: its header declares {format_bytes(expected)} but it holds "
            f"{format_bytes(len(raw))}; the upload or copy may have failed."
        )
    try:
        img = image_class.from_bytes(raw)
        data = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape_xyz)
    except Exception as exc:
        raise CTLoadError(f"{what}: the image data could not be read ({exc}); the file may be truncated.") from exc
    del raw
    notes = [note, orientation_note(affine)]
    return finish_volume(data, affine, "nifti", "NIfTI volume", what, notes)


def load_nifti_image(path: Path, what: str):
    """A nibabel image of a NIfTI file, gzip verified (for label files). Returns (image, shape (i, j, k))."""
    header, image_class = read_header(path, what)
    shape_xyz = nifti_3d_shape(header.get_data_shape(), what)
    expected = _expected_bytes(header)
    raw = gunzip_verified(path, what, expected + (16 << 20)) if is_gzip(path) else path.read_bytes()
    if len(raw) < expected:
        raise CTLoadError(f"{what} is truncated: its header declares {format_bytes(expected)} but it holds {format_bytes(len(raw))}.")
    return image_class.from_bytes(raw), shape_xyz
