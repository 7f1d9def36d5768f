"""Which reader takes a single volume file: NIfTI, NRRD or MetaImage (by name, else by content)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from .metaimage import has_metaimage_suffix, load_metaimage, looks_like_metaimage
from .nifti import has_nifti_suffix, load_nifti, looks_like_nifti
from .nrrd import has_nrrd_suffix, load_nrrd, looks_like_nrrd
from .volume import CTVolume

# (reader, "the NIfTI file", …): reader(path, what, max_voxels, given) → CTVolume
VolumeReader = Callable[[Path, str, "int | None", Sequence[Path]], CTVolume]


def _nifti(path: Path, what: str, max_voxels: int | None, given: Sequence[Path] = ()) -> CTVolume:
    return load_nifti(path, what, max_voxels)


_READERS = (  # (reader, name, by suffix, by content)
    (_nifti, "NIfTI file", has_nifti_suffix, looks_like_nifti),
    (load_nrrd, "NRRD file", has_nrrd_suffix, looks_like_nrrd),
    (load_metaimage, "MetaImage file", has_metaimage_suffix, looks_like_metaimage),
)


def volume_file_reader(path: Path) -> tuple[VolumeReader, str] | None:
    """The reader of a NIfTI, NRRD or MetaImage file and its name for messages; None for others.

    A suffix decides first (``.nii``/``.nii.gz``, ``.nrrd``/``.nhdr``, ``.mha``/``.mhd``); a file
    without one is recognised by its first bytes.
    """
    for test in (2, 3):
        for entry in _READERS:
            if entry[test](path):
                return entry[0], entry[1]
    return None
