"""The loaded CT (:class:`CTVolume`), its errors and the display orientation shared by all readers.

Every reader ends in the same place, a :class:`CTVolume` whose ``hu`` array is (Z, Y, X) in the
**display orientation** used by the whole project (radiological convention):

* rows (Y) run anterior → posterior, so the patient's front is at the top of the image;
* columns (X) run patient right → left, so the patient's left is on the image's right;
* slices (Z) run inferior → superior.

In nibabel's axis codes for the voxel index order (x, y, z) = (col, row, slice) this is
exactly ``("L", "P", "S")``. The reorientation is done in one place: each reader builds the
source file's voxel → RAS affine (DICOM's LPS geometry converted by flipping the first two world
axes) and :func:`finish_volume` reorients with ``nibabel.orientations``;
``CTVolume.to_source_xyz`` applies the inverse so that masks go back onto the original voxel grid.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np
from nibabel import orientations as nio

PathLike = Union[str, os.PathLike]

# Largest slice (rows or columns, in pixels) accepted: CT is 512², rarely 1024²; bigger inputs are
# photos or scans of film and would only exhaust memory.
MAX_SLICE_PX = 2048
# Display orientation as nibabel axis codes for index order (x, y, z).
DISPLAY_AXCODES = ("L", "P", "S")
# DICOM's patient coordinates are LPS; NIfTI/nibabel use RAS: flip the first two world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ACCEPTED_INPUTS = (
    "a DICOM file, a DICOM series (a folder, several files, or a .zip of them), "
    "a NIfTI volume (.nii or .nii.gz), an NRRD (.nrrd, or .nhdr with its data file), "
    "a MetaImage (.mha, or .mhd with its data file), or a greyscale PNG/JPEG/BMP/TIFF image"
)
# What ``CTVolume.kind`` may be: the reader that made it.
KINDS = ("dicom", "nifti", "nrrd", "metaimage", "image")


class CTLoadError(ValueError):
    """The input could not be read as a CT; the message says why and what is accepted."""


class CTTooLargeError(CTLoadError):
    """The input has more voxels than allowed (``n_voxels`` > ``max_voxels``); found from headers."""

    def __init__(self, message: str, n_voxels: int, max_voxels: int):
        super().__init__(message)
        self.n_voxels = int(n_voxels)
        self.max_voxels = int(max_voxels)


@dataclass(frozen=True, eq=False)
class SliceSource:
    """Where one source slice of a DICOM input came from.

    Attributes:
        dataset: the pydicom Dataset of the file, header only (its pixel data is dropped once
            decoded into ``CTVolume.hu``; DICOM-SEG export needs only the header).
        frame: index of the frame in a multi-frame dataset; None for a single-frame file.
        file_name: the file's name (no folder), for messages.
    """

    dataset: Any
    frame: int | None
    file_name: str


@dataclass(frozen=True, eq=False)
class CTVolume:
    """A CT volume in display orientation with the geometry needed to map results back.

    Attributes:
        hu: float32 (Z, Y, X) Hounsfield units in display orientation (see the module docstring).
        spacing_mm: (z, y, x) voxel size in mm of ``hu``.
        affine_ras: 4x4 float64; maps display voxel index (x, y, z) = (col, row, slice) to RAS mm.
        kind: "dicom", "nifti", "nrrd", "metaimage" or "image" (what the input was; ``KINDS``).
        source_affine_ras: 4x4 float64; the input's own voxel → RAS affine, index order (i, j, k)
            (for DICOM: (col, row, slice in position-sorted order)).
        source_shape_xyz: (i, j, k) shape of the input's voxel grid.
        dicom_datasets: pydicom Datasets (headers, pixel data dropped) of a DICOM input, one per
            display slice in display slice order. Exceptions: a multi-frame file gives one
            Dataset; a series whose slices are not axial (shown reformatted) keeps
            position-sorted order.
        slice_sources: DICOM input only: one :class:`SliceSource` per source slice, in the
            order of the source grid's slice axis k (``to_source_xyz(...)[:, :, k]`` is the mask
            on ``slice_sources[k]``); empty for other inputs.
        description: one human-readable line, e.g. "DICOM series, 129 slices, 512×512, 0.57×0.57×1.6 mm".
        notes: what the reader had to assume (also at the end of ``description``), e.g. "uneven
            slice spacing (…); an even 4 mm is assumed": an export in the input's geometry
            carries the same assumptions.
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    affine_ras: np.ndarray
    kind: str
    source_affine_ras: np.ndarray
    source_shape_xyz: tuple[int, int, int]
    dicom_datasets: tuple = ()
    description: str = ""
    slice_sources: tuple[SliceSource, ...] = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        hu = np.asarray(self.hu, dtype=np.float32)
        if hu.ndim != 3:
            raise ValueError(f"CTVolume.hu must be (Z, Y, X), got shape {hu.shape}")
        if self.kind not in KINDS:
            raise ValueError(f"CTVolume.kind must be one of {', '.join(map(repr, KINDS))}, got {self.kind!r}")
        object.__setattr__(self, "hu", hu)
        for name in ("affine_ras", "source_affine_ras"):
            aff = np.array(getattr(self, name), dtype=np.float64)
            if aff.shape != (4, 4):
                raise ValueError(f"CTVolume.{name} must be 4x4, got shape {aff.shape}")
            aff.setflags(write=False)
            object.__setattr__(self, name, aff)
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))
        object.__setattr__(self, "source_shape_xyz", tuple(int(s) for s in self.source_shape_xyz))
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes))
        object.__setattr__(self, "dicom_datasets", tuple(self.dicom_datasets))
        object.__setattr__(self, "slice_sources", tuple(self.slice_sources))
        if display_shape_xyz(self.source_shape_xyz, self.source_affine_ras) != hu.shape[::-1]:
            raise ValueError(
                f"CTVolume: source grid {self.source_shape_xyz} reoriented to display does not give "
                f"hu's (X, Y, Z) shape {hu.shape[::-1]}"
            )
        if self.slice_sources and len(self.slice_sources) != self.source_shape_xyz[2]:
            raise ValueError(
                f"CTVolume: {len(self.slice_sources)} slice sources for a source grid of "
                f"{self.source_shape_xyz[2]} slices"
            )

    @property
    def n_slices(self) -> int:
        """Number of display slices (Z)."""
        return int(self.hu.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory held by the HU array in bytes (the headers are small beside it)."""
        return int(self.hu.nbytes)

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

    def from_source_xyz(self, arr_xyz: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_source_xyz`: an array on the input file's voxel grid
        (``source_shape_xyz``, index order (i, j, k)) in display (Z, Y, X) layout, like ``hu``."""
        arr = np.asarray(arr_xyz)
        if arr.shape != self.source_shape_xyz:
            raise ValueError(f"expected an array on the source grid {self.source_shape_xyz}, got {arr.shape}")
        back = nio.ornt_transform(nio.io_orientation(self.source_affine_ras), nio.axcodes2ornt(DISPLAY_AXCODES))
        return np.ascontiguousarray(nio.apply_orientation(arr, back).transpose(2, 1, 0))

    def source_slice_index(self, z: int) -> int | None:
        """The source slice k shown as display slice ``z``, or None when display slices are not
        the stored slices (a sagittal or coronal acquisition shown reformatted)."""
        ornt = source_to_display_ornt(self.source_affine_ras)
        if int(ornt[2, 0]) != 2 or not 0 <= z < self.n_slices:
            return None
        return int(z) if ornt[2, 1] > 0 else self.n_slices - 1 - int(z)

    def slice_source(self, z: int) -> SliceSource | None:
        """The DICOM file (and frame) that display slice ``z`` comes from, or None (see
        :meth:`source_slice_index`; always None for NIfTI and image inputs)."""
        k = self.source_slice_index(z)
        return None if k is None or not self.slice_sources else self.slice_sources[k]


# --------------------------------------------------------------------------- orientation

def source_to_display_ornt(source_affine_ras: np.ndarray) -> np.ndarray:
    """nibabel orientation transform from the source voxel axes to display (L, P, S)."""
    src = nio.io_orientation(source_affine_ras)
    if np.isnan(src).any():
        raise CTLoadError("The file's orientation matrix is degenerate (an image axis has no direction in space).")
    return nio.ornt_transform(src, nio.axcodes2ornt(DISPLAY_AXCODES))


def display_shape_xyz(source_shape_xyz: Sequence[int], source_affine_ras: np.ndarray) -> tuple[int, int, int]:
    """(X, Y, Z) shape of the display grid of a source grid ``source_shape_xyz``."""
    ornt = source_to_display_ornt(source_affine_ras)
    out = [0, 0, 0]
    for src_axis, (dst_axis, _flip) in enumerate(ornt):
        out[int(dst_axis)] = int(source_shape_xyz[src_axis])
    return tuple(out)


def repair_affine(affine: np.ndarray) -> tuple[np.ndarray, str]:
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
    ornt = source_to_display_ornt(source_affine_ras)
    disp_xyz = nio.apply_orientation(data_xyz, ornt)
    disp_affine = source_affine_ras @ nio.inv_ornt_aff(ornt, data_xyz.shape)
    hu = np.ascontiguousarray(disp_xyz.transpose(2, 1, 0), dtype=np.float32)
    return hu, disp_affine


def _spacing_zyx(display_affine: np.ndarray) -> tuple[float, float, float]:
    sx, sy, sz = np.linalg.norm(display_affine[:3, :3], axis=0)
    return float(sz), float(sy), float(sx)


def format_bytes(n: int) -> str:
    """``1.2 GB``, ``340.0 MB``, … (powers of 1000)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def check_display_size(display_shape_xyz_: Sequence[int], what: str, max_voxels: int | None = None) -> None:
    """Refuse empty grids, slices above ``MAX_SLICE_PX`` and more than ``max_voxels`` voxels.

    Called from headers, before any pixel data is decoded. ``display_shape_xyz_``: (X, Y, Z).
    """
    nx, ny, nz = (int(s) for s in display_shape_xyz_)
    if min(nx, ny, nz) <= 0:
        raise CTLoadError(f"{what} contains no voxels (size {nx}×{ny}×{nz}).")
    if nx > MAX_SLICE_PX or ny > MAX_SLICE_PX:
        raise CTLoadError(
            f"{what} is too large: it has slices of {nx}×{ny} pixels (width×height); the largest slice accepted is "
            f"{MAX_SLICE_PX}×{MAX_SLICE_PX} pixels (CT slices are usually 512×512)."
        )
    check_voxels(nx * ny * nz, f"{nz} slice{'s' if nz != 1 else ''} of {nx}×{ny} pixels", what, max_voxels)


def check_voxels(n_voxels: int, size_text: str, what: str, max_voxels: int | None) -> None:
    """Raise CTLoadError when ``n_voxels`` exceeds ``max_voxels`` (None: no limit)."""
    if max_voxels is not None and n_voxels > max_voxels:
        per_512 = max(max_voxels // (512 * 512), 1)
        raise CTTooLargeError(
            f"{what} is too large: {size_text} ({n_voxels / 1e6:.0f} million voxels, "
            f"{format_bytes(4 * n_voxels)} as HU); at most {max_voxels / 1e6:.0f} million voxels "
            f"(e.g. {per_512} slices of 512×512) are accepted. Load a smaller part of the series.",
            n_voxels,
            max_voxels,
        )


def finish_volume(
    data_xyz: np.ndarray,
    source_affine_ras: np.ndarray,
    kind: str,
    label: str,
    what: str,
    notes: Sequence[str] = (),
    dicom_datasets: tuple = (),
    slice_sources: tuple = (),
) -> CTVolume:
    """Common last step of every reader: reorient, check the values, describe.

    ``data_xyz``: the source voxels (i, j, k) in HU; ``source_affine_ras`` their voxel → RAS affine.
    """
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
    # a warning about the values, in the description only: ``notes`` are what the reader assumed
    # about the geometry, which exports carry
    values_note = hu_range_note(hu) if kind != "image" and not any("not Hounsfield" in n for n in notes) else ""
    desc = (
        f"{label}, {nz} slice{'s' if nz != 1 else ''}, {nx}×{ny}, "
        f"{spacing[2]:.3g}×{spacing[1]:.3g}×{spacing[0]:.3g} mm"
    )
    notes = [n for n in notes if n]
    if notes or values_note:
        desc += "; " + "; ".join([*notes, values_note] if values_note else notes)
    return CTVolume(
        hu=hu,
        spacing_mm=spacing,
        affine_ras=disp_affine,
        kind=kind,
        source_affine_ras=source_affine_ras,
        source_shape_xyz=tuple(int(s) for s in data_xyz.shape),
        dicom_datasets=dicom_datasets,
        description=desc,
        slice_sources=slice_sources,
        notes=tuple(notes),
    )


NO_AIR_OR_FAT_HU = -200.0  # CT in HU of a body shows air (-1000) or fat (-100) below this


def hu_range_note(hu: np.ndarray) -> str:
    """A note when the values of ``hu`` cannot be CT in Hounsfield units of a body: none below
    NO_AIR_OR_FAT_HU, so no air and no fat (CT stored as HU + 1024 without a rescale, an
    intensity-normalised image, or not CT at all, e.g. MR in a NIfTI); else "". A crop inside
    one organ gets the note too, worded so that it fits."""
    low = float(hu.min())
    if low >= NO_AIR_OR_FAT_HU:
        return (f"no value below {NO_AIR_OR_FAT_HU:.0f} (lowest {low:.4g}), where CT in Hounsfield units shows air at -1000 and fat "
                "at -100: if these are not HU (CT stored as HU + 1024, an intensity-normalised image, MR), the models, "
                "trained on CT in HU, will not segment it well")
    return ""


def orientation_note(source_affine_ras: np.ndarray) -> str:
    """Say so when display slices are not the stored slices (e.g. a sagittal acquisition)."""
    ornt = source_to_display_ornt(source_affine_ras)
    if int(ornt[2, 0]) == 2:
        return ""
    plane = {0: "sagittal", 1: "coronal"}[int(ornt[2, 0])]
    return f"stored as {plane} slices, shown as axial slices"


_ABS_PATH = re.compile(r"(?<![\w.])(?:/[\w.\-~]+)+/([\w.\-~]+)")


def without_paths(message: str) -> str:
    """``message`` with every absolute file path replaced by its last part (the file name), so
    that server-side folders (temporary upload paths, …) never reach a user."""
    return _ABS_PATH.sub(r"\1", message)
