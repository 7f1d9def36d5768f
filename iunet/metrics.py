"""Segmentation metrics on numpy arrays: Dice, NoC@threshold, area under the Dice curve."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two binary arrays of the same shape; 1.0 when both are empty."""
    p, g = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: prediction {p.shape} vs ground truth {g.shape}")
    denom = int(p.sum()) + int(g.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / denom


def noc(dice_per_click: Sequence[float], threshold: float, max_clicks: int | None = None) -> tuple[int, bool]:
    """Number of clicks to reach ``threshold`` Dice.

    ``dice_per_click[k-1]`` is the Dice after k clicks. Returns ``(noc, failed)``: the first k
    with Dice >= threshold, or ``(max_clicks, True)`` when it is never reached (max_clicks
    defaults to the curve's length, as in RITM's NoC).
    """
    curve = list(dice_per_click)
    limit = len(curve) if max_clicks is None else max_clicks
    for k, d in enumerate(curve[:limit], start=1):
        if d >= threshold:
            return k, False
    return limit, True


def auc(dice_per_click: Sequence[float]) -> float:
    """Normalised area under the Dice-vs-clicks curve over k = 1..K (trapezoids / (K-1)); in [0, 1]."""
    curve = np.asarray(dice_per_click, dtype=np.float64)
    if curve.size == 0:
        raise ValueError("empty Dice curve")
    if curve.size == 1:
        return float(curve[0])
    return float(((curve[1:] + curve[:-1]) / 2.0).sum() / (curve.size - 1))
