"""NRRD and MetaImage input (iunet.io.nrrd, iunet.io.metaimage): the phantom of test_ct_io written
by two independent writers (SimpleITK, as 3D Slicer and ITK programs write these formats, and
pynrrd for NRRD variants SimpleITK does not write) lands in the same display orientation as every
other input; bad files give a CTLoadError that says what is wrong."""
from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from iunet.ct_io import CTLoadError, load_ct, read_nifti_mask, save_mask_nifti
from iunet.io import CTTooLargeError
from test_ct_io import BLOCK_HU, assert_display_layout, expected_display, nifti_grid

LPS = np.diag([-1.0, -1.0, 1.0])
SITK_FILES = {  # name → compressed
    "ct.nrrd": False, "ct_gz.nrrd": True, "ct.mha": False, "ct_z.mha": True, "ct.mhd": False, "ct_z.mhd": True,
}


def sitk_image(data_ijk: np.ndarray, affine_ras: np.ndarray, dtype=np.int16) -> sitk.Image:
    """A SimpleITK image of voxels (i, j, k) with a voxel → RAS affine (ITK stores LPS)."""
    img = sitk.GetImageFromArray(np.asarray(data_ijk).astype(dtype).transpose(2, 1, 0))
    spacing = np.linalg.norm(affine_ras[:3, :3], axis=0)
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (LPS @ (affine_ras[:3, :3] / spacing)).ravel()])
    img.SetOrigin([float(v) for v in LPS @ affine_ras[:3, 3]])
    return img


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "PSR"])
@pytest.mark.parametrize("name", sorted(SITK_FILES))
def test_sitk_written_volumes_land_in_display(tmp_path, name, axcodes):
    affine, data = nifti_grid(axcodes)
    sitk.WriteImage(sitk_image(data, affine), str(tmp_path / name), SITK_FILES[name])
    vol = load_ct(tmp_path / name)
    want_hu, want_affine = expected_display()
    assert vol.kind == ("nrrd" if name.endswith(".nrrd") else "metaimage")
    np.testing.assert_array_equal(vol.hu, want_hu)
    np.testing.assert_allclose(vol.affine_ras, want_affine, atol=1e-6)
    np.testing.assert_allclose(vol.source_affine_ras, affine, atol=1e-6)
    assert vol.spacing_mm == pytest.approx((2.0, 1.0, 1.0))
    assert_display_layout(vol.hu)
    assert ("sagittal" in vol.description) == (axcodes == "PSR")
    # The exported mask lies on the input's own grid, where ITK puts it.
    out = save_mask_nifti(vol, vol.hu == BLOCK_HU, tmp_path / "mask")
    back = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back).transpose(2, 1, 0), (data == BLOCK_HU).astype(np.uint8))
    np.testing.assert_allclose(back.GetOrigin(), LPS @ affine[:3, 3], atol=1e-5)
    np.testing.assert_allclose(np.reshape(back.GetDirection(), (3, 3)), LPS @ (affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)), atol=1e-6)
    np.testing.assert_array_equal(read_nifti_mask(out, like=vol), (want_hu == BLOCK_HU).astype(np.uint8))


def test_oblique_direction_matches_nifti(tmp_path):
    """A rotated grid (each MetaImage TransformMatrix row one axis) gives what the NIfTI gives."""
    affine, data = nifti_grid("RAS")
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a), 0, 0], [np.sin(a), np.cos(a), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    img = sitk_image(data, rot @ affine)
    for name in ("ct.nii.gz", "ct.mha", "ct.nrrd"):
        sitk.WriteImage(img, str(tmp_path / name))
    ref = load_ct(tmp_path / "ct.nii.gz")
    for name in ("ct.mha", "ct.nrrd"):
        vol = load_ct(tmp_path / name)
        np.testing.assert_array_equal(vol.hu, ref.hu)
        np.testing.assert_allclose(vol.affine_ras, ref.affine_ras, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {"encoding": "raw", "endian": "big", "space": "right-anterior-superior"},
        {"encoding": "gzip", "space": "left-anterior-superior"},
        {"encoding": "bzip2", "space": "left-posterior-superior"},
        {"encoding": "ascii", "space": "right-anterior-superior"},
    ],
)
def test_pynrrd_variants(tmp_path, options):
    affine, data = nifti_grid("LAS")
    space = options["space"]
    signs = {"right-anterior-superior": (1, 1, 1), "left-anterior-superior": (-1, 1, 1), "left-posterior-superior": (-1, -1, 1)}[space]
    to_space = np.diag(signs)
    header = {
        "space": space,
        "space directions": (to_space @ affine[:3, :3]).T,  # one row per axis
        "space origin": to_space @ affine[:3, 3],
        "kinds": ["domain"] * 3,
        "encoding": options["encoding"],
        "endian": options.get("endian", "little"),
    }
    nrrd.write(str(tmp_path / "ct.nrrd"), data.astype(np.int16), header, index_order="F")
    vol = load_ct(tmp_path / "ct.nrrd")
    want_hu, want_affine = expected_display()
    np.testing.assert_array_equal(vol.hu, want_hu)
    np.testing.assert_allclose(vol.affine_ras, want_affine, atol=1e-6)


def test_detached_headers_given_with_their_data(tmp_path):
    """An .nhdr or .mhd uploaded with its data file (each in its own folder, as a web upload
    stores them), in a folder, or in a .zip."""
    affine, data = nifti_grid("LPS")
    want_hu, _ = expected_display()
    src = tmp_path / "src"
    src.mkdir()
    nrrd.write(str(src / "ct.nhdr"), data.astype(np.int16), {"space": "left-posterior-superior",
               "space directions": (LPS @ affine[:3, :3]).T, "space origin": LPS @ affine[:3, 3],
               "encoding": "gzip"}, detached_header=True, index_order="F")
    sitk.WriteImage(sitk_image(data, affine), str(src / "mr.mhd"), True)
    data_files = {"ct.nhdr": "ct.raw.gz", "mr.mhd": "mr.zraw"}
    for header, data_name in data_files.items():
        assert (src / data_name).is_file()
        uploads = []
        for i, name in enumerate((data_name, header)):  # the data file first: order does not matter
            folder = tmp_path / f"upload_{header}_{i}"
            folder.mkdir()
            uploads.append(folder / name)
            uploads[-1].write_bytes((src / name).read_bytes())
        np.testing.assert_array_equal(load_ct(uploads).hu, want_hu)
        np.testing.assert_array_equal(load_ct(src / header).hu, want_hu)  # the data file beside it
        with zipfile.ZipFile(tmp_path / f"{header}.zip", "w") as zf:
            zf.write(src / header, f"case/{header}")
            zf.write(src / data_name, f"case/{data_name}")
        np.testing.assert_array_equal(load_ct(tmp_path / f"{header}.zip").hu, want_hu)
        with pytest.raises(CTLoadError, match=f"separate file, '{data_name}', which was not given"):
            load_ct(uploads[1])
    with pytest.raises(CTLoadError, match="2 NRRD / MetaImage files were given together"):
        load_ct([src / "ct.nhdr", src / "mr.mhd", src / "mr.zraw"])
    with pytest.raises(CTLoadError, match="contains 2 volume files"):
        load_ct(src)


def test_2d_and_spacings_only_headers(tmp_path):
    affine, data = nifti_grid("LPS")
    want_hu, _ = expected_display()
    sitk.WriteImage(sitk_image(data, affine)[:, :, 5], str(tmp_path / "slice.mha"))
    vol = load_ct(tmp_path / "slice.mha")
    assert vol.hu.shape == (1, 20, 24)
    np.testing.assert_array_equal(vol.hu[0], want_hu[5])
    # Bare spacings (no space): ITK's default LPS axes, said in the notes.
    nrrd.write(str(tmp_path / "bare.nrrd"), data.astype(np.int16), {"spacings": [1.0, 1.0, 2.0]}, index_order="F")
    vol = load_ct(tmp_path / "bare.nrrd")
    np.testing.assert_array_equal(vol.hu, want_hu)  # stored LPS, so LPS axes are right
    assert vol.spacing_mm == pytest.approx((2.0, 1.0, 1.0))
    assert any("no orientation in the header" in n for n in vol.notes)


def _write(path: Path, header: str, payload: bytes = b"") -> Path:
    path.write_bytes(header.encode() + payload)
    return path


NRRD_HEAD = "NRRD0004\ntype: short\ndimension: 3\nsizes: 4 3 2\nspace: left-posterior-superior\n" \
            "space directions: (1,0,0) (0,1,0) (0,0,2)\nendian: little\n"


@pytest.mark.parametrize(
    "header, payload, message",
    [
        (NRRD_HEAD + "encoding: raw\n\n", b"\0" * 10, "is truncated"),
        (NRRD_HEAD + "encoding: gzip\n\n", gzip.compress(b"\0" * 48)[:-6], "truncated|damaged"),
        (NRRD_HEAD + "encoding: gzip\n\n", gzip.compress(b"\0" * 400), "more voxel data than its header declares"),
        (NRRD_HEAD + "encoding: hex\n\n", b"", "encoding 'hex'"),
        (NRRD_HEAD.replace("short", "block") + "encoding: raw\n\n", b"", "type 'block'"),
        (NRRD_HEAD + "encoding: raw\ndata file: ../../etc/passwd\n\n", b"", "only a file beside the header"),
        (NRRD_HEAD + "encoding: raw\ndata file: LIST\n\n", b"", "several data files"),
        ("NRRD0004\ntype: short\ndimension: 4\nsizes: 3 4 3 2\nkinds: RGB-color domain domain domain\n"
         "space: left-posterior-superior\nspace directions: none (1,0,0) (0,1,0) (0,0,2)\nencoding: raw\n\n",
         b"\0" * 144, "non-spatial axis"),
        ("NRRD0004\ntype: short\ndimension: 3\nsizes: 4 3 2\nencoding: raw\nspace: left-posterior-superior\n"
         "space directions: (1,0,0) (0,1,0)\n\n", b"", "'space directions' gives 2 axes"),
        ("NRRD0004\ntype: short\nsizes: 4 3 2\nencoding: raw\n\n", b"", "no 'dimension' field"),
        ("NRRD0004\ngarbage line\n\n", b"", "is not 'field: value'"),
        ("ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nElementNumberOfChannels = 3\n"
         "ElementDataFile = LOCAL\n", b"\0" * 144, "3 value\\(s\\) per voxel"),
        ("ObjectType = Image\nNDims = 4\nDimSize = 4 3 2 5\nElementType = MET_SHORT\nElementDataFile = LOCAL\n",
         b"\0" * 240, "several\\s+time points"),
        ("ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_STRING\nElementDataFile = LOCAL\n",
         b"", "type 'MET_STRING'"),
        ("ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nCompressedData = True\n"
         "ElementDataFile = LOCAL\n", b"not zlib at all", "cannot be unpacked"),
        ("ObjectType = Image\nNDims = 3\nDimSize = 4 3\nElementType = MET_SHORT\nElementDataFile = LOCAL\n",
         b"", "'DimSize' has 2 value"),
        ("ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nElementDataFile = missing.raw\n",
         b"", "'missing.raw', which was not given"),
        ("ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementSpacing = 1 1 nan\nElementType = MET_SHORT\n"
         "ElementDataFile = LOCAL\n", b"\0" * 48, "not finite"),
    ],
    ids=lambda v: v[:24] if isinstance(v, str) else None,
)
def test_bad_files_are_refused_with_a_reason(tmp_path, header, payload, message):
    suffix = ".nrrd" if header.startswith("NRRD") else ".mha"
    with pytest.raises(CTLoadError, match=message):
        load_ct(_write(tmp_path / f"bad{suffix}", header, payload))


def test_size_is_checked_from_the_header(tmp_path):
    """A header that declares 4000 slices of 512² is refused as too large before any voxel is read."""
    path = _write(tmp_path / "huge.mha", "ObjectType = Image\nNDims = 3\nDimSize = 512 512 4000\n"
                  "ElementType = MET_SHORT\nElementDataFile = LOCAL\n", b"\0" * 64)
    with pytest.raises(CTTooLargeError, match="too large"):
        load_ct(path, max_voxels=512 * 512 * 1000)
    path = _write(tmp_path / "wide.nrrd", "NRRD0004\ntype: short\ndimension: 3\nsizes: 5000 10 1\nencoding: raw\n\n")
    with pytest.raises(CTLoadError, match="too large: it has slices of 5000×10"):
        load_ct(path)


def test_content_is_recognised_without_a_suffix(tmp_path):
    affine, data = nifti_grid("RAS")
    want_hu, _ = expected_display()
    for name in ("ct.nrrd", "ct.mha"):
        sitk.WriteImage(sitk_image(data, affine), str(tmp_path / name))
        (tmp_path / name).rename(tmp_path / f"{name}.bin")
        np.testing.assert_array_equal(load_ct(tmp_path / f"{name}.bin").hu, want_hu)


def test_nifti_of_the_same_image_is_unchanged(tmp_path):
    """A NIfTI is still read by the NIfTI reader (the suffix decides before the content)."""
    affine, data = nifti_grid("RAS")
    sitk.WriteImage(sitk_image(data, affine), str(tmp_path / "ct.nii.gz"))
    assert load_ct(tmp_path / "ct.nii.gz").kind == "nifti"
    assert nib.load(str(tmp_path / "ct.nii.gz")).shape == data.shape
