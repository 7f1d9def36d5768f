"""Weight maps of the weighted Dice loss (paper §II-A).

``d(i)``: a Gaussian boundary map, 0 at the centre of the object rising to ``w_max`` (10) at
its boundary, and falling back towards 0 far outside it. ``w(i)``: click weights, 10 under
foreground clicks (equal weight, EW) or a Gaussian fall-off from each click centre (G).
They combine pixel-wise as ``max(d, w)`` (our reading of eq. 2, see docs/design.md §1).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from .clicks import Click, encode_clicks

W_MAX = 10.0
CLICK_WEIGHT_MODES = ("none", "equal", "gaussian")


def boundary_weight_map(mask: np.ndarray, w_max: float = W_MAX, sigma_px: float | None = None) -> np.ndarray:
    """Gaussian boundary weight map of a binary mask.

    mask: (Y, X) bool/0-1. Returns float32 (Y, X) with ``w_max`` on the pixels that touch the
    boundary (inside and outside), ``w_max * exp(-d^2 / (2 sigma^2))`` at distance d px from it,
    rescaled inside the object so that its deepest pixel (the centre) gets exactly 0.
    ``sigma_px`` defaults to a third of the object's largest inner distance (at least 1 px), so
    the map scales with the object. An empty mask gives all zeros.
    """
    m = np.asarray(mask).astype(bool)
    if not m.any():
        return np.zeros(m.shape, dtype=np.float32)
    # EDT - 1: pixels adjacent to the boundary are at distance 0 on both sides.
    d_in = ndimage.distance_transform_edt(m) - 1.0
    d_out = ndimage.distance_transform_edt(~m) - 1.0 if (~m).any() else np.zeros_like(d_in)
    d_max = float(d_in.max())
    sigma = sigma_px if sigma_px is not None else max(d_max / 3.0, 1.0)
    g = lambda d: np.exp(-(d**2) / (2.0 * sigma**2))  # noqa: E731
    out = w_max * g(np.where(m, 0.0, d_out))
    g_centre = g(d_max)
    if d_max > 0:
        inside = (g(d_in) - g_centre) / (1.0 - g_centre)
    else:  # a one-pixel-thick object is all boundary
        inside = np.ones_like(d_in)
    out = np.where(m, w_max * np.clip(inside, 0.0, 1.0), out)
    return out.astype(np.float32)


def click_weight_map(
    clicks: Sequence[Click],
    shape_yx: tuple[int, int],
    mode: str = "equal",
    w_click: float = W_MAX,
    positive_only: bool = True,
) -> np.ndarray:
    """Click weights ``w(i)``, float32 (Y, X).

    ``equal``: ``w_click`` on every pixel of a click disk (EW, the paper's best);
    ``gaussian``: ``w_click * exp(-d^2 / (2 r^2))`` from each click centre (G);
    ``none``: zeros. The paper weights the foreground clicks; ``positive_only=False`` adds the
    background clicks too.
    """
    if mode not in CLICK_WEIGHT_MODES:
        raise ValueError(f"unknown click weight mode {mode!r}; use one of {CLICK_WEIGHT_MODES}")
    used = [c for c in clicks if c.positive or not positive_only]
    if mode == "none" or not used:
        return np.zeros(shape_yx, dtype=np.float32)
    maps = encode_clicks(used, shape_yx, "disk" if mode == "equal" else "gaussian")
    return (w_click * maps.max(axis=0)).astype(np.float32)


def combined_weight_map(
    mask: np.ndarray,
    clicks: Sequence[Click] = (),
    boundary: bool = True,
    click_mode: str = "equal",
    w_max: float = W_MAX,
) -> np.ndarray:
    """``max(d, w)``: the boundary map (if ``boundary``) and the click weights, float32 (Y, X)."""
    shape = np.asarray(mask).shape
    d = boundary_weight_map(mask, w_max) if boundary else np.zeros(shape, np.float32)
    w = click_weight_map(clicks, shape, click_mode, w_max)
    return np.maximum(d, w)
