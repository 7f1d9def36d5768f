"""NRRD and MetaImage input (iunet.io.nrrd, iunet.io.metaimage): the phantom of test_ct_io written
by two independent writers (SimpleITK, as 3D Slicer and ITK programs write these formats, and
pynrrd for NRRD variants SimpleITK does not write) lands in the same display orientation as every
other input; bad files give a CTLoadError that says what is wrong."""
from __future__ import annotations

import gzip
import time
import zipfile
import zlib
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


def _rotation(axis: int, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    i, j = [k for k in range(3) if k != axis]
    rot = np.eye(3)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
    return rot


# ITK direction matrices (LPS, columns = axis directions): none is symmetric, so reading a
# MetaImage TransformMatrix transposed (rows vs columns) would show.
ITK_DIRECTIONS = {
    "oblique": _rotation(0, 17) @ _rotation(1, -31) @ _rotation(2, 12),
    "flipped": np.diag([-1.0, 1.0, -1.0]),
    "permuted": np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]),
    "permuted_flipped": np.array([[0.0, -1, 0], [0, 0, 1], [-1, 0, 0]]),
    "oblique_permuted": _rotation(2, 25) @ np.array([[0.0, 1, 0], [0, 0, -1], [1, 0, 0]]),
}


@pytest.mark.parametrize("direction", sorted(ITK_DIRECTIONS))
def test_sitk_orientations_match_the_nifti_of_the_same_image(tmp_path, direction):
    """Oblique, flipped and permuted grids (anisotropic voxels, off-centre origin) written by
    SimpleITK as .mha, .mhd, .nrrd and .nhdr land exactly where the NIfTI SimpleITK writes lands."""
    data = np.random.default_rng(0).integers(-1000, 1000, size=(7, 5, 6)).astype(np.int16)  # (k, j, i)
    img = sitk.GetImageFromArray(data)
    img.SetSpacing([0.7, 1.3, 2.1])
    img.SetOrigin([-12.5, 30.25, 7.0])
    img.SetDirection([float(v) for v in ITK_DIRECTIONS[direction].ravel()])
    for name in ("ct.nii.gz", "ct.mha", "ct.mhd", "ct.nrrd", "ct.nhdr"):
        sitk.WriteImage(img, str(tmp_path / name), name in ("ct.mhd", "ct.nrrd"))
    ref = load_ct(tmp_path / "ct.nii.gz")
    for name in ("ct.mha", "ct.mhd", "ct.nrrd", "ct.nhdr"):
        vol = load_ct(tmp_path / name)
        np.testing.assert_array_equal(vol.hu, ref.hu, err_msg=name)
        np.testing.assert_allclose(vol.affine_ras, ref.affine_ras, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(vol.source_affine_ras, ref.source_affine_ras, atol=1e-5, err_msg=name)


# Hand-written files in header variants of the specifications (teem's NRRD, MetaIO), 4×3×2 voxels
# (i, j, k) on an oblique grid; SimpleITK (ITK's own readers) reads each as the reference.
_VALS = np.random.default_rng(1).integers(-1000, 1000, size=(4, 3, 2))
_ROT = _rotation(2, 20) @ _rotation(0, 17)  # LPS directions (columns), not symmetric
_SPACING = (0.8, 1.2, 2.5)
_NRRD_GRID = ("type: short\ndimension: 3\nsizes: 4 3 2\nspace: left-posterior-superior\nspace directions: "
              + " ".join("(" + ",".join(f"{x:.12g}" for x in _ROT[:, c] * _SPACING[c]) + ")" for c in range(3))
              + "\nspace origin: (1,2,3)\n")
_META_GRID = ("ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementSpacing = 0.8 1.2 2.5\nTransformMatrix = "
              + " ".join(f"{x:.12g}" for x in _ROT.T.ravel()) + "\nOffset = 1 2 3\n")  # one row per axis


def _vals(dtype: str) -> bytes:
    return np.asarray(_VALS, dtype=dtype).tobytes(order="F")  # i fastest


def _text_vals() -> bytes:
    return " ".join(map(str, _VALS.ravel(order="F"))).encode() + b"\n"


def _spec_variants() -> dict[str, dict[str, bytes]]:
    """name → {file name: bytes}; the first file is the one to load."""
    z = zlib.compress(_vals("<i2"))
    nrrd_head = "NRRD0004\n" + _NRRD_GRID
    local = _META_GRID + "ElementType = MET_SHORT\nElementDataFile = LOCAL\n"
    header_size = 0
    for _ in range(3):  # HeaderSize counts from the start of the .mha itself (MetaIO's seek)
        mha_head = local.replace("ElementType", f"HeaderSize = {header_size}\nElementType").encode()
        header_size = len(mha_head) + 6
    return {
        "nrrd line skip + byte skip": {
            "ct.nhdr": (nrrd_head + "encoding: raw\nendian: little\nline skip: 2\nbyte skip: 3\ndata file: ct.raw\n").encode(),
            "ct.raw": b"line one\nline two\nJNK" + _vals("<i2"),
        },
        "nrrd byte skip -1, big endian": {"ct.nrrd": (nrrd_head + "encoding: raw\nendian: big\nbyte skip: -1\n\n").encode() + b"junk" + _vals(">i2")},
        "nrrd gzip byte skip (of the unpacked data)": {
            "ct.nrrd": (nrrd_head + "encoding: gzip\nendian: little\nbyte skip: 5\n\n").encode() + gzip.compress(b"\1" * 5 + _vals("<i2"))},
        "nrrd ascii": {"ct.nrrd": (nrrd_head + "encoding: ascii\n\n").encode() + _text_vals()},
        "nrrd LAS float big endian": {
            "ct.nrrd": (nrrd_head.replace("short", "float").replace("left-posterior", "left-anterior")
                        + "encoding: raw\nendian: big\n\n").encode() + _vals(">f4")},
        "nrrd 3D Slicer list axis of size 1 (none direction)": {
            "ct.nrrd": (nrrd_head.replace("dimension: 3\nsizes: 4 3 2", "dimension: 4\nsizes: 1 4 3 2").replace("directions: ", "directions: none ")
                        + "kinds: list domain domain domain\nencoding: raw\nendian: little\n\n").encode() + _vals("<i2")},
        "nrrd nan spacing of a non-spatial axis": {
            "ct.nrrd": b"NRRD0004\ntype: short\ndimension: 4\nsizes: 1 4 3 2\nkinds: list domain domain domain\n"
                       b"spacings: nan 0.8 1.2 2.5\nencoding: raw\nendian: little\n\n" + _vals("<i2")},
        "mhd HeaderSize, big-endian float, Position": {
            "ct.mhd": (_META_GRID.replace("Offset", "Position") + "HeaderSize = 10\nBinaryDataByteOrderMSB = True\n"
                       "ElementType = MET_FLOAT\nElementDataFile = ct.raw\n").encode(),
            "ct.raw": b"0123456789" + _vals(">f4")},
        "mhd HeaderSize -1, ImagePosition": {
            "ct.mhd": (_META_GRID.replace("Offset", "ImagePosition") + "HeaderSize = -1\nElementType = MET_SHORT\nElementDataFile = ct.raw\n").encode(),
            "ct.raw": b"a header of some other program" + _vals("<i2")},
        "mha HeaderSize of LOCAL data": {"ct.mha": mha_head + b"\0" * 6 + _vals("<i2")},
        "mha CompressedDataSize, bytes after it": {
            "ct.mha": (_META_GRID + f"CompressedData = True\nCompressedDataSize = {len(z)}\nElementType = MET_SHORT\n"
                       "ElementDataFile = LOCAL\n").encode() + z + b"\n\ntrailing bytes"},
        "mhd compressed with HeaderSize": {
            "ct.mhd": (_META_GRID + f"CompressedData = True\nCompressedDataSize = {len(z)}\nHeaderSize = 10\n"
                       "ElementType = MET_SHORT\nElementDataFile = ct.zraw\n").encode(),
            "ct.zraw": b"0123456789" + z},
        "mha ascii, Orientation and Origin": {
            "ct.mha": (_META_GRID.replace("TransformMatrix", "Orientation").replace("Offset", "Origin")
                       + "BinaryData = False\nElementType = MET_SHORT\nElementDataFile = LOCAL\n").encode() + _text_vals()},
    }


@pytest.mark.parametrize("variant", sorted(_spec_variants()))
def test_spec_variants_read_as_itk_reads_them(tmp_path, variant):
    files = _spec_variants()[variant]
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    path = tmp_path / next(iter(files))
    sitk.WriteImage(sitk.ReadImage(str(path)), str(tmp_path / "itk.nii.gz"))
    ref = load_ct(tmp_path / "itk.nii.gz")
    vol = load_ct(path)
    np.testing.assert_array_equal(vol.hu, ref.hu)
    np.testing.assert_allclose(vol.affine_ras, ref.affine_ras, atol=1e-5)


def test_nrrd_time_spaces_drop_the_time_coordinate(tmp_path):
    """'right-anterior-superior-time' (RAST) has 4 world coordinates (ITK refuses it): the first 3 are RAS."""
    path = _write(tmp_path / "rast.nrrd", "NRRD0004\ntype: short\ndimension: 3\nsizes: 4 3 2\nspace: RAST\n"
                  "space directions: (0.8,0,0,0) (0,1.2,0,0) (0,0,2.5,0)\nspace origin: (1,2,3,0)\nencoding: raw\n"
                  "endian: little\n\n", _vals("<i2"))
    vol = load_ct(path)
    np.testing.assert_allclose(vol.source_affine_ras, np.diag([0.8, 1.2, 2.5, 1.0]) + np.c_[np.zeros((4, 3)), [1, 2, 3, 0]])
    np.testing.assert_array_equal(vol.to_source_xyz(vol.hu), _VALS)


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
        # Damaged headers: each a CTLoadError that says what is wrong, never a raw ValueError /
        # IndexError / OverflowError, a hang or a huge allocation.
        ("NRRD0004\ntype: short\ndimension: 0\nsizes: \nencoding: raw\n\n", b"", "'dimension: 0'"),
        ("NRRD0004\ntype: short\ndimension: -2\nsizes: 4 3\nencoding: raw\n\n", b"", "'dimension: -2'"),
        ("NRRD0004", b"", "no 'type' field"),
        ("NRRD0004\n", bytes(range(256)) * 4, "not text"),
        (NRRD_HEAD.replace("4 3 2", "4 3 2.5") + "encoding: raw\n\n", b"", "'sizes' \\('4 3 2.5'\\) is not a list of numbers"),
        (NRRD_HEAD.replace("4 3 2", "4 -3 2") + "encoding: raw\n\n", b"", "contains no voxels"),
        (NRRD_HEAD.replace("4 3 2", "4 3 99999999999999999999999") + "encoding: gzip\n\n", gzip.compress(b"\0" * 48),
         "axis of 99999999999999999999999 voxels"),
        (NRRD_HEAD + "encoding: raw\ndata file: \n\n", b"", "names no voxel data file"),
        (NRRD_HEAD + "encoding: raw\ndata file: bad.nrrd\n\n", b"\0" * 48, "names itself"),
        (NRRD_HEAD + "encoding: raw\nline skip: 1000000000\n\n", b"\0" * 48, "'line skip: 1000000000' passes the end"),
        (NRRD_HEAD + "encoding: raw\nline skip: x\n\n", b"\0" * 48, "'line skip' \\('x'\\) is not a list of numbers"),
        (NRRD_HEAD + "encoding: raw\nbyte skip: -5\n\n", b"\0" * 48, "'byte skip: -5'"),
        (NRRD_HEAD + "encoding: gzip\nbyte skip: -1\n\n", gzip.compress(b"\0" * 48), "only with raw encoding"),
        (NRRD_HEAD + "encoding: gzip\nbyte skip: 99999999999999999999\n\n", gzip.compress(b"\0" * 48), "skips must be 0 or more"),
        ("NRRD0004\ntype: short\ndimension: 3\nsizes: 4 3 5\nkinds: domain domain time\nencoding: raw\n\n",
         b"\0" * 120, "non-spatial axis \\(time\\)"),
        (NRRD_HEAD.replace("left-posterior-superior", "left-posterior-superior-time") + "encoding: raw\n\n", b"\0" * 48,
         "'space directions' has 3 value"),
        ("ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nElementDataFile = \n", b"", "names no voxel data file"),
        ("ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nElementDataFile = bad.mha\n",
         b"\0" * 48, "names itself"),
        ("ObjectType = Image\nNDims = 3\nDimSize = 4 3 99999999999999999999999\nElementType = MET_SHORT\n"
         "CompressedData = True\nElementDataFile = LOCAL\n", zlib.compress(b"\0" * 48), "axis of 99999999999999999999999 voxels"),
        ("ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nHeaderSize = -2\nElementDataFile = LOCAL\n",
         b"\0" * 48, "'HeaderSize = -2'"),
        ("ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nCompressedData = True\n"
         "CompressedDataSize = 500\nElementDataFile = LOCAL\n", zlib.compress(b"\0" * 48), "declares 500 bytes of compressed"),
        ("ObjectType = Image\nNDims = 0\nDimSize = \nElementType = MET_SHORT\nElementDataFile = LOCAL\n", b"", "0-dimensional"),
        ("ElementDataFile = LOCAL\n", b"\0" * 48, "no 'NDims' line"),
    ],
    ids=lambda v: v[:24] if isinstance(v, str) else "",
)
def test_bad_files_are_refused_with_a_reason(tmp_path, header, payload, message):
    suffix = ".nrrd" if header.startswith("NRRD") else ".mha"
    start = time.monotonic()
    with pytest.raises(CTLoadError, match=message) as info:
        load_ct(_write(tmp_path / f"bad{suffix}", header, payload))
    assert "could not be read as a CT" not in str(info.value)  # a reader's own message, not a raw exception
    assert time.monotonic() - start < 5


def test_detached_data_file_that_is_a_folder(tmp_path):
    (tmp_path / "ct.raw").mkdir()
    for header in (NRRD_HEAD + "encoding: raw\ndata file: ct.raw\n",
                   "ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nElementDataFile = ct.raw\n"):
        path = _write(tmp_path / ("ct.nhdr" if header.startswith("NRRD") else "ct.mhd"), header)
        with pytest.raises(CTLoadError, match="'ct.raw' as its voxel data file, but that is a folder"):
            load_ct(path)


def test_data_file_beside_the_header_wins_over_a_namesake(tmp_path):
    """In a folder (or .zip) with the header's data file beside it and another file of the same name
    elsewhere, the one beside the header is read."""
    (tmp_path / "a_copy").mkdir()
    (tmp_path / "case").mkdir()
    (tmp_path / "a_copy" / "ct.raw").write_bytes(b"\0" * 48)  # listed first
    _write(tmp_path / "case" / "ct.mhd", _META_GRID + "ElementType = MET_SHORT\nElementDataFile = ct.raw\n")
    (tmp_path / "case" / "ct.raw").write_bytes(_vals("<i2"))
    vol = load_ct(tmp_path)
    np.testing.assert_array_equal(vol.to_source_xyz(vol.hu), _VALS)


def test_size_is_checked_from_the_header(tmp_path):
    """A header that declares 4000 slices of 512² is refused as too large before any voxel is read."""
    path = _write(tmp_path / "huge.mha", "ObjectType = Image\nNDims = 3\nDimSize = 512 512 4000\n"
                  "ElementType = MET_SHORT\nElementDataFile = LOCAL\n", b"\0" * 64)
    with pytest.raises(CTTooLargeError, match="too large"):
        load_ct(path, max_voxels=512 * 512 * 1000)
    path = _write(tmp_path / "wide.nrrd", "NRRD0004\ntype: short\ndimension: 3\nsizes: 5000 10 1\nencoding: raw\n\n")
    with pytest.raises(CTLoadError, match="too large: it has slices of 5000×10"):
        load_ct(path)
    # Refused from the header alone: its data file is not even there.
    path = _write(tmp_path / "huge.nhdr", "NRRD0004\ntype: short\ndimension: 3\nsizes: 512 512 4000\nencoding: gzip\n"
                  "data file: huge.raw.gz\n")
    with pytest.raises(CTTooLargeError, match="too large"):
        load_ct(path, max_voxels=512 * 512 * 1000)
    # Without a limit, a header declaring far more voxels than its file holds is refused as
    # truncated: no read of the declared size (a petabyte) is attempted.
    for path in (_write(tmp_path / "lie.nrrd", "NRRD0004\ntype: short\ndimension: 3\nsizes: 512 512 2000000000\n"
                        "encoding: raw\n\n", b"\0" * 64),
                 _write(tmp_path / "lie.mha", "ObjectType = Image\nNDims = 3\nDimSize = 512 512 2000000000\n"
                        "ElementType = MET_SHORT\nCompressedData = True\nCompressedDataSize = 1000000000000\n"
                        "ElementDataFile = LOCAL\n", zlib.compress(b"\0" * 64))):
        with pytest.raises(CTLoadError, match="truncated"):
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
