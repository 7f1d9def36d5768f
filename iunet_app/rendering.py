"""Pictures for the page: the slice with mask and clicks, and the weight map as a heat map.

Only the display image is scaled (by an integer ``display_scale``) so that small slices are not
shown as postage stamps; app.py maps a browser click back to slice pixels with
:func:`display_to_slice_px`. Axis order: (Y, X) slices, (y, x) clicks, RGB last.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from iunet.clicks import Click
from iunet.weight_maps import W_MAX, combined_weight_map
from iunet.windowing import window_to_uint8

# Small slices are enlarged (nearest neighbour, integer factor) until they are about this many
# pixels wide on screen; the browser never enlarges an image itself.
DISPLAY_TARGET_PX = 512
MASK_RGB = (30, 144, 255)  # mask fill, blended
MASK_ALPHA = 0.35
CONTOUR_RGB = (0, 255, 255)
POSITIVE_RGB = (40, 220, 60)
NEGATIVE_RGB = (255, 50, 50)
# A perceptually ordered dark → bright heat scale (after matplotlib's "inferno"), 0 … 1.
_HEAT_ANCHORS = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]],
    dtype=np.float32,
)


def display_scale(shape_yx: tuple[int, int]) -> int:
    """Integer factor by which a slice is enlarged on screen (1 for slices of 512 px and more)."""
    return max(1, DISPLAY_TARGET_PX // max(int(shape_yx[0]), int(shape_yx[1]), 1))


def line_px(shape_yx: tuple[int, int], scale: int) -> int:
    """Width in picture pixels of the mask's outline and the click circles. Enlarged slices: 2.
    Slices of 512 px and more are drawn 1:1 and the page shows them smaller (a 512² slice in
    about 470 px, a 2048² one in a quarter of its size), where the browser's nearest-neighbour
    scaling drops rows and columns: a 1-px line would vanish in places, so lines are as wide as
    about 1.25 screen pixels' worth of slice pixels (2 px at 512², 5 px at 2048²)."""
    if scale >= 2:
        return 2
    return max(1, int(np.ceil(1.25 * max(int(shape_yx[0]), int(shape_yx[1])) / DISPLAY_TARGET_PX)))


def display_to_slice_px(x_display: float, y_display: float, scale: int) -> tuple[int, int]:
    """A point of the displayed image, as the browser reports it (x, y), → slice pixel (y, x)."""
    return int(y_display) // scale, int(x_display) // scale


def _enlarge(a: np.ndarray, scale: int) -> np.ndarray:
    return a if scale == 1 else np.repeat(np.repeat(a, scale, axis=0), scale, axis=1)


def _draw_click(rgb: np.ndarray, click: Click, scale: int, line_width_px: int = 1) -> None:
    """A circle of the click's radius (its real footprint in the guidance map) and a centre dot;
    ``line_width_px``: the circle's width for slices drawn 1:1 (``line_px``)."""
    h, w = rgb.shape[:2]
    cy, cx = (click.y + 0.5) * scale, (click.x + 0.5) * scale
    r = max(click.radius_px, 0.5) * scale
    line = max(1.0, scale * 0.5) if scale >= 2 else float(line_width_px)
    dot = max(2.0, scale * 0.6, 1.5 * line)
    reach = int(np.ceil(r + line + dot)) + 1
    y0, y1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, h)
    x0, x1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, w)
    yy, xx = np.ogrid[y0:y1, x0:x1]
    d = np.sqrt((yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2)
    paint = (np.abs(d - r) <= line / 2 + 0.35) | (d <= dot)
    rgb[y0:y1, x0:x1][paint] = POSITIVE_RGB if click.positive else NEGATIVE_RGB


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (
        slice(max(int(rows[0]) - margin, 0), int(rows[-1]) + margin + 1),
        slice(max(int(cols[0]) - margin, 0), int(cols[-1]) + margin + 1),
    )


def render_slice(
    image_hu: np.ndarray, level_hu: float, width_hu: float, mask: np.ndarray, clicks: Sequence[Click], scale: int
) -> np.ndarray:
    """The slice in the display window with the mask (fill + contour) and the clicks drawn on it.

    image_hu, mask: (Y, X). Returns uint8 (Y·scale, X·scale, 3). The window only affects this
    picture, never the model.
    """
    grey = _enlarge(window_to_uint8(image_hu, level_hu, width_hu), scale)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    m = _enlarge(np.asarray(mask, bool), scale)
    width_px = line_px(np.shape(image_hu), scale)
    if m.any():
        box = _bbox(m, 2)  # work on the mask's bounding box only: most of a slice is background
        sub, mb = rgb[box], m[box]
        fill = np.asarray(MASK_RGB, np.float32)
        sub[mb] = np.rint((1 - MASK_ALPHA) * sub[mb] + MASK_ALPHA * fill).astype(np.uint8)
        inner = ndimage.binary_erosion(mb, iterations=width_px, border_value=0)
        sub[mb & ~inner] = CONTOUR_RGB
    for c in clicks:
        _draw_click(rgb, c, scale, width_px)
    return rgb


def heat_colormap(values01: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 (..., 3) on a dark-to-bright heat scale."""
    v = np.clip(np.nan_to_num(np.asarray(values01, np.float32)), 0.0, 1.0) * (len(_HEAT_ANCHORS) - 1)
    i = np.minimum(v.astype(np.int64), len(_HEAT_ANCHORS) - 2)
    f = (v - i)[..., None]
    return np.rint(_HEAT_ANCHORS[i] * (1 - f) + _HEAT_ANCHORS[i + 1] * f).astype(np.uint8)


def render_weight_map(mask: np.ndarray, clicks: Sequence[Click], scale: int) -> np.ndarray:
    """The training loss's weight map ``max(d, w)`` (boundary map + equal-weight foreground
    clicks, 0 … 10) of the current (Y, X) mask and clicks as a heat map, uint8 (Y·scale, X·scale, 3)."""
    w = combined_weight_map(mask, clicks, boundary=True, click_mode="equal")
    return _enlarge(heat_colormap(w / W_MAX), scale)


def save_png(rgb: np.ndarray, path) -> str:
    """Write an RGB uint8 (H, W, 3) picture as a PNG with light compression (about 5 ms for
    512², a few times faster than the default level, files about 20 % larger). Returns the path."""
    from PIL import Image

    Image.fromarray(np.asarray(rgb, np.uint8)).save(path, format="PNG", compress_level=1)
    return str(path)
