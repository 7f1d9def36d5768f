"""Tests of iunet.ct_io: every input kind lands in the same display orientation.

The phantom is defined in world (RAS, mm) coordinates, independent of any voxel grid: a bright
block in the patient's anterior-left and a marker in the posterior-right of the superior slices.
Each writer samples it on its own grid (NIfTI in several orientations, DICOM series with
various orientations), and the expected display array is sampled directly on the display grid
(anterior at the top, patient's left on the image's right, last slice = superior), so the tests
do not reuse the loader's orientation code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from iunet.io import archives
from iunet.ct_io import CTLoadError, CTVolume, load_ct, read_nifti_mask, save_mask_nifti
from conftest import ct_dataset

BG_HU, BLOCK_HU, MARKER_HU = 40.0, 300.0, 800.0
# World grid (RAS mm) of voxel centres per world axis x (R+), y (A+), z (S+).
N_WORLD = (24, 20, 6)
SPACING_WORLD_MM = (1.0, 1.0, 2.0)
LO_WORLD_MM = (-11.5, -9.5, 1.0)  # smallest voxel-centre coordinate per world axis
HI_WORLD_MM = tuple(lo + (n - 1) * s for lo, n, s in zip(LO_WORLD_MM, N_WORLD, SPACING_WORLD_MM))
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def phantom_hu(x_mm, y_mm, z_mm):
    """HU at RAS positions: block in the anterior-left, marker posterior-right and superior."""
    x_mm, y_mm, z_mm = np.broadcast_arrays(x_mm, y_mm, z_mm)
    hu = np.full(x_mm.shape, BG_HU, dtype=np.float32)
    hu[(x_mm > -10) & (x_mm < -3) & (y_mm > 3) & (y_mm < 8)] = BLOCK_HU  # left = -x, anterior = +y
    hu[(x_mm > 3) & (x_mm < 8) & (y_mm > -8) & (y_mm < -3) & (z_mm > 8)] = MARKER_HU
    return hu


def expected_display():
    """(hu (Z, Y, X), affine): the phantom sampled on the display grid (L, P, S)."""
    affine = np.array(
        [[-1.0, 0, 0, HI_WORLD_MM[0]], [0, -1.0, 0, HI_WORLD_MM[1]], [0, 0, 2.0, LO_WORLD_MM[2]], [0, 0, 0, 1]]
    )
    z, y, x = np.meshgrid(*(np.arange(n) for n in N_WORLD[::-1]), indexing="ij")
    return phantom_hu(HI_WORLD_MM[0] - x, HI_WORLD_MM[1] - y, LO_WORLD_MM[2] + 2.0 * z), affine


def assert_display_layout(hu: np.ndarray) -> None:
    """Block at top (anterior) and right (patient's left); marker only in the last slices."""
    nz, ny, nx = hu.shape
    _, by, bx = np.nonzero(hu == BLOCK_HU)
    assert by.size and by.max() < ny / 2, "block should be in the top half (anterior)"
    assert bx.min() > nx / 2, "block should be in the right half (patient's left)"
    mz, my, mx = np.nonzero(hu == MARKER_HU)
    assert mz.size and mz.min() >= nz - 2, "marker should be in the last (superior) slices"
    assert my.min() > ny / 2 and mx.max() < nx / 2, "marker should be posterior-right of the patient"


def nifti_grid(axcodes: str):
    """Source affine and data of the phantom stored with voxel axes ``axcodes`` (e.g. "PSR")."""
    axis_of = {"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    shape = []
    for a, code in enumerate(axcodes):
        w = axis_of[code]
        sign = 1.0 if code in "RAS" else -1.0
        affine[w, a] = sign * SPACING_WORLD_MM[w]
        affine[w, 3] = LO_WORLD_MM[w] if sign > 0 else HI_WORLD_MM[w]
        shape.append(N_WORLD[w])
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), 0).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:]
    return affine, phantom_hu(*world).reshape(shape)


def write_nifti(path: Path, data, affine, dtype=np.int16) -> Path:
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


# --------------------------------------------------------------------------- NIfTI round trips

@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "LAS", "PSR", "AIL"])
def test_nifti_orientations_land_in_display(tmp_path, axcodes):
    affine, data = nifti_grid(axcodes)
    assert nib.aff2axcodes(affine) == tuple(axcodes)
    path = write_nifti(tmp_path / f"ct_{axcodes}.nii.gz", data, affine)
    vol = load_ct(path)
    want_hu, want_affine = expected_display()
    assert vol.kind == "nifti"
    assert vol.hu.dtype == np.float32 and vol.hu.shape == want_hu.shape == (6, 20, 24)
    np.testing.assert_array_equal(vol.hu, want_hu)
    np.testing.assert_allclose(vol.affine_ras, want_affine, atol=1e-6)
    assert nib.aff2axcodes(vol.affine_ras) == ("L", "P", "S")
    assert vol.spacing_mm == pytest.approx((2.0, 1.0, 1.0))
    assert vol.source_shape_xyz == data.shape
    np.testing.assert_allclose(vol.source_affine_ras, affine)
    assert vol.n_slices == 6
    assert_display_layout(vol.hu)
    if axcodes in ("PSR", "AIL"):
        assert "sagittal" in vol.description

    # save_mask_nifti writes the mask on the original voxel grid, with the original affine.
    out = save_mask_nifti(vol, vol.hu == BLOCK_HU, tmp_path / "mask")
    assert out.name == "mask.nii.gz" and out.exists()
    back = nib.load(str(out))
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(back.dataobj), (data == BLOCK_HU).astype(np.uint8))
    # and read_nifti_mask brings it back to display
    np.testing.assert_array_equal(read_nifti_mask(out, like=vol), (want_hu == BLOCK_HU).astype(np.uint8))


def test_oblique_nifti_uses_nearest_axes(tmp_path):
    affine, data = nifti_grid("RAS")
    angle = np.deg2rad(15)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0, 0], [np.sin(angle), np.cos(angle), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    vol = load_ct(write_nifti(tmp_path / "oblique.nii", data, rot @ affine))
    assert nib.aff2axcodes(vol.affine_ras) == ("L", "P", "S")
    assert_display_layout(vol.hu)


def test_nifti_2d_and_singleton_4d(tmp_path):
    affine, data = nifti_grid("LPS")
    want_hu, _ = expected_display()
    vol2d = load_ct(write_nifti(tmp_path / "slice.nii.gz", data[:, :, 5], affine))
    assert vol2d.hu.shape == (1, 20, 24)
    np.testing.assert_array_equal(vol2d.hu[0], want_hu[5])
    vol4d = load_ct(write_nifti(tmp_path / "four.nii.gz", data[..., None], affine))
    np.testing.assert_array_equal(vol4d.hu, want_hu)


def test_values_that_cannot_be_hu_are_named_in_the_description(tmp_path):
    """CT stored as HU + 1024 without a rescale, or an intensity-normalised image, has no air or
    fat: the description says so (not the notes, which exports carry); real CT values do not."""
    body = np.full((32, 32, 4), 40, np.int16)
    body[8:24, 8:24] = 160
    offset = load_ct(write_nifti(tmp_path / "offset.nii.gz", body + 1024, np.eye(4), np.uint16))
    assert "no value below -200 (lowest 1064)" in offset.description and "HU + 1024" in offset.description
    assert offset.notes == ()
    norm = load_ct(write_nifti(tmp_path / "norm.nii.gz", body / 200.0, np.eye(4), np.float32))
    assert "(lowest 0.2)" in norm.description and "intensity-normalised" in norm.description
    ct = body.copy()
    ct[:, :4] = -1000  # air beside the body
    assert "no value below" not in load_ct(write_nifti(tmp_path / "ct.nii.gz", ct, np.eye(4))).description


def test_save_single_slice_mask(tmp_path):
    affine, data = nifti_grid("PSR")
    vol = load_ct(write_nifti(tmp_path / "ct.nii.gz", data, affine))
    want_hu, _ = expected_display()
    out = save_mask_nifti(vol, want_hu[5] == MARKER_HU, tmp_path / "one.nii.gz", slice_index=5)
    back = np.asarray(nib.load(str(out)).dataobj)
    # PSR: the second source axis runs to superior, so display slice 5 (the top one) is j = 5 only.
    assert back.shape == data.shape and back.sum() == (want_hu[5] == MARKER_HU).sum()
    np.testing.assert_array_equal(back[:, 5, :], (data[:, 5, :] == MARKER_HU).astype(np.uint8))
    assert back[:, :5, :].sum() == 0
    with pytest.raises(ValueError, match="slice_index"):
        save_mask_nifti(vol, want_hu[5] > 0, tmp_path / "x.nii.gz")
    with pytest.raises(ValueError, match="outside"):
        save_mask_nifti(vol, want_hu[5] > 0, tmp_path / "x.nii.gz", slice_index=6)
    with pytest.raises(ValueError, match="threshold"):
        save_mask_nifti(vol, np.full(want_hu.shape, 0.3), tmp_path / "x.nii.gz")


def test_read_nifti_mask_rejects_other_grid(tmp_path):
    affine, data = nifti_grid("RAS")
    vol = load_ct(write_nifti(tmp_path / "ct.nii.gz", data, affine))
    other = write_nifti(tmp_path / "lab.nii.gz", np.zeros((5, 5, 5)), affine, np.uint8)
    with pytest.raises(CTLoadError, match="does not belong"):
        read_nifti_mask(other, like=vol)
    flipped_aff, flipped = nifti_grid("LAS")
    lab = write_nifti(tmp_path / "lab2.nii.gz", flipped == BLOCK_HU, flipped_aff, np.uint8)
    with pytest.raises(CTLoadError, match="orientation"):
        read_nifti_mask(lab, like=vol)


# --------------------------------------------------------------------------- DICOM

def dicom_series(row_cos, col_cos, spacing_rc, shape_rc, first_ipp_lps, step_lps, n_slices, rng=None):
    """Datasets of the phantom on a DICOM grid (LPS geometry), in acquisition order, with the
    source data (col, row, slice sorted along the normal) and the RAS affine of that grid."""
    from pydicom.uid import generate_uid

    row_cos, col_cos = np.asarray(row_cos, float), np.asarray(col_cos, float)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rows, cols = shape_rc
    j, i = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    datasets, slices = [], []
    for k in range(n_slices):
        ipp = np.asarray(first_ipp_lps, float) + k * np.asarray(step_lps, float)
        lps = ipp[:, None, None] + row_cos[:, None, None] * i * spacing_rc[1] + col_cos[:, None, None] * j * spacing_rc[0]
        hu = phantom_hu(-lps[0], -lps[1], lps[2])
        # instance numbers deliberately run opposite to the positions
        datasets.append(ct_dataset(hu, ipp, [*row_cos, *col_cos], spacing_rc, n_slices - k, (study, series, frame)))
        slices.append(hu)
    # The source grid's slice axis is sorted along the slice normal (row × column direction).
    step_lps, first_ipp_lps = np.asarray(step_lps, float), np.asarray(first_ipp_lps, float)
    if np.dot(step_lps, np.cross(row_cos, col_cos)) < 0:
        slices = slices[::-1]
        first_ipp_lps = first_ipp_lps + (n_slices - 1) * step_lps
        step_lps = -step_lps
    source_xyz = np.stack(slices, 0).transpose(2, 1, 0)
    aff_lps = np.eye(4)
    aff_lps[:3, 0] = row_cos * spacing_rc[1]
    aff_lps[:3, 1] = col_cos * spacing_rc[0]
    aff_lps[:3, 2] = step_lps
    aff_lps[:3, 3] = first_ipp_lps
    return datasets, source_xyz, np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff_lps


def axial_series(flip_row=False):
    # Display pixel (0, 0) of slice 0 sits at RAS (HI_x, HI_y, LO_z) = LPS (-HI_x, -HI_y, LO_z).
    x0 = HI_WORLD_MM[0] if flip_row else -HI_WORLD_MM[0]
    return dicom_series(
        row_cos=[-1, 0, 0] if flip_row else [1, 0, 0],
        col_cos=[0, 1, 0],
        spacing_rc=(1.0, 1.0),
        shape_rc=(20, 24),
        first_ipp_lps=[x0, -HI_WORLD_MM[1], LO_WORLD_MM[2]],
        step_lps=[0, 0, 2.0],
        n_slices=6,
    )


def write_shuffled(folder: Path, datasets, seed=0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(datasets))
    paths = []
    for n, idx in enumerate(order):
        p = folder / f"IM{n:04d}"  # no extension, names unrelated to position
        datasets[idx].save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


@pytest.mark.parametrize("flip_row", [False, True])
def test_dicom_series_folder_and_files(tmp_path, flip_row):
    datasets, source_xyz, aff_ras = axial_series(flip_row)
    paths = write_shuffled(tmp_path / "series", datasets)
    want_hu, want_affine = expected_display()
    for source in (tmp_path / "series", [str(p) for p in paths]):
        vol = load_ct(source)
        assert vol.kind == "dicom"
        np.testing.assert_array_equal(vol.hu, want_hu)
        np.testing.assert_allclose(vol.affine_ras, want_affine, atol=1e-6)
        assert vol.spacing_mm == pytest.approx((2.0, 1.0, 1.0))
        assert_display_layout(vol.hu)
        assert vol.description.startswith("DICOM series, 6 slices, 24×20, 1×1×2 mm")
        # datasets follow display slices: inferior → superior
        z_mm = [float(ds.ImagePositionPatient[2]) for ds in vol.dicom_datasets]
        assert z_mm == sorted(z_mm) and len(z_mm) == 6
    np.testing.assert_allclose(vol.source_affine_ras, aff_ras, atol=1e-6)
    out = save_mask_nifti(vol, vol.hu == BLOCK_HU, tmp_path / "seg.nii.gz")
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, aff_ras, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(back.dataobj), (source_xyz == BLOCK_HU).astype(np.uint8))


def test_dicom_sagittal_series_is_reformatted(tmp_path):
    # columns run posterior, rows run inferior, slices step to the patient's right (LPS -x)
    datasets, _, _ = dicom_series(
        row_cos=[0, 1, 0],
        col_cos=[0, 0, -1],
        spacing_rc=(2.0, 1.0),
        shape_rc=(6, 20),
        first_ipp_lps=[-LO_WORLD_MM[0], -HI_WORLD_MM[1], HI_WORLD_MM[2]],  # patient's left-most slice first
        step_lps=[-1.0, 0, 0],
        n_slices=24,
    )
    write_shuffled(tmp_path / "sag", datasets)
    vol = load_ct(tmp_path / "sag")
    want_hu, want_affine = expected_display()
    np.testing.assert_array_equal(vol.hu, want_hu)
    np.testing.assert_allclose(vol.affine_ras, want_affine, atol=1e-6)
    assert "sagittal" in vol.description
    assert len(vol.dicom_datasets) == 24


def test_single_dicom_file_and_zip(tmp_path):
    datasets, _, _ = axial_series()
    want_hu, _ = expected_display()
    one = tmp_path / "single"
    datasets[5].save_as(one, enforce_file_format=True)
    vol = load_ct(one)
    assert vol.hu.shape == (1, 20, 24) and vol.kind == "dicom"
    np.testing.assert_array_equal(vol.hu[0], want_hu[5])
    assert vol.description.startswith("DICOM file, 1 slice")

    paths = write_shuffled(tmp_path / "series", datasets)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in paths:
            zf.write(p, f"study/SE01/{p.name}")
        zf.writestr("study/readme.txt", "not an image")
    vol = load_ct(archive)
    np.testing.assert_array_equal(vol.hu, want_hu)
    assert "not DICOM" in vol.description
    # the headers stay usable after the temporary folder is gone; the pixel data lives in vol.hu only
    assert all("PixelData" not in ds and ds.Rows == 20 for ds in vol.dicom_datasets)
    # each source slice k (position-sorted) knows its file: positions increase along k
    z_mm = [float(s.dataset.ImagePositionPatient[2]) for s in vol.slice_sources]
    assert z_mm == sorted(z_mm) and len(set(z_mm)) == 6 and {s.file_name for s in vol.slice_sources} == {p.name for p in paths}


def test_dicom_without_preamble(tmp_path):
    datasets, _, _ = axial_series()
    ds = datasets[2]
    path = tmp_path / "raw"
    del ds.file_meta
    ds.save_as(path, implicit_vr=True, little_endian=True)  # bare dataset: no preamble, no meta
    assert path.read_bytes()[128:132] != b"DICM"
    vol = load_ct(path)
    np.testing.assert_array_equal(vol.hu[0], expected_display()[0][2])


def test_multiframe_dicom(tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    datasets, _, _ = axial_series()
    order = [3, 0, 5, 1, 4, 2]  # frames stored out of order; positions say where they belong
    mf = datasets[0]
    mf.NumberOfFrames = len(order)
    mf.PixelData = b"".join(datasets[k].PixelData for k in order)
    per_frame = []
    for k in order:
        pos, item = Dataset(), Dataset()
        pos.ImagePositionPatient = datasets[k].ImagePositionPatient
        item.PlanePositionSequence = Sequence([pos])
        per_frame.append(item)
    orient, measures, shared = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = mf.ImageOrientationPatient
    measures.PixelSpacing, measures.SliceThickness = mf.PixelSpacing, 2.0
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    mf.SharedFunctionalGroupsSequence = Sequence([shared])
    mf.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    del mf.ImagePositionPatient
    mf.save_as(tmp_path / "multi.dcm", enforce_file_format=True)
    vol = load_ct(tmp_path / "multi.dcm")
    want_hu, want_affine = expected_display()
    np.testing.assert_array_equal(vol.hu, want_hu)
    np.testing.assert_allclose(vol.affine_ras, want_affine, atol=1e-6)
    assert vol.description.startswith("DICOM multi-frame file, 6 slices") and len(vol.dicom_datasets) == 1


def test_mixed_series_loads_the_largest(tmp_path):
    big, _, _ = axial_series()
    small, _, _ = axial_series(flip_row=True)
    write_shuffled(tmp_path / "mix", big, seed=1)
    for n, ds in enumerate(small[:2]):
        ds.save_as(tmp_path / "mix" / f"other{n}", enforce_file_format=True)
    vol = load_ct(tmp_path / "mix")
    assert vol.n_slices == 6
    assert "2 series" in vol.description and "largest" in vol.description


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEGLSLossless"])
def test_compressed_dicom(tmp_path, syntax):
    import pydicom.uid
    from pydicom.pixels import get_encoder

    uid = getattr(pydicom.uid, syntax)
    try:
        available = get_encoder(uid).is_available
    except Exception:
        available = False
    if not available:
        pytest.skip(f"no {syntax} encoder installed")
    datasets, _, _ = axial_series()
    for ds in datasets:
        ds.compress(uid)
    write_shuffled(tmp_path / "c", datasets)
    vol = load_ct(tmp_path / "c")
    np.testing.assert_array_equal(vol.hu, expected_display()[0])


# --------------------------------------------------------------------------- plain images

def test_png_8bit_and_16bit(tmp_path):
    want_hu, _ = expected_display()
    window_hu = np.clip(want_hu[-1], -160, 240)
    v8 = np.round((window_hu + 160) * 255 / 400).astype(np.uint8)
    Image.fromarray(v8).save(tmp_path / "shot.png")
    vol = load_ct(tmp_path / "shot.png")
    assert vol.kind == "image" and vol.hu.shape == (1, 20, 24)
    np.testing.assert_allclose(vol.hu[0], window_hu, atol=400 / 255 / 2 + 1e-3)
    assert vol.hu[0, 0, 0] == pytest.approx(-160 + float(v8[0, 0]) * 400 / 255)
    assert nib.aff2axcodes(vol.affine_ras) == ("L", "P", "S")
    assert vol.spacing_mm == (1.0, 1.0, 1.0)

    v16 = (want_hu[-1] + 1024).astype(np.uint16)
    Image.fromarray(v16).save(tmp_path / "ct16.png")
    vol16 = load_ct(tmp_path / "ct16.png")
    np.testing.assert_array_equal(vol16.hu[0], want_hu[-1])
    assert vol16.hu.dtype == np.float32

    # mask on an image: source grid is (X, Y, 1)
    out = save_mask_nifti(vol16, vol16.hu == BLOCK_HU, tmp_path / "m.nii.gz")
    np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj)[:, :, 0], (want_hu[-1] == BLOCK_HU).T)


def test_grey_rgb_and_jpeg_accepted(tmp_path):
    v8 = np.tile(np.linspace(0, 255, 24).astype(np.uint8), (20, 1))
    Image.fromarray(np.stack([v8] * 3, -1)).save(tmp_path / "grey_rgb.png")
    vol = load_ct(tmp_path / "grey_rgb.png")
    np.testing.assert_allclose(vol.hu[0], -160 + v8.astype(np.float64) * 400 / 255, atol=1e-3)
    Image.fromarray(v8).save(tmp_path / "grey.jpg", quality=95)
    vol = load_ct(tmp_path / "grey.jpg")
    assert np.abs(vol.hu[0] - (-160 + v8.astype(np.float64) * 400 / 255)).mean() < 5.0


# --------------------------------------------------------------------------- bad inputs

def expect_error(source, *fragments):
    with pytest.raises(CTLoadError) as info:
        load_ct(source)
    message = str(info.value)
    for frag in fragments:
        assert frag.lower() in message.lower(), message
    return message


def test_missing_empty_and_unknown(tmp_path):
    expect_error(tmp_path / "nope.dcm", "does not exist")
    (tmp_path / "empty.dcm").write_bytes(b"")
    expect_error(tmp_path / "empty.dcm", "empty")
    (tmp_path / "notes.txt").write_text("hello, this is not a scan\n" * 20)
    expect_error(tmp_path / "notes.txt", "not a recognised", "DICOM", "NIfTI", "PNG")
    expect_error([], "no file")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "anim.gif")
    expect_error(tmp_path / "anim.gif", "GIF")
    (tmp_path / "emptydir").mkdir()
    expect_error(tmp_path / "emptydir", "no files")


def test_corrupt_dicom(tmp_path):
    datasets, _, _ = axial_series()
    good = tmp_path / "good"
    datasets[0].save_as(good, enforce_file_format=True)
    data = good.read_bytes()
    (tmp_path / "truncated").write_bytes(data[: len(data) - 300])
    expect_error(tmp_path / "truncated", "pixel data")
    ds = datasets[1]
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels", enforce_file_format=True)
    expect_error(tmp_path / "nopixels", "no image", "pixel data")


def test_inconsistent_series(tmp_path):
    datasets, _, _ = axial_series()
    write_shuffled(tmp_path / "s", datasets)
    odd = ct_dataset(np.zeros((20, 26)), [0, 0, 100], [1, 0, 0, 0, 1, 0], (1, 1), 99,
                     (datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID, datasets[0].FrameOfReferenceUID))
    odd.save_as(tmp_path / "s" / "odd", enforce_file_format=True)
    expect_error(tmp_path / "s", "different sizes", "24×20", "26×20")
    dup = ct_dataset(np.zeros((20, 24)), datasets[0].ImagePositionPatient, [1, 0, 0, 0, 1, 0], (1, 1), 99,
                     (datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID, datasets[0].FrameOfReferenceUID))
    (tmp_path / "s" / "odd").unlink()
    dup.save_as(tmp_path / "s" / "dup", enforce_file_format=True)
    expect_error(tmp_path / "s", "same position")


def test_the_same_file_given_twice_is_read_once(tmp_path):
    """One image twice (the same SOP Instance UID, e.g. a file uploaded twice) is one slice, and
    the description says so; two different images at one position are still refused (above)."""
    datasets, _, _ = axial_series()
    paths = write_shuffled(tmp_path / "s", datasets)
    once = load_ct(paths)
    twice = load_ct(paths + [paths[2], paths[4]])
    np.testing.assert_array_equal(twice.hu, once.hu)
    np.testing.assert_allclose(twice.affine_ras, once.affine_ras)
    assert "2 duplicates of the same images left out" in twice.description and len(twice.dicom_datasets) == len(datasets)


def test_bad_nifti(tmp_path):
    eye = np.eye(4)
    expect_error(write_nifti(tmp_path / "t.nii.gz", np.zeros((4, 4, 3, 2)), eye), "4D", "single")
    expect_error(write_nifti(tmp_path / "big.nii.gz", np.zeros((2049, 2, 1)), eye, np.uint8), "2048")
    nan = np.zeros((4, 4, 3), np.float32)
    nan[1, 2, 0] = np.nan
    expect_error(write_nifti(tmp_path / "nan.nii.gz", nan, eye, np.float32), "not numbers", "NaN")
    inf = np.zeros((4, 4, 3), np.float32)
    inf[0, 0, 0] = np.inf
    expect_error(write_nifti(tmp_path / "inf.nii.gz", inf, eye, np.float32), "infinite")
    expect_error(write_nifti(tmp_path / "zero.nii.gz", np.zeros((0, 4, 4)), eye), "no voxels")
    whole = write_nifti(tmp_path / "whole.nii", np.zeros((40, 40, 10)), eye).read_bytes()
    (tmp_path / "broken.nii").write_bytes(whole[: len(whole) // 2])
    expect_error(tmp_path / "broken.nii", "broken.nii", "truncated")


def test_bad_images(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    expect_error(tmp_path / "photo.png", "colour photo")
    Image.fromarray(np.zeros((4, 2049), np.uint8)).save(tmp_path / "wide.png")
    expect_error(tmp_path / "wide.png", "2048")
    for name in ("a.png", "b.jpg"):
        Image.fromarray(np.full((32, 32), 100, np.uint8)).save(tmp_path / name)
    with pytest.raises(CTLoadError, match="series of 2 files given includes the picture 'a.png'.*one at a time"):
        load_ct([tmp_path / "a.png", tmp_path / "b.jpg"])  # several files are one DICOM series


def test_bad_zips(tmp_path, monkeypatch):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("ok/IM1", b"x" * 10)
        zf.writestr("../../outside.dcm", b"x" * 10)
    expect_error(evil, "unsafe", "outside.dcm")
    assert not (tmp_path.parent / "outside.dcm").exists()

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.bin", b"\0" * 100_000)
    monkeypatch.setattr(archives, "MAX_ZIP_UNCOMPRESSED_BYTES", 10_000)
    expect_error(bomb, "unpack")

    junk = tmp_path / "junk.zip"
    with zipfile.ZipFile(junk, "w") as zf:
        zf.writestr("a.txt", "hello")
    monkeypatch.undo()
    expect_error(junk, "no DICOM")
    (tmp_path / "fake.zip").write_bytes(b"PK not really a zip archive")
    expect_error(tmp_path / "fake.zip", "fake.zip")


def test_ctvolume_checks_shapes():
    vol = CTVolume(
        hu=np.zeros((2, 3, 4)), spacing_mm=(1, 1, 1), affine_ras=np.diag([-1.0, -1, 1, 1]), kind="image",
        source_affine_ras=np.diag([-1.0, -1, 1, 1]), source_shape_xyz=(4, 3, 2),
    )
    assert vol.hu.dtype == np.float32 and vol.n_slices == 2
    with pytest.raises(ValueError, match="shaped like"):
        vol.to_source_xyz(np.zeros((2, 4, 3)))
    with pytest.raises(ValueError):
        CTVolume(hu=np.zeros((3, 4)), spacing_mm=(1, 1, 1), affine_ras=np.eye(4), kind="image",
                 source_affine_ras=np.eye(4), source_shape_xyz=(4, 3, 1))


# --------------------------------------------------------------------------- real data

needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason="real data folder ../shared/data is absent")


@needs_data
def test_real_spleen_nifti():
    image = DATA_DIR / "Task09_Spleen_sample" / "imagesTr" / "spleen_8.nii.gz"
    if not image.exists():
        pytest.skip("spleen_8 sample absent")
    vol = load_ct(image)
    assert vol.hu.shape == (32, 512, 512)
    assert vol.spacing_mm == pytest.approx((7.5, 0.785, 0.785), abs=1e-3)
    assert -1100 <= vol.hu.min() <= -1000 and vol.hu.max() > 500
    assert vol.hu[:, :5, :5].max() < -900  # air outside the patient
    mid = vol.hu[16]
    bone_rows, _ = np.nonzero(mid[:, 200:312] > 300)
    assert bone_rows.mean() > 256  # spine posterior = bottom
    label = read_nifti_mask(DATA_DIR / "Task09_Spleen_sample" / "labelsTr" / "spleen_8.nii.gz", like=vol)
    assert label.shape == vol.hu.shape and label.dtype == np.uint8
    assert set(np.unique(label)) == {0, 1}
    assert 15 <= int(label.any(axis=(1, 2)).sum()) <= 25


@needs_data
def test_real_ircadb_dicom_series():
    folder = DATA_DIR / "ircadb_patient1" / "PATIENT_DICOM"
    if not folder.is_dir():
        pytest.skip("ircadb series absent")
    vol = load_ct(folder)
    assert vol.kind == "dicom" and vol.hu.shape == (129, 512, 512)
    assert vol.spacing_mm == pytest.approx((1.6, 0.57, 0.57), abs=1e-3)
    assert len(vol.dicom_datasets) == 129
    assert "129 slices" in vol.description
    mid = vol.hu[64]
    bone_rows, _ = np.nonzero(mid[:, 200:312] > 300)
    assert bone_rows.size > 100 and bone_rows.mean() > 256  # spine in the lower half (posterior)


# --------------------------------------------------------------------------- damaged, oversized, sources

def _noisy_nifti_gz(path: Path) -> bytes:
    rng = np.random.default_rng(5)
    data = rng.integers(-1000, 1000, (64, 64, 8)).astype(np.int16)
    write_nifti(path, data, np.diag([-1.0, -1.0, 2.0, 1.0]))
    return path.read_bytes()


def test_damaged_gzip_nifti_is_refused(tmp_path):
    good = _noisy_nifti_gz(tmp_path / "good.nii.gz")
    assert load_ct(tmp_path / "good.nii.gz").hu.shape == (8, 64, 64)
    # 2 kB of flipped bytes in the middle of the compressed data
    flipped = bytearray(good)
    mid = len(flipped) // 2
    flipped[mid : mid + 2048] = bytes(b ^ 0xFF for b in flipped[mid : mid + 2048])
    (tmp_path / "flipped.nii.gz").write_bytes(bytes(flipped))
    expect_error(tmp_path / "flipped.nii.gz", "flipped.nii.gz", "damaged")
    # only the stored CRC-32 changed: the data decompresses but the checksum does not match
    bad_crc = bytearray(good)
    bad_crc[-8] ^= 0x01
    (tmp_path / "crc.nii.gz").write_bytes(bytes(bad_crc))
    expect_error(tmp_path / "crc.nii.gz", "damaged", "checksum")
    (tmp_path / "short.nii.gz").write_bytes(good[: len(good) - 100])
    expect_error(tmp_path / "short.nii.gz", "truncated")
    # label files are verified the same way
    vol = load_ct(tmp_path / "good.nii.gz")
    with pytest.raises(CTLoadError, match="damaged"):
        read_nifti_mask(tmp_path / "flipped.nii.gz", like=vol)


def test_oversized_nifti_refused_from_its_header(tmp_path):
    """A header declaring 512×512×2500 voxels is refused before any data is decoded."""
    import gzip
    import tracemalloc

    header = nib.Nifti1Header()
    header.set_data_shape((512, 512, 2500))
    header.set_data_dtype(np.int16)
    header.set_qform(np.diag([-0.7, -0.7, 1.0, 1.0]), code=1)
    body = io_bytes(header) + b"\0" * 4096  # the data itself would be 1.3 GB; it is never read
    (tmp_path / "huge.nii.gz").write_bytes(gzip.compress(body))
    tracemalloc.start()
    with pytest.raises(CTLoadError) as info:
        load_ct(tmp_path / "huge.nii.gz", max_voxels=512 * 512 * 1000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "too large" in str(info.value) and "2500 slices of 512×512" in str(info.value)
    assert peak < 20e6, f"{peak / 1e6:.0f} MB allocated to refuse a header"
    # without a limit the same file is refused as truncated (its data is missing), not decoded as noise
    expect_error(tmp_path / "huge.nii.gz", "truncated")


def io_bytes(header) -> bytes:
    import io as _io

    buf = _io.BytesIO()
    header.write_to(buf)
    buf.write(b"\0" * (int(header.get_data_offset()) - buf.tell()))
    return buf.getvalue()


def test_dicom_size_checked_before_decoding(tmp_path, monkeypatch):
    from iunet.io import dicom

    datasets, _, _ = axial_series()
    write_shuffled(tmp_path / "s", datasets)
    monkeypatch.setattr(dicom, "_decode_slices", lambda *a: pytest.fail("pixel data decoded before the size check"))
    expect = 6 * 20 * 24
    with pytest.raises(CTLoadError, match="too large"):
        load_ct(tmp_path / "s", max_voxels=expect - 1)
    monkeypatch.undo()
    assert load_ct(tmp_path / "s", max_voxels=expect).n_slices == 6


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares width × height (grey, 8 bit) with one tiny data chunk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_giant_and_tiny_images(tmp_path):
    _png_header_only(tmp_path / "giant.png", 30000, 30000)
    expect_error(tmp_path / "giant.png", "too large", "2048")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "dot.png")
    assert load_ct(tmp_path / "dot.png").hu.shape == (1, 1, 1)  # the library reads it; the app refuses it


def test_messages_never_show_server_folders(tmp_path):
    folder = tmp_path / "gradio" / "0123456789abcdef"
    folder.mkdir(parents=True)
    (folder / "notes.nii.gz").write_text("this is a text file with a NIfTI name\n" * 10)
    message = expect_error(folder / "notes.nii.gz", "notes.nii.gz", "not a NIfTI")
    assert str(tmp_path) not in message and "0123456789abcdef" not in message
    message = expect_error(folder / "missing.dcm", "does not exist")
    assert str(tmp_path) not in message


def test_slice_sources_follow_display_slices(tmp_path):
    """display slice z ↔ the file it came from, also when the stored order is reversed."""
    for flip in (False, True):
        datasets, _, _ = dicom_series(
            row_cos=[1, 0, 0], col_cos=[0, 1, 0], spacing_rc=(1.0, 1.0), shape_rc=(20, 24),
            first_ipp_lps=[-HI_WORLD_MM[0], -HI_WORLD_MM[1], HI_WORLD_MM[2] if flip else LO_WORLD_MM[2]],
            step_lps=[0, 0, -2.0 if flip else 2.0], n_slices=6,
        )
        if flip:  # slice normal pointing inferior: sorted order k runs superior → inferior
            for ds in datasets:
                ds.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
                ds.ImagePositionPatient = [HI_WORLD_MM[0], *list(ds.ImagePositionPatient)[1:]]
        write_shuffled(tmp_path / f"s{flip}", datasets)
        vol = load_ct(tmp_path / f"s{flip}")
        assert len(vol.slice_sources) == 6
        for z in range(6):
            src = vol.slice_source(z)
            assert float(src.dataset.ImagePositionPatient[2]) == pytest.approx(LO_WORLD_MM[2] + 2.0 * z)
            assert src.dataset is vol.dicom_datasets[z] and src.frame is None
    nifti = write_nifti(tmp_path / "v.nii.gz", np.zeros((4, 4, 3)), np.eye(4))
    assert load_ct(nifti).slice_sources == () and load_ct(nifti).slice_source(0) is None


def test_nifti_with_header_extensions(tmp_path):
    """Extensions after the header (TotalSegmentator stores its label names there) are read."""
    data = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    img = nib.Nifti1Image(data, np.diag([-1.0, -1.0, 2.0, 1.0]))
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"label names " * 400))
    path = tmp_path / "with_extension.nii.gz"
    nib.save(img, str(path))
    import gzip
    import struct

    with gzip.open(path) as f:
        vox_offset = struct.unpack("<f", f.read(112)[108:112])[0]
    assert vox_offset > 540  # the data starts after the extension, beyond NIfTI-2's header size
    vol = load_ct(path)
    np.testing.assert_array_equal(vol.to_source_xyz(vol.hu), data)
    np.testing.assert_array_equal(vol.to_source_xyz(read_nifti_mask(path, like=vol)), data)
