"""Tests of iunet.windowing with hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from iunet.windowing import WINDOW_PRESETS, apply_window, get_window, window_to_uint8


def test_presets_are_the_documented_values():
    assert WINDOW_PRESETS == {
        "abdomen": (40, 400),
        "soft_tissue": (50, 350),
        "liver": (60, 160),
        "bone": (400, 1800),
        "lung": (-600, 1500),
        "brain": (40, 80),
    }
    for level_hu, width_hu in WINDOW_PRESETS.values():
        assert width_hu > 0 and np.isfinite(level_hu)


def test_apply_window_hand_values():
    # abdomen window 40/400 spans -160 … 240 HU
    hu = np.array([-1000.0, -160.0, -60.0, 40.0, 140.0, 240.0, 3000.0])
    out = apply_window(hu, 40, 400)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0], atol=1e-6)
    assert out.dtype == np.float32 and out.shape == hu.shape


def test_apply_window_keeps_shape_and_range():
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1200, 2000, size=(3, 5, 7)).astype(np.int16)
    out = apply_window(hu, *get_window("bone"))
    assert out.shape == (3, 5, 7) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # monotone in HU
    flat = hu.ravel().astype(float)
    order = np.argsort(flat)
    assert np.all(np.diff(out.ravel()[order]) >= 0)


def test_window_to_uint8_hand_values():
    out = window_to_uint8(np.array([[-160.0, 40.0], [240.0, 500.0]]), 40, 400)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 128], [255, 255]])  # 0.5 * 255 = 127.5 → 128


@pytest.mark.parametrize("width_hu", [0.0, -10.0, float("nan")])
def test_invalid_width_is_rejected(width_hu):
    with pytest.raises(ValueError, match="width"):
        apply_window(np.zeros(3), 40, width_hu)
    with pytest.raises(ValueError, match="width"):
        window_to_uint8(np.zeros(3), 40, width_hu)


def test_get_window_names():
    assert get_window("liver") == (60, 160)
    assert get_window(" Soft tissue ") == (50, 350)
    assert get_window("SOFT-TISSUE") == (50, 350)
    with pytest.raises(ValueError) as info:
        get_window("mediastinum")
    message = str(info.value)
    assert "mediastinum" in message
    for name in WINDOW_PRESETS:
        assert name in message
