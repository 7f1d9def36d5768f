"""The library as a Python user calls it: the top-level names, and bad arguments refused with a
ValueError that says what was expected (never a silent wrong mask, a deep IndexError or a
numpy-style negative index)."""
from __future__ import annotations

import numpy as np
import pytest

import iunet
from iunet import inference
from iunet.clicks import ClickSize
from iunet.inference import Predictor, Session, VolumeSession, propagate, resolve_device


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    return Predictor(tiny_checkpoint, device="cpu")


def _slice(size=48):
    img = np.full((size, size), -100.0, np.float32)
    img[15:35, 12:36] = 60.0
    return img


def _volume(nz=5, size=48):
    return np.stack([_slice(size)] * nz)


def test_top_level_names_cover_volumes_and_exports():
    from iunet.io import export_dicom_seg, save_mask_png

    assert iunet.VolumeSession is VolumeSession and iunet.ZoomOut is inference.ZoomOut
    assert iunet.export_dicom_seg is export_dicom_seg and iunet.save_mask_png is save_mask_png
    for name in ("VolumeSession", "ZoomOut", "export_dicom_seg", "save_mask_png"):
        assert name in iunet.__all__


@pytest.mark.parametrize("y, x, match", [
    (-0.5, 5, "whole pixel index"),      # int(-0.5) == 0 was taken as row 0
    (20.7, 20, "whole pixel index"),     # truncated to 20 without a word
    (float("nan"), 5, "whole pixel index"),
    (5, float("inf"), "whole pixel index"),
    ("20", 20, "integer pixel index"),
    (True, 20, "integer pixel index"),
    (np.array([20]), 20, "integer pixel index"),
])
def test_session_click_coordinates_must_be_whole_pixel_indices(predictor, y, x, match):
    s = Session(predictor, _slice())
    with pytest.raises(ValueError, match=match):
        s.add_click(y, x, True)
    assert s.clicks == ()


def test_session_accepts_numpy_integers_and_whole_floats(predictor):
    a, b = Session(predictor, _slice()), Session(predictor, _slice())
    a.add_click(np.int64(25), np.uint8(24), np.bool_(True))
    b.add_click(25.0, 24, 1)
    assert a.clicks == b.clicks and type(a.clicks[0].y) is int and a.clicks[0].positive is True
    np.testing.assert_array_equal(a.probability, b.probability)


def test_click_polarity_must_be_a_bool(predictor):
    s = Session(predictor, _slice())
    with pytest.raises(ValueError, match="positive must be True"):
        s.add_click(25, 24, "no")  # bool("no") is True: it was a foreground click
    vs = VolumeSession(predictor, _volume())
    with pytest.raises(ValueError, match="positive must be True"):
        vs.add_click(2, 25, 24, "background")


@pytest.mark.parametrize("z, y, x", [(-0.5, 20, 20), (2.7, 20, 20), (2, 20.5, 20), (float("nan"), 20, 20)])
def test_volume_click_coordinates_must_be_whole_indices(predictor, z, y, x):
    vs = VolumeSession(predictor, _volume())
    with pytest.raises(ValueError, match="whole pixel index"):
        vs.add_click(z, y, x)
    assert vs.clicks == () and not vs.mask.any() and not vs.can_undo


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_hu_is_refused_not_turned_into_an_empty_mask(predictor, bad):
    img = _slice()
    img[20, 20] = bad
    with pytest.raises(ValueError, match="1 value.*NaN or infinite"):
        Session(predictor, img)
    vol = _volume()
    vol[3, 20:22, 20] = bad
    with pytest.raises(ValueError, match="2 value.*NaN or infinite"):
        VolumeSession(predictor, vol)
    with pytest.raises(ValueError, match="NaN or infinite"):
        propagate(predictor, vol, 2, _slice() > 0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        predictor.predict(img)
    with pytest.raises(ValueError, match="NaN or infinite"):
        predictor.predict_batch([_slice(), img], [[], []])


@pytest.mark.parametrize("image", [_slice() > 0, _slice().astype(np.complex64)])
def test_a_mask_or_complex_array_is_not_a_ct(predictor, image):
    with pytest.raises(ValueError, match="Hounsfield units as real numbers"):
        Session(predictor, image)
    with pytest.raises(ValueError, match="Hounsfield units as real numbers"):
        VolumeSession(predictor, np.stack([image] * 3))


def test_wrong_dimensions_name_the_other_session(predictor):
    with pytest.raises(ValueError, match="use VolumeSession"):
        Session(predictor, _volume())
    with pytest.raises(ValueError, match="use Session"):
        VolumeSession(predictor, _slice())
    with pytest.raises(ValueError, match="at least one slice"):
        VolumeSession(predictor, np.zeros((0, 48, 48), np.float32))


@pytest.mark.parametrize("threshold", [0, 1, 50, -0.5, float("nan"), "0.5"])
def test_threshold_must_be_a_probability(predictor, threshold):
    with pytest.raises(ValueError, match="threshold must be a probability"):
        Session(predictor, _slice(), threshold=threshold)
    with pytest.raises(ValueError, match="threshold must be a probability"):
        VolumeSession(predictor, _volume(), threshold=threshold)


@pytest.mark.parametrize("kwargs, match", [
    ({"radius_px": -5}, "radius_px must be"),
    ({"radius_px": float("nan")}, "radius_px must be"),
    ({"radius_px": 0}, "radius_px must be"),
    ({"alpha": 0.0}, "alpha must be"),
    ({"alpha": -1 / 800}, "alpha must be"),
    ({"alpha": float("inf")}, "alpha must be"),
    ({"min_radius_px": 20, "max_radius_px": 2}, "exceeds max_radius_px"),
])
def test_click_size_is_checked_when_made(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClickSize(**kwargs)


def test_click_size_must_be_a_click_size(predictor):
    with pytest.raises(ValueError, match="click_size must be a ClickSize"):
        Session(predictor, _slice(), click_size=5.0)
    with pytest.raises(ValueError, match="click_size must be a ClickSize"):
        VolumeSession(predictor, _volume(), click_size=5.0)


def test_initial_mask_must_be_a_mask_or_probabilities(predictor):
    with pytest.raises(ValueError, match="initial mask must be"):
        Session(predictor, _slice(), initial_mask=np.full((48, 48), np.nan))
    with pytest.raises(ValueError, match="initial mask must be"):
        Session(predictor, _slice(), initial_mask=np.full((48, 48), 255, np.uint8))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), 2.0, (-1.0, 1.0, 1.0), (np.nan, 1.0, 1.0), (0.0, 1.0, 1.0)])
def test_volume_spacing_must_be_three_positive_sizes(predictor, spacing):
    # (1, 1) made volume_ml() the product of two sizes, a negative one a negative volume
    with pytest.raises(ValueError, match="spacing_mm must be three voxel sizes"):
        VolumeSession(predictor, _volume(), spacing_mm=spacing)


def test_slice_indices_are_checked_not_counted_from_the_end(predictor):
    vs = VolumeSession(predictor, _volume())
    with pytest.raises(ValueError, match="slice -1 is outside the volume of 5 slices"):
        vs.set_slice_mask(-1, _slice() > 0, propagate=False)  # was put on the last slice
    assert not vs.mask.any() and not vs.can_undo
    for call in (lambda: vs.set_slice_mask(5, _slice() > 0), lambda: vs.propagate_from(9),
                 lambda: vs.propagate_from(-1), lambda: vs.next_radius_px(5), lambda: vs.view_first_click(-1, "out")):
        with pytest.raises(ValueError, match="outside the volume of 5 slices"):
            call()
    with pytest.raises(ValueError, match="start_index must be a whole pixel index"):
        propagate(predictor, _volume(), 2.5, _slice() > 0)
    vs.set_slice_mask(np.int64(2), _slice() > 0, propagate=False)
    assert vs.slices_with_mask() == [2]


def test_probabilities_are_not_taken_as_masks(predictor):
    prob = np.where(_slice() > 0, 0.2, 0.0)  # a weak probability map: nothing above 0.5
    vs = VolumeSession(predictor, _volume())
    with pytest.raises(ValueError, match="threshold probabilities first"):
        vs.set_slice_mask(2, prob, propagate=False)  # every pixel above 0 became the mask
    with pytest.raises(ValueError, match="threshold probabilities first"):
        propagate(predictor, _volume(), 2, prob)
    vs.set_slice_mask(2, (_slice() > 0).astype(np.uint8), propagate=False)  # 0 / 1 numbers are a mask
    assert vs.mask[2].sum() == (_slice() > 0).sum()


def test_predict_checks_the_previous_mask_and_batch_lengths(predictor):
    with pytest.raises(ValueError, match=r"previous mask \(5, 5\) must have the slice's shape \(48, 48\)"):
        predictor.predict(_slice(), [], prev_mask=np.zeros((5, 5), bool))  # was stretched to fit
    with pytest.raises(ValueError, match="2 slices but 1 entries in clicks"):
        predictor.predict_batch([_slice(), _slice()], [[]])
    with pytest.raises(ValueError, match="2 slices but 3 entries in prev_masks"):
        predictor.predict_batch([_slice(), _slice()], [[], []], [None] * 3)
    out = predictor.predict_batch([_slice(), _slice(40)], [[], []], [None, np.zeros((40, 40), bool)])
    assert [o.shape for o in out] == [(48, 48), (40, 40)]


def test_unknown_device_is_a_value_error():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_undo_restores_the_session_state_exactly(predictor):
    s = Session(predictor, _slice())
    s.add_click(25, 24, True)
    p1, c1 = s.probability.copy(), s.clicks
    s.add_click(30, 30, False)
    assert s.undo() and s.clicks == c1
    np.testing.assert_array_equal(s.probability, p1)
    vs = VolumeSession(predictor, _volume(), spacing_mm=(2.0, 1.0, 1.0))
    m1 = vs.add_click(2, 25, 24).copy()
    vs.add_click(2, 16, 13, False)
    assert vs.undo()
    np.testing.assert_array_equal(vs.mask, m1)
    assert vs.clear() and not vs.mask.any() and vs.undo()
    np.testing.assert_array_equal(vs.mask, m1)


# ---------------------------------------------------------------------------------------
# masks out


def test_png_export_refuses_probabilities(tmp_path):
    from PIL import Image

    from iunet.io import save_mask_png

    with pytest.raises(ValueError, match="threshold probabilities before saving"):
        save_mask_png(np.full((8, 8), 0.3), tmp_path / "m.png")  # was all foreground
    m = np.zeros((8, 8), np.uint8)
    m[2:4, 2:5] = 1
    out = save_mask_png(m, tmp_path / "m.png")
    np.testing.assert_array_equal(np.asarray(Image.open(out)), m * 255)


def test_read_nifti_mask_needs_the_ct_volume(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.uint8), np.eye(4)), str(tmp_path / "l.nii.gz"))
    with pytest.raises(ValueError, match="like must be the CTVolume"):
        iunet.read_nifti_mask(tmp_path / "l.nii.gz", like=np.zeros((3, 8, 8)))


def test_dicom_seg_export_refuses_probabilities(tmp_path):
    pytest.importorskip("highdicom")
    import pydicom.data

    from iunet.io import export_dicom_seg

    vol = iunet.load_ct(pydicom.data.get_testdata_file("CT_small.dcm"))
    prob = np.zeros(vol.hu.shape, np.float32)
    prob[0, 40:60, 40:60] = 0.9
    prob[0, :5, :5] = 0.01  # a trace of probability: it was exported as segment
    with pytest.raises(ValueError, match="threshold probabilities"):
        export_dicom_seg(vol, prob, tmp_path / "seg.dcm")
    with pytest.raises(ValueError, match="must be boolean"):
        export_dicom_seg(vol, (prob > 0.5).astype(np.uint8) * 2, tmp_path / "seg.dcm")
    out = export_dicom_seg(vol, (prob > 0.5).astype(np.uint8), tmp_path / "seg.dcm")
    assert out.n_frames == 1 and out.path.exists()
