"""Masks in and out: label NIfTI on the input's own grid, PNG of one slice, label files read back."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from .load import check_file
from .nifti import load_nifti_image, nifti_affine
from .volume import CTLoadError, CTVolume, PathLike


def binary_mask(mask: np.ndarray, what: str) -> np.ndarray:
    """``mask`` as bool, after checking that it is one: bool, or numbers that are all 0 or 1
    (a probability map would otherwise become a mask of everything above 0). ValueError naming
    ``what`` otherwise."""
    m = np.asarray(mask)
    if m.dtype == bool:
        return m
    if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
        raise ValueError(f"{what} must be boolean (or 0 / 1), got dtype {m.dtype}")
    if m.size and not np.isin(m, (0, 1)).all():
        raise ValueError(f"{what} must be boolean (or 0 / 1); it holds other values "
                         f"({m.min()}…{m.max()}): threshold probabilities first")
    return m.astype(bool)


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


def save_mask_png(mask_yx: np.ndarray, path: PathLike) -> Path:
    """Write one (Y, X) mask as an 8-bit greyscale PNG (0 background, 255 foreground), display orientation.

    ``mask_yx``: bool or integer labels 0–255 (any label > 0 is foreground); probabilities are
    refused (ValueError), as by :func:`save_mask_nifti`: threshold them first."""
    from PIL import Image

    mask = np.asarray(mask_yx)
    if mask.ndim != 2:
        raise ValueError(f"a PNG holds one (Y, X) slice, got a mask of shape {mask.shape}")
    labels = _as_label_uint8(mask)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(labels > 0, 255, 0).astype(np.uint8), mode="L").save(path)
    return path


def read_nifti_mask(path: PathLike, like: CTVolume) -> np.ndarray:
    """Load a label NIfTI (e.g. an MSD ``labelsTr`` file) in the display (Z, Y, X) of ``like``.

    The label must share the image's voxel grid (same shape and orientation as the file ``like``
    was loaded from). Returns uint8 labels when they fit 0…255, else int32.

    Raises:
        CTLoadError: unreadable or damaged file, non-integer labels, or a grid that differs from the image's.
    """
    if not isinstance(like, CTVolume):
        raise ValueError(f"like must be the CTVolume the label belongs to (from load_ct), got {type(like).__name__}")
    path = Path(path)
    what = f"The label file '{path.name}'"
    check_file(path)
    try:
        img, shape_xyz = load_nifti_image(path, what)
        data = np.asarray(img.dataobj).reshape(shape_xyz)
        affine, _ = nifti_affine(img, what)
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
    return np.ascontiguousarray(like.from_source_xyz(data), dtype=dtype)
