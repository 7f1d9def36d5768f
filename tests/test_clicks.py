import numpy as np
import pytest

from iunet.clicks import Click, ClickSize, click_radius_px, encode_clicks


def test_fixed_radius_ignores_area():
    assert click_radius_px(3700, None) == 5.0
    assert click_radius_px(3700, None, default_radius_px=2) == 2.0


def test_dynamic_radius_is_alpha_times_area_clamped():
    # docs/design.md §1: median MSD spleen slice area ~3,700 px, alpha = 1/800 -> r ~ 4.6
    assert click_radius_px(3700, 1 / 800) == pytest.approx(4.625)
    assert click_radius_px(100, 1 / 800) == 1.0  # clamped low
    assert click_radius_px(10**6, 1 / 500) == 15.0  # clamped high
    assert click_radius_px(0, 1 / 800) == 5.0  # first click: no mask yet -> default
    assert click_radius_px(None, 1 / 800, default_radius_px=3) == 3.0


def test_click_size_describe_and_radius():
    cs = ClickSize(alpha=1 / 800)
    assert cs.describe() == "dynamic α=1/800"
    assert cs.radius_for(8000) == pytest.approx(10.0)
    assert ClickSize(radius_px=2).describe() == "fixed 2 px"


def test_disk_encoding_counts_pixels_and_channels():
    maps = encode_clicks([Click(10, 10, True, 2.0), Click(3, 20, False, 1.0)], (32, 32))
    assert maps.shape == (2, 32, 32) and maps.dtype == np.float32
    assert maps[0].sum() == 13  # lattice points with y^2 + x^2 <= 4
    assert maps[1].sum() == 5  # radius 1: the centre and its 4 neighbours
    assert maps[0, 10, 10] == 1 and maps[1, 10, 10] == 0


def test_gaussian_encoding_peaks_at_centre():
    maps = encode_clicks([Click(8, 8, True, 2.0)], (17, 17), "gaussian")
    assert maps[0, 8, 8] == pytest.approx(1.0)
    assert maps[0, 8, 10] == pytest.approx(np.exp(-4 / 8))
    assert maps[1].max() == 0


def test_click_outside_image_is_refused():
    with pytest.raises(ValueError, match="outside"):
        encode_clicks([Click(40, 3, True)], (32, 32))


def test_scaled_click_maps_pixel_centres():
    c = Click(255, 0, True, 4.0).scaled(0.5, 0.5)
    assert (c.y, c.x, c.radius_px) == (127, 0, 2.0)
