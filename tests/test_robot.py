import numpy as np
import pytest

from iunet.robot import component_click, next_clicks, paper_pair, ritm_click, volume_click


def square(shape=(40, 40), y0=10, y1=30, x0=10, x1=30):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_first_ritm_click_is_inside_and_deepest():
    gt = square()
    y, x, pos = ritm_click(gt, None)
    assert pos and gt[y, x]
    assert 18 <= y <= 21 and 18 <= x <= 21  # the centre of the square


def test_ritm_click_lies_in_the_error_region_with_right_polarity():
    gt = square()
    pred = square(y0=10, y1=30, x0=10, x1=38)  # over-segmented to the right
    y, x, pos = ritm_click(gt, pred)
    assert not pos and pred[y, x] and not gt[y, x]
    pred2 = square(y0=10, y1=20)  # under-segmented bottom half
    y, x, pos = ritm_click(gt, pred2)
    assert pos and gt[y, x] and not pred2[y, x]


def test_ritm_never_clicks_the_same_pixel_twice():
    gt = square()
    first = ritm_click(gt, None)
    second = ritm_click(gt, None, [first[:2]])
    assert second[:2] != first[:2]


def test_no_error_no_click():
    gt = square()
    assert ritm_click(gt, gt) is None and component_click(gt, gt) is None
    assert next_clicks("ritm", gt, gt, np.random.default_rng(0)) == []


def test_component_picks_largest_error_region():
    gt = square()
    pred = gt.copy()
    pred[10:14, 10:14] = False  # small FN
    pred[2:8, 2:38] = True  # large FP
    y, x, pos = component_click(gt, pred)
    assert not pos and 2 <= y < 8


def test_paper_pair_positive_inside_negative_in_band_and_seeded():
    gt = square()
    a = paper_pair(gt, np.random.default_rng(5), band_px=5)
    b = paper_pair(gt, np.random.default_rng(5), band_px=5)
    assert a == b
    (py, px, pp), (ny, nx, npos) = a
    assert pp and gt[py, px]
    assert not npos and not gt[ny, nx]
    assert 5 <= ny < 35 and 5 <= nx < 35


# ---------------------------------------------------------------------------------------
# the volume robot (3D)


def _volume_with_two_errors():
    """A target box with a 3D hole (false negatives, 7 × 15 × 15 = 1575 voxels, centre (5, 17, 17))
    and a one-slice false-positive slab (30 × 38 = 1140 voxels) whose cross-section is 5× larger."""
    gt = np.zeros((12, 40, 40), bool)
    gt[1:10, 5:30, 5:30] = True
    pred = gt.copy()
    pred[2:9, 10:25, 10:25] = False
    pred[10, 1:31, 1:39] = True
    return gt, pred


def test_volume_robot_picks_the_deepest_point_of_the_largest_3d_error():
    gt, pred = _volume_with_two_errors()
    assert (gt & ~pred).sum() == 1575 and (pred & ~gt).sum() == 1140
    assert volume_click(gt, pred) == (5, 17, 17, True)  # not the slab, although its slice shows more error
    # with thick slices (5 mm) the hole is as deep on several slices: the middle one is chosen
    assert volume_click(gt, pred, spacing_mm=(5.0, 1.0, 1.0)) == (5, 17, 17, True)
    # the same point through next_clicks, with the coordinates clicked so far
    assert next_clicks("volume", gt, pred, np.random.default_rng(0)) == [(5, 17, 17, True)]
    # clicked points are never chosen again
    again = volume_click(gt, pred, [(5, 17, 17)])
    assert again[:3] != (5, 17, 17) and again[3] and not pred[again[:3]] and gt[again[:3]]
    # once the hole is filled, the slab is the largest error: a negative click on its slice
    fixed = pred | gt
    z, y, x, positive = volume_click(gt, fixed)
    assert z == 10 and not positive and fixed[z, y, x] and not gt[z, y, x]
    assert volume_click(gt, gt) is None


def test_volume_robot_matches_a_whole_volume_brute_force():
    """On random volumes: the click is in the largest error component (by voxel count), with the
    right polarity, at that component's maximal depth computed on the whole (uncropped) volume."""
    from scipy import ndimage

    rng = np.random.default_rng(4)
    for _ in range(15):
        gt = ndimage.binary_opening(rng.random((8, 24, 24)) < 0.55, iterations=1)
        pred = ndimage.binary_opening(rng.random((8, 24, 24)) < 0.55, iterations=1)
        spacing = tuple(rng.uniform(0.5, 3.0, 3))
        got = volume_click(gt, pred, spacing_mm=spacing)
        best = None
        for err, positive in ((gt & ~pred, True), (pred & ~gt, False)):
            labels, n = ndimage.label(err)
            for lab in range(1, n + 1):
                size = int((labels == lab).sum())
                if best is None or size > best[0]:
                    best = (size, labels == lab, positive)
        if best is None:
            assert got is None
            continue
        size, region, positive = best
        depth = ndimage.distance_transform_edt(np.pad(region, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
        z, y, x, pos = got
        assert pos == positive and region[z, y, x]
        assert depth[z, y, x] == pytest.approx(depth.max())


def test_slice_robots_refuse_volumes():
    gt, pred = _volume_with_two_errors()
    with pytest.raises(ValueError, match="use 'volume' for volumes"):
        next_clicks("ritm", gt, pred, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown robot protocol"):
        next_clicks("nope", gt, pred, np.random.default_rng(0))
