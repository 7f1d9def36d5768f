import numpy as np

from iunet.robot import component_click, next_clicks, paper_pair, ritm_click


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
