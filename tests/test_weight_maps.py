import numpy as np
import pytest

from iunet.clicks import Click
from iunet.weight_maps import boundary_weight_map, click_weight_map, combined_weight_map


def disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_boundary_map_is_zero_at_centre_and_ten_at_edge():
    m = disk((64, 64), 32, 32, 15)
    w = boundary_weight_map(m)
    assert w[32, 32] == pytest.approx(0.0, abs=1e-6)  # the deepest pixel
    assert w[32, 32 + 15] == pytest.approx(10.0)  # inner boundary pixel
    assert w[32, 32 + 16] == pytest.approx(10.0)  # outer boundary pixel
    # monotone from centre to edge along a radius
    prof = w[32, 32:48]
    assert np.all(np.diff(prof) >= -1e-6)
    assert w[0, 0] < 0.01  # far background fades to 0


def test_boundary_map_empty_and_full():
    assert boundary_weight_map(np.zeros((8, 8), bool)).max() == 0
    assert boundary_weight_map(np.ones((1, 1), bool)).max() == 10.0


def test_click_weights_equal_and_gaussian():
    clicks = [Click(5, 5, True, 2.0), Click(20, 20, False, 2.0)]
    ew = click_weight_map(clicks, (32, 32), "equal")
    assert ew[5, 5] == 10 and ew[5, 7] == 10 and ew[5, 8] == 0
    assert ew[20, 20] == 0  # background clicks are not weighted by default
    g = click_weight_map(clicks, (32, 32), "gaussian")
    assert g[5, 5] == pytest.approx(10.0) and 0 < g[5, 7] < 10
    assert click_weight_map(clicks, (32, 32), "none").max() == 0


def test_combined_is_pixelwise_max():
    m = disk((64, 64), 32, 32, 15)
    c = [Click(32, 32, True, 3.0)]
    w = combined_weight_map(m, c)
    assert w[32, 32] == 10.0  # the click lifts the centre
    np.testing.assert_allclose(w, np.maximum(boundary_weight_map(m), click_weight_map(c, m.shape)))
    assert combined_weight_map(m, c, boundary=False, click_mode="none").max() == 0
