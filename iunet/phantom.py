"""A synthetic CT volume for offline demos and tests: organ-like blobs rendered by iunet.data.

Not real anatomy and loudly labelled as such wherever it is shown; it lets the app and the
tests exercise volumes (slices, propagation, 3D export) without any data on the machine.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

PHANTOM_SPACING_MM = (2.5, 0.8, 0.8)  # (z, y, x) voxel size of the phantom


def phantom_volume(seed: int = 7, grid_px: int = 256, n_slices: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Organ-like blobs that shrink towards the first and last slice, rendered as CT.

    Returns (hu float32 (Z, Y, X), labels int16 (Z, Y, X)) with Z = ``n_slices`` and
    Y = X = ``grid_px``; voxel size ``PHANTOM_SPACING_MM``. Each slice is rendered with the same
    seed and body outline, so an organ keeps its HU and texture from slice to slice.
    """
    from .data import LabelSlice, render_ct, synthetic_labels

    rng = np.random.default_rng(seed)
    labels2d = synthetic_labels(grid_px, rng).labels
    yy, xx = np.mgrid[:grid_px, :grid_px]
    body = ((yy - 0.5 * grid_px) / (0.36 * grid_px)) ** 2 + ((xx - 0.5 * grid_px) / (0.46 * grid_px)) ** 2 <= 1.0
    labels = np.zeros((n_slices, grid_px, grid_px), np.int16)
    hu = np.zeros(labels.shape, np.float32)
    mid = (n_slices - 1) / 2.0
    depths = {int(k): ndimage.distance_transform_edt(labels2d == k) for k in np.unique(labels2d)[1:]}
    for z in range(n_slices):
        shrink = (abs(z - mid) / (mid + 1.0)) ** 2  # 0 in the middle → ~0.8 at the ends
        for k, depth in depths.items():
            labels[z][depth > shrink * depth.max()] = k
        sl = LabelSlice(labels[z], 512, body=body | (labels2d > 0), source="phantom")
        hu[z] = render_ct(sl, np.random.default_rng(seed + 1))
    return hu, labels


def write_phantom_nifti(path: str | Path, seed: int = 7) -> Path:
    """Write :func:`phantom_volume` as an int16 NIfTI in display orientation (voxel axes L, P, S)."""
    import nibabel as nib

    hu, _ = phantom_volume(seed)
    sz, sy, sx = PHANTOM_SPACING_MM
    affine = np.diag([-sx, -sy, sz, 1.0])  # x → patient left, y → posterior, z → superior
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.round(hu).astype(np.int16).transpose(2, 1, 0), affine), str(path))
    return path
