"""DICOM-SEG export (iunet.io.dicom_seg), read back with highdicom: frames on the right source
images in their own rows/columns, and incomplete real-world headers (no Frame of Reference UID,
as in 3D-IRCADb) completed consistently and reported."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import ct_dataset
from iunet.io import CTLoadError, export_dicom_seg, load_ct, read_dicom_seg_mask

highdicom = pytest.importorskip("highdicom")


def write_series(folder: Path, hu_zyx: np.ndarray, flip: bool = False, strip=()) -> list[Path]:
    """An axial series whose display is ``hu_zyx``; ``flip``: rows run to patient right (stored
    images mirrored, sorted order reversed). ``strip``: attributes deleted from every file."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = hu_zyx.shape
    uids = (generate_uid(), generate_uid(), generate_uid())
    paths = []
    for z in np.random.default_rng(1).permutation(n):
        if flip:
            img, ipp, iop = hu_zyx[z][:, ::-1], [(w - 1) * 0.7, 0.0, 2.0 * z], [-1, 0, 0, 0, 1, 0]
        else:
            img, ipp, iop = hu_zyx[z], [0.0, 0.0, 2.0 * z], [1, 0, 0, 0, 1, 0]
        ds = ct_dataset(img, ipp, iop, (0.7, 0.7), int(z) + 1, uids)
        for name in strip:
            if name in ds:
                delattr(ds, name)
        p = folder / f"slice_{int(z):03d}"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def volume(n=5, shape=(30, 36)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    hu = np.full((n, *shape), -100.0, np.float32)
    for z in range(n):
        hu[z][(yy - 12) ** 2 + (xx - 8 - 4 * z) ** 2 <= 25] = 200.0  # a disk drifting to the right
    return hu


def check_frames_on_sources(seg_path: Path, files: list[Path], threshold_hu: float = 100.0) -> int:
    """Every SEG frame equals (source HU > threshold) of the source image it references."""
    seg = highdicom.seg.segread(seg_path)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    by_uid = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in files}
    frames = seg.pixel_array if seg.pixel_array.ndim == 3 else seg.pixel_array[None]
    for item, frame in zip(seg.PerFrameFunctionalGroupsSequence, frames):
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        src = pydicom.dcmread(by_uid[uid])
        src_hu = src.pixel_array * float(src.RescaleSlope) + float(src.RescaleIntercept)
        np.testing.assert_array_equal(frame.astype(bool), src_hu > threshold_hu)
        if "FrameOfReferenceUID" in src:
            assert seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    return len(frames)


@pytest.mark.parametrize("flip", [False, True])
def test_frames_reference_their_source_images(tmp_path, flip):
    files = write_series(tmp_path / "s", volume(), flip=flip)
    vol = load_ct(tmp_path / "s")
    mask = vol.hu > 100
    mask[1] = False  # a slice without mask gets no frame
    out = export_dicom_seg(vol, mask, tmp_path / "seg.dcm", algorithm_name="test model")
    assert out.n_frames == 4 and out.assumptions == ()
    assert check_frames_on_sources(out.path, [f for f in files if pydicom.dcmread(f).InstanceNumber != 2]) == 4
    assert pydicom.dcmread(files[0]).FrameOfReferenceUID == out.frame_of_reference_uid


@pytest.mark.parametrize("flip", [False, True])
def test_a_seg_reads_back_as_the_mask_it_was_made_from(tmp_path, flip):
    """read_dicom_seg_mask: an exported SEG (frames in each image's own rows and columns, empty
    slices without a frame) comes back in display orientation exactly, with its segment label;
    a SEG of another series, or over a NIfTI, or a file that is no SEG, is refused."""
    write_series(tmp_path / "s", volume(), flip=flip)
    vol = load_ct(tmp_path / "s")
    mask = vol.hu > 100
    mask[1] = False
    mask[3, :, :10] = False  # not symmetric in-plane, so a mirrored read would differ
    export_dicom_seg(vol, mask, tmp_path / "seg.dcm", segment_label="Spleen")
    labels, names = read_dicom_seg_mask(tmp_path / "seg.dcm", like=vol)
    assert labels.dtype == np.uint8 and names == {1: "Spleen"}
    np.testing.assert_array_equal(labels, mask.astype(np.uint8))
    write_series(tmp_path / "other", volume())
    with pytest.raises(CTLoadError, match="references none of its images"):
        read_dicom_seg_mask(tmp_path / "seg.dcm", like=load_ct(tmp_path / "other"))
    with pytest.raises(CTLoadError, match="could not be read as a DICOM Segmentation"):
        read_dicom_seg_mask(sorted((tmp_path / "s").iterdir())[0], like=vol)
    import nibabel as nib

    nib.save(nib.Nifti1Image(volume().transpose(2, 1, 0), np.eye(4)), str(tmp_path / "v.nii.gz"))
    with pytest.raises(CTLoadError, match="only be opened over a DICOM series"):
        read_dicom_seg_mask(tmp_path / "seg.dcm", like=load_ct(tmp_path / "v.nii.gz"))


def test_missing_frame_of_reference_is_derived_consistently(tmp_path):
    files = write_series(tmp_path / "s", volume(), strip=("FrameOfReferenceUID", "PatientID", "StudyID"))
    vol = load_ct(tmp_path / "s")
    a = export_dicom_seg(vol, vol.hu > 100, tmp_path / "a.dcm")
    b = export_dicom_seg(vol, vol.hu > 100, tmp_path / "b.dcm")
    assert a.frame_of_reference_uid == b.frame_of_reference_uid  # the same series → the same UID
    assert any("Frame of Reference UID" in note for note in a.assumptions)
    assert any("PatientID" in note and "StudyID" in note for note in a.assumptions)
    seg = highdicom.seg.segread(a.path)
    assert seg.FrameOfReferenceUID == a.frame_of_reference_uid and seg.PatientID == ""
    assert check_frames_on_sources(a.path, files) == 5
    # one file of that series on its own gets the same derived Frame of Reference UID
    single = load_ct(files[0])
    c = export_dicom_seg(single, single.hu > 100, tmp_path / "c.dcm")
    assert c.frame_of_reference_uid == a.frame_of_reference_uid
    assert "FrameOfReferenceUID" not in pydicom.dcmread(files[0])  # the sources are never changed


def test_refusals(tmp_path):
    files = write_series(tmp_path / "s", volume())
    vol = load_ct(files)
    with pytest.raises(ValueError, match="empty"):
        export_dicom_seg(vol, np.zeros(vol.hu.shape, bool), tmp_path / "x.dcm")
    with pytest.raises(ValueError, match="expected the volume"):
        export_dicom_seg(vol, np.ones((2, 2, 2), bool), tmp_path / "x.dcm")
    import nibabel as nib

    nib.save(nib.Nifti1Image(volume().transpose(2, 1, 0), np.eye(4)), str(tmp_path / "v.nii.gz"))
    nifti = load_ct(tmp_path / "v.nii.gz")
    with pytest.raises(ValueError, match="needs a DICOM input"):
        export_dicom_seg(nifti, nifti.hu > 100, tmp_path / "x.dcm")


def test_real_ircadb_series_exports_and_reads_back(shared_data, tmp_path):
    folder = shared_data / "ircadb_patient1" / "PATIENT_DICOM"
    if not folder.is_dir():
        pytest.skip("3D-IRCADb series absent")
    assert "FrameOfReferenceUID" not in pydicom.dcmread(folder / "image_0", stop_before_pixels=True)
    vol = load_ct(folder)
    mask = np.zeros(vol.hu.shape, bool)
    mask[60:63, 200:300, 150:260] = vol.hu[60:63, 200:300, 150:260] > 100  # bright tissue on 3 slices
    out = export_dicom_seg(vol, mask, tmp_path / "ircadb_seg.dcm")
    assert out.n_frames == 3 and any("Frame of Reference UID" in n for n in out.assumptions)
    seg = highdicom.seg.segread(out.path)
    assert seg.FrameOfReferenceUID == out.frame_of_reference_uid
    # each frame sits on its source image, in that image's rows and columns
    by_uid = {str(s.dataset.SOPInstanceUID): s for s in vol.slice_sources}
    frames = seg.pixel_array
    for item, frame in zip(seg.PerFrameFunctionalGroupsSequence, frames):
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        src = pydicom.dcmread(folder / by_uid[uid].file_name)
        expected = np.zeros(frame.shape, bool)
        expected[200:300, 150:260] = (src.pixel_array * float(src.RescaleSlope) + float(src.RescaleIntercept))[200:300, 150:260] > 100
        np.testing.assert_array_equal(frame.astype(bool), expected)
    labels, _ = read_dicom_seg_mask(out.path, like=vol)  # and back onto the display grid, exactly
    np.testing.assert_array_equal(labels > 0, mask)
    # a single file of the series: the same derived frame of reference
    one = load_ct(folder / by_uid[uid].file_name)
    single = export_dicom_seg(one, one.hu > 100, tmp_path / "one.dcm")
    assert single.frame_of_reference_uid == out.frame_of_reference_uid
