"""Compatibility shim: CT input/output now lives in the package :mod:`iunet.io` (one module per
format). ``from iunet.ct_io import load_ct, CTVolume, CTLoadError, read_nifti_mask, ...`` keeps
working; new code should import from ``iunet.io``.
"""
from .io import (  # noqa: F401
    ACCEPTED_INPUTS,
    DISPLAY_AXCODES,
    IMAGE_8BIT_LEVEL_HU,
    IMAGE_8BIT_LOWER_HU,
    IMAGE_8BIT_WIDTH_HU,
    IMAGE_16BIT_OFFSET_HU,
    MAX_SLICE_PX,
    MAX_ZIP_MEMBERS,
    MAX_ZIP_UNCOMPRESSED_BYTES,
    CTLoadError,
    CTVolume,
    DicomSegExport,
    PathLike,
    SliceSource,
    export_dicom_seg,
    load_ct,
    read_nifti_mask,
    save_mask_nifti,
    save_mask_png,
)
from .io import __all__  # noqa: F401
