"""Clicks and their encoding into guidance maps.

A click is a point ``(y, x)`` in pixels of the slice it was made on, a polarity
(foreground / background) and a radius in pixels. The paper draws clicks as disks in
two guidance channels and lets the radius follow the size of the object:
``radius_px = alpha * mask_area_px`` (eq. 4), with the area of the *current*
prediction at test time and of the true mask at training time. We clamp the radius to
``[MIN_RADIUS_PX, MAX_RADIUS_PX]`` because the formula is unbounded for large organs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

DEFAULT_RADIUS_PX = 5.0
MIN_RADIUS_PX = 1.0
MAX_RADIUS_PX = 15.0
ENCODINGS = ("disk", "gaussian")


@dataclass(frozen=True)
class Click:
    """One user click: pixel row ``y``, column ``x`` (slice pixels), polarity, disk radius in px."""

    y: int
    x: int
    positive: bool
    radius_px: float = DEFAULT_RADIUS_PX

    def scaled(self, scale_y: float, scale_x: float) -> "Click":
        """The same click on a grid resized by (scale_y, scale_x); the radius scales by their mean."""
        return Click(
            y=int(round((self.y + 0.5) * scale_y - 0.5)),
            x=int(round((self.x + 0.5) * scale_x - 0.5)),
            positive=self.positive,
            radius_px=self.radius_px * 0.5 * (scale_y + scale_x),
        )


@dataclass(frozen=True)
class ClickSize:
    """How big a new click is drawn: fixed ``radius_px``, or dynamic ``alpha * area`` when alpha is set."""

    radius_px: float = DEFAULT_RADIUS_PX
    alpha: float | None = None  # e.g. 1/800; None = fixed radius
    min_radius_px: float = MIN_RADIUS_PX
    max_radius_px: float = MAX_RADIUS_PX

    def radius_for(self, mask_area_px: int | float | None) -> float:
        """Radius in px of the next click, given the current mask area in px (None/0 = no mask yet)."""
        return click_radius_px(
            mask_area_px, self.alpha, self.radius_px, self.min_radius_px, self.max_radius_px
        )

    def describe(self) -> str:
        return f"dynamic α=1/{round(1 / self.alpha)}" if self.alpha else f"fixed {self.radius_px:g} px"


def click_radius_px(
    mask_area_px: int | float | None,
    alpha: float | None,
    default_radius_px: float = DEFAULT_RADIUS_PX,
    min_radius_px: float = MIN_RADIUS_PX,
    max_radius_px: float = MAX_RADIUS_PX,
) -> float:
    """Click radius in pixels (paper eq. 4, ``cs = alpha * cms``), clamped.

    With ``alpha=None`` the radius is fixed at ``default_radius_px``. With a dynamic alpha and
    no mask yet (area ``None`` or 0, i.e. the first click) the default radius is used too.
    """
    if alpha is None or not mask_area_px or mask_area_px <= 0:
        return float(default_radius_px)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    return float(np.clip(alpha * float(mask_area_px), min_radius_px, max_radius_px))


def encode_clicks(
    clicks: Sequence[Click], shape_yx: tuple[int, int], encoding: str = "disk"
) -> np.ndarray:
    """Guidance maps for ``clicks`` on a ``shape_yx`` grid.

    Returns float32 ``(2, Y, X)``: channel 0 foreground clicks, channel 1 background clicks.
    ``disk``: 1 inside each click's disk (radius_px; at least the clicked pixel), 0 elsewhere.
    ``gaussian``: ``exp(-d^2 / (2 r^2))`` around each click, cut at 3 r; overlapping clicks take the max.
    Clicks outside the grid raise ``ValueError``.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown click encoding {encoding!r}; use one of {ENCODINGS}")
    h, w = int(shape_yx[0]), int(shape_yx[1])
    maps = np.zeros((2, h, w), dtype=np.float32)
    for c in clicks:
        if not (0 <= c.y < h and 0 <= c.x < w):
            raise ValueError(f"click at (y={c.y}, x={c.x}) is outside the {h}×{w} image")
        r = max(float(c.radius_px), 0.5)
        reach = int(np.ceil(3 * r if encoding == "gaussian" else r))
        y0, y1 = max(c.y - reach, 0), min(c.y + reach + 1, h)
        x0, x1 = max(c.x - reach, 0), min(c.x + reach + 1, w)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        d2 = (yy - c.y) ** 2 + (xx - c.x) ** 2
        if encoding == "disk":
            patch = (d2 <= r * r).astype(np.float32)
        else:
            patch = np.exp(-d2 / (2 * r * r)).astype(np.float32)
        ch = 0 if c.positive else 1
        np.maximum(maps[ch, y0:y1, x0:x1], patch, out=maps[ch, y0:y1, x0:x1])
    return maps
