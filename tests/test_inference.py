import numpy as np
import pytest

from iunet.clicks import ClickSize
from iunet.inference import Predictor, Session, propagate, resolve_device, step_sessions


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    return Predictor(tiny_checkpoint, device="cpu")


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_predict_any_size_and_batch_matches_single(predictor):
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 100, (100, 80)).astype(np.float32), rng.normal(0, 100, (64, 64)).astype(np.float32)
    from iunet.clicks import Click

    ca, cb = [Click(50, 40, True)], [Click(10, 10, True), Click(60, 60, False)]
    pa, pb = predictor.predict_batch([a, b], [ca, cb])
    assert pa.shape == (100, 80) and pb.shape == (64, 64)
    assert 0 <= pa.min() and pa.max() <= 1
    np.testing.assert_allclose(pa, predictor.predict(a, ca), atol=1e-5)


def test_session_click_undo_reset(predictor):
    img = np.random.default_rng(1).normal(0, 100, (96, 96)).astype(np.float32)
    s = Session(predictor, img, ClickSize(alpha=1 / 800))
    assert s.mask.sum() == 0 and s.next_radius_px == 5.0  # first click: default size
    s.add_click(40, 40, True)
    first = s.probability.copy()
    assert s.clicks[0].radius_px == 5.0 and s.last_latency_ms > 0
    expected_r = ClickSize(alpha=1 / 800).radius_for(s.mask_area_px)
    s.add_click(10, 10, False)
    assert s.clicks[1].radius_px == pytest.approx(expected_r)  # dynamic: α · current area
    assert s.undo()
    np.testing.assert_array_equal(s.probability, first)  # undo restores the mask exactly
    assert len(s.clicks) == 1
    s.reset()
    assert s.clicks == () and s.probability is None and not s.undo()


def test_click_outside_image_is_refused(predictor):
    s = Session(predictor, np.zeros((32, 32), np.float32))
    with pytest.raises(ValueError, match="outside the image"):
        s.add_click(40, 3, True)
    assert s.clicks == ()  # nothing changed


def test_sessions_share_predictor_not_state(predictor):
    rng = np.random.default_rng(2)
    s1 = Session(predictor, rng.normal(0, 100, (64, 64)).astype(np.float32))
    s2 = Session(predictor, rng.normal(0, 100, (64, 64)).astype(np.float32))
    step_sessions([s1, s2], [(5, 5, True), (30, 30, True)])
    assert s1.clicks[0].y == 5 and s2.clicks[0].y == 30
    s1.undo()
    assert s1.clicks == () and len(s2.clicks) == 1
    # batched step equals one-by-one
    s3 = Session(predictor, s2.image_hu)
    s3.add_click(30, 30, True)
    np.testing.assert_allclose(s3.probability, s2.probability, atol=1e-5)


def test_propagate_shapes(predictor):
    vol = np.random.default_rng(3).normal(0, 50, (5, 48, 48)).astype(np.float32)
    start = np.zeros((48, 48), bool)
    start[14:34, 14:34] = True
    out = propagate(predictor, vol, 2, start, min_area_px=1)
    assert out.shape == vol.shape and out[2].sum() == start.sum()
    with pytest.raises(ValueError):
        propagate(predictor, vol, 9, start)
