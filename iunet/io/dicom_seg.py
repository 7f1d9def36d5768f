"""Binary DICOM Segmentation (SEG) export of a mask drawn on a DICOM input (with highdicom).

Real archives contain files that lack attributes the Segmentation IOD requires of its source
images (3D-IRCADb, for example, has no Frame of Reference UID). The export works on copies of
the source headers and fills in what is missing, always the same way for a series, and reports
every such assumption in :attr:`DicomSegExport.assumptions`:

* no Frame of Reference UID: one is derived from the Study and Series Instance UIDs
  (``pydicom.uid.generate_uid(entropy_srcs=...)``), so every image of the series, and every
  export of it, gets the same one;
* no Study Instance UID: derived from the Series Instance UID in the same way;
* missing patient/study attributes of type 2 (Patient ID, Study ID, …): written empty;
* no image position/orientation/pixel spacing (single-frame files): the geometry the loader
  assumed (see ``CTVolume.description``) is written for each frame.

The source files themselves are never changed.
"""
from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .masks import binary_mask
from .volume import LPS_TO_RAS, CTLoadError, CTVolume, PathLike

# Patient and study attributes highdicom copies from the first source image; DICOM type 2
# (they must be present, may be empty).
_TYPE2_ATTRIBUTES = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
)
_UID_ROOT_NOTE = "derived from the series' UIDs, the same for every export of this series"


@dataclass(frozen=True)
class DicomSegExport:
    """What :func:`export_dicom_seg` wrote.

    Attributes:
        path: the SEG file.
        n_frames: frames in the SEG (one per source image that has some mask).
        frame_of_reference_uid: the Frame of Reference UID the SEG uses.
        assumptions: one sentence per attribute that the source images lacked and the export
            derived (empty when the sources were complete).
    """

    path: Path
    n_frames: int
    frame_of_reference_uid: str
    assumptions: tuple[str, ...] = ()


def derived_uid(*parts: str) -> str:
    """A UID derived deterministically from ``parts`` (same parts → same UID)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["iunet", *parts]))


def _most_common(values: list[str]) -> str | None:
    values = [v for v in values if v]
    return Counter(values).most_common(1)[0][0] if values else None


def _complete_headers(volume: CTVolume, datasets: list, multi_frame: bool) -> tuple[list, str, list[str]]:
    """Copies of the source headers with what the SEG IOD needs filled in; (copies, FoR UID, notes)."""
    out = [copy.deepcopy(ds) for ds in datasets]
    notes: list[str] = []
    if any(not str(ds.get("SOPInstanceUID", "") or "") for ds in out):
        raise ValueError(
            "DICOM-SEG export: some source images have no SOP Instance UID, so a segmentation cannot "
            "reference them. Export the mask as NIfTI instead."
        )
    series_uid = _most_common([str(ds.get("SeriesInstanceUID", "") or "") for ds in out]) or derived_uid(
        "series", *[str(ds.SOPInstanceUID) for ds in out[:1]]
    )
    study_uid = _most_common([str(ds.get("StudyInstanceUID", "") or "") for ds in out])
    if study_uid is None:
        study_uid = derived_uid("study", series_uid)
        notes.append(f"the images have no Study Instance UID: the SEG uses {study_uid} ({_UID_ROOT_NOTE})")
    for_uid = _most_common([str(ds.get("FrameOfReferenceUID", "") or "") for ds in out])
    if for_uid is None:
        for_uid = derived_uid("frame-of-reference", study_uid, series_uid)
        notes.append(
            f"the images have no Frame of Reference UID: the SEG uses {for_uid} ({_UID_ROOT_NOTE}); "
            "its frames sit where the images' positions say"
        )
    elif any(str(ds.get("FrameOfReferenceUID", "") or "") != for_uid for ds in out):
        notes.append(f"some images have no (or another) Frame of Reference UID: {for_uid} is used for all")
    missing_type2: set[str] = set()
    for ds in out:
        ds.StudyInstanceUID = ds.get("StudyInstanceUID") or study_uid
        ds.FrameOfReferenceUID = for_uid
        if not ds.get("Modality"):
            ds.Modality = "CT" if volume.kind == "dicom" else "OT"
            missing_type2.add("Modality (CT assumed)")
        for name in _TYPE2_ATTRIBUTES:
            if name not in ds:
                setattr(ds, name, "")
                missing_type2.add(name)
    if missing_type2:
        notes.append("attributes missing in the images were written empty: " + ", ".join(sorted(missing_type2)))
    if not multi_frame:
        notes += _complete_geometry(volume, out)
    return out, for_uid, notes


def _complete_geometry(volume: CTVolume, headers: list) -> list[str]:
    """Write the loader's (assumed) plane geometry into single-frame headers that lack it."""
    lacking = [
        k for k, ds in enumerate(headers)
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds or "PixelSpacing" not in ds
    ]
    if not lacking:
        return []
    affine_lps = LPS_TO_RAS @ volume.source_affine_ras  # voxel (i, j, k) → LPS mm
    col_step, row_step, slice_step = (affine_lps[:3, a] for a in range(3))
    dx_mm, dy_mm = float(np.linalg.norm(col_step)), float(np.linalg.norm(row_step))
    iop = [*(col_step / dx_mm), *(row_step / dy_mm)]
    for k in lacking:
        ds = headers[k]
        ds.ImagePositionPatient = [round(float(v), 6) for v in affine_lps[:3, 3] + k * slice_step]
        ds.ImageOrientationPatient = [round(float(v), 6) for v in iop]
        ds.PixelSpacing = [round(dy_mm, 6), round(dx_mm, 6)]
    return [
        f"{len(lacking)} image(s) have no position, orientation or pixel spacing: the geometry assumed "
        "when loading (see the image description) is written for their frames"
    ]


def export_dicom_seg(
    volume: CTVolume,
    mask_zyx: np.ndarray,
    path: PathLike,
    *,
    algorithm_name: str = "IU-Net",
    algorithm_version: str = "1",
    segment_label: str = "Segmented region",
) -> DicomSegExport:
    """Write a binary DICOM Segmentation of ``mask_zyx`` that references the source images.

    Args:
        volume: a DICOM CTVolume (``kind == "dicom"``, ``slice_sources`` filled by ``load_ct``).
        mask_zyx: (Z, Y, X) bool (or 0 / 1) in display orientation, like ``volume.hu``.
        path: the output file.

    Each segmentation frame is the mask on one source image, in that image's own rows and
    columns (the display orientation is undone with ``volume.to_source_xyz``, and the source
    slice order comes from ``volume.slice_sources``). Frames without mask are left out.

    Returns:
        a :class:`DicomSegExport` (path, number of frames, Frame of Reference UID, assumptions).
    Raises:
        ValueError: a non-DICOM input, an empty mask, a mask of the wrong shape or one that is not
            binary (probabilities, labels above 1), or source images
            that cannot be referenced (no SOP Instance UID).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if volume.kind != "dicom" or not volume.slice_sources:
        raise ValueError("DICOM-SEG export needs a DICOM input; use NIfTI or PNG for this image.")
    mask = np.asarray(mask_zyx)
    if mask.shape != volume.hu.shape:
        raise ValueError(f"the mask is {mask.shape}, expected the volume's (Z, Y, X) = {volume.hu.shape}")
    mask = binary_mask(mask, "the mask of a binary DICOM-SEG")  # probabilities: each value > 0 would be foreground
    if not mask.any():
        raise ValueError("Nothing to export: the mask is empty. Click on the object first.")
    src = volume.to_source_xyz(mask.astype(np.uint8))  # (col, row, source slice k)
    sources = volume.slice_sources
    multi_frame = sources[0].frame is not None
    if multi_frame:
        dataset = sources[0].dataset
        n_frames = int(dataset.get("NumberOfFrames", len(sources)) or len(sources))
        frames = np.zeros((n_frames, src.shape[1], src.shape[0]), np.uint8)
        for k, s in enumerate(sources):
            frames[s.frame] = src[:, :, k].T
        datasets = [dataset]
    else:
        frames = np.ascontiguousarray(src.transpose(2, 1, 0))  # (k, rows, cols)
        datasets = [s.dataset for s in sources]
    headers, for_uid, notes = _complete_headers(volume, datasets, multi_frame)

    algorithm_id = hd.AlgorithmIdentificationSequence(
        name=algorithm_name[:64] or "IU-Net", family=codes.cid7162.ArtificialIntelligence, version=algorithm_version
    )
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=segment_label[:64],
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
        algorithm_identification=algorithm_id,
    )
    first = headers[0]
    try:
        series_number = int(first.get("SeriesNumber", 0) or 0) + 1000
    except (TypeError, ValueError):
        series_number = 1000
    seg = hd.seg.Segmentation(
        source_images=headers,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="iunet",
        manufacturer_model_name="IU-Net interactive segmentation",
        software_versions=algorithm_version,
        device_serial_number="none",
        series_description="IU-Net interactive segmentation",
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(str(path))
    n_written = int(getattr(seg, "NumberOfFrames", 1) or 1)
    return DicomSegExport(path, n_written, for_uid, tuple(notes))


def read_dicom_seg_mask(path: PathLike, like: CTVolume) -> tuple[np.ndarray, dict[int, str]]:
    """The segments of a DICOM Segmentation of ``like``'s images (e.g. an earlier
    :func:`export_dicom_seg`, or a SEG from a PACS or another tool) as a label volume (Z, Y, X)
    uint8 in display orientation, each voxel the number of the segment that covers it (the
    higher number where segments overlap; 0 = none), and the segments' labels by number.

    The frames are matched to ``like``'s slices by the SOP Instance UIDs (and frame numbers, for
    a multi-frame image) that the SEG references, in each image's own rows and columns; slices
    it does not cover are 0. Raises CTLoadError for a file that is not a readable DICOM
    Segmentation, a SEG that references none of these images or whose frames have other
    sizes, more than 255 segments, and a ``like`` that is not a DICOM input.
    """
    import highdicom as hd

    path = Path(path)
    what = f"The DICOM-SEG file '{path.name}'"
    if like.kind != "dicom" or not like.slice_sources:
        raise CTLoadError(f"{what} can only be opened over a DICOM series; this image is {like.kind}. Open a NIfTI label instead.")
    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:  # pydicom / highdicom errors: not a SEG, damaged
        raise CTLoadError(f"{what} could not be read as a DICOM Segmentation ({type(exc).__name__}: {exc}).") from exc
    numbers = [int(n) for n in seg.segment_numbers]
    if not numbers or max(numbers) > 255:
        raise CTLoadError(f"{what} holds {len(numbers)} segments numbered up to {max(numbers, default=0)}; up to 255 can be opened.")
    names = {n: str(seg.get_segment_description(n).segment_label) for n in numbers}
    referenced = {str(sop) for _, _, sop in seg.get_source_image_uids()}
    sources = like.slice_sources
    nx, ny, nk = like.source_shape_xyz
    src = np.zeros((nx, ny, nk), np.uint8)  # (col, row, source slice k)
    if sources[0].frame is not None:  # one multi-frame image: its frames are the slices
        uid = str(sources[0].dataset.SOPInstanceUID)
        if uid not in referenced:
            raise CTLoadError(f"{what} does not segment this series: it references none of its images.")
        wanted = [(k, s.frame + 1) for k, s in enumerate(sources)]
        pixels = _seg_pixels(lambda: seg.get_pixels_by_source_frame(
            uid, [f for _, f in wanted], segment_numbers=numbers, assert_missing_frames_are_empty=True,
            ignore_spatial_locations=True, dtype=np.uint8), what)
        ks = [k for k, _ in wanted]
    else:
        ks = [k for k, s in enumerate(sources) if str(s.dataset.SOPInstanceUID) in referenced]
        if not ks:
            raise CTLoadError(f"{what} does not segment this series: it references none of its images.")
        pixels = _seg_pixels(lambda: seg.get_pixels_by_source_instance(
            [str(sources[k].dataset.SOPInstanceUID) for k in ks], segment_numbers=numbers,
            assert_missing_frames_are_empty=True, ignore_spatial_locations=True, dtype=np.uint8), what)
    if pixels.shape[1:3] != (ny, nx):
        raise CTLoadError(f"{what} has frames of {pixels.shape[2]}×{pixels.shape[1]} pixels, the images {nx}×{ny}.")
    labels = np.zeros(pixels.shape[:3], np.uint8)
    for i, n in enumerate(numbers):  # (images, rows, cols, segments) binary; a higher number wins
        labels[pixels[..., i] > 0] = n
    for i, k in enumerate(ks):
        src[:, :, k] = labels[i].T
    return like.from_source_xyz(src), names


def _seg_pixels(get, what: str) -> np.ndarray:
    """highdicom's frames, its errors as a CTLoadError."""
    try:
        return np.asarray(get())
    except Exception as exc:
        raise CTLoadError(f"{what} could not be matched to this series' images ({type(exc).__name__}: {exc}).") from exc
