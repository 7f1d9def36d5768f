"""CT input/output, one module per format; every reader returns a :class:`CTVolume` in display orientation.

* :mod:`.volume` — ``CTVolume`` (HU (Z, Y, X), geometry, each slice's source), ``CTLoadError``,
  the display orientation (anterior up, patient's left on the image's right, slices inferior →
  superior) and the checks shared by all readers;
* :mod:`.dicom` — DICOM files, series and multi-frame files;
* :mod:`.nifti` — NIfTI-1/-2 (``.nii``, ``.nii.gz`` with a verified gzip checksum);
* :mod:`.nrrd`, :mod:`.metaimage` — 3D Slicer's NRRD and ITK's MetaImage (attached or detached
  voxel data, raw or compressed; shared parts in :mod:`.rawdata`), :mod:`.formats` picks the
  reader of a single volume file;
* :mod:`.images` — PNG/JPEG/BMP/TIFF with a documented grey-level → HU mapping;
* :mod:`.archives` — folders and ``.zip`` archives (zip-bomb and path-traversal safe);
* :mod:`.load` — :func:`load_ct`, the one entry point;
* :mod:`.masks` — masks out (NIfTI on the input's grid, PNG of a slice) and label files in;
* :mod:`.dicom_seg` — binary DICOM Segmentation export referencing the source images, and SEGs of a series read back as labels.

Every bad input raises :class:`CTLoadError` (a ValueError) with a message that says what was
wrong and what is accepted; pydicom / nibabel / Pillow exceptions never escape ``load_ct``.
"""
from .archives import MAX_ZIP_MEMBERS, MAX_ZIP_UNCOMPRESSED_BYTES
from .dicom_seg import DicomSegExport, export_dicom_seg, read_dicom_seg_mask
from .images import (
    IMAGE_8BIT_LEVEL_HU,
    IMAGE_8BIT_LOWER_HU,
    IMAGE_8BIT_WIDTH_HU,
    IMAGE_16BIT_OFFSET_HU,
)
from .load import load_ct
from .masks import read_nifti_mask, save_mask_nifti, save_mask_png
from .volume import (
    ACCEPTED_INPUTS,
    DISPLAY_AXCODES,
    MAX_SLICE_PX,
    CTLoadError,
    CTTooLargeError,
    CTVolume,
    PathLike,
    SliceSource,
)

__all__ = [
    "ACCEPTED_INPUTS", "DISPLAY_AXCODES", "MAX_SLICE_PX", "MAX_ZIP_MEMBERS", "MAX_ZIP_UNCOMPRESSED_BYTES",
    "IMAGE_8BIT_LEVEL_HU", "IMAGE_8BIT_LOWER_HU", "IMAGE_8BIT_WIDTH_HU", "IMAGE_16BIT_OFFSET_HU",
    "CTLoadError", "CTTooLargeError", "CTVolume", "DicomSegExport", "PathLike", "SliceSource",
    "export_dicom_seg", "load_ct", "read_dicom_seg_mask", "read_nifti_mask", "save_mask_nifti", "save_mask_png",
]
