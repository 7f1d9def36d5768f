import numpy as np
import pytest

from iunet.metrics import auc, dice, noc


def test_dice_known_arrays():
    a = np.array([[1, 1, 0, 0]])
    b = np.array([[1, 0, 1, 0]])
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0
    with pytest.raises(ValueError):
        dice(a, np.zeros((2, 2)))


def test_noc_first_click_reaching_threshold():
    curve = [0.5, 0.79, 0.86, 0.91]
    assert noc(curve, 0.80) == (3, False)
    assert noc(curve, 0.90) == (4, False)
    assert noc(curve, 0.95) == (4, True)
    assert noc(curve, 0.95, max_clicks=20) == (20, True)


def test_auc_normalised():
    assert auc([1.0, 1.0, 1.0]) == 1.0
    assert auc([0.0, 1.0]) == pytest.approx(0.5)
    assert auc([0.2]) == 0.2
