"""Clicks and their encoding into guidance maps.

A click is a point ``(y, x)`` in pixels of the slice it was made on, a polarity
(foreground / background) and a radius in pixels. The paper draws clicks as disks in
two guidance channels and lets the radius follow the size of the object:
``radius_px = alpha * mask_area_px`` (eq. 4), with the area of the *current*
prediction at test time and of the true mask at training time. We clamp the radius to
``[MIN_RADIUS_PX, MAX_RADIUS_PX]`` because the formula is unbounded for large organs.

Optionally (``ModelConfig.geodesic``) two more channels carry the clicks' exponentialised
geodesic distance on the image (DeepIGeoS, MIDeepSeg): ``exp(-D / tau_px)`` where ``D`` is the
cheapest path from the nearest click of that polarity, each step costing ``1 + lambda · |∇I|``
on the lightly smoothed windowed image. Inside a uniform region the map decays slowly; across an
edge it drops, so one click tells the model how far the clicked region reaches
(docs/design.md, "geodesic click maps").
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

DEFAULT_ALPHA = 1 / 800  # the paper's best dynamic click size (Table I); the one source of this value
DEFAULT_RADIUS_PX = 5.0
MIN_RADIUS_PX = 1.0
MAX_RADIUS_PX = 15.0
DEFAULT_GEODESIC_LAMBDA = 300.0  # edge cost per unit of windowed-intensity gradient
DEFAULT_GEODESIC_TAU_PX = 64.0  # decay length of exp(-D / tau), in grid pixels
# edge cost of the optional second ("soft") pair of maps: low enough that a click's map crosses
# a weak edge, such as a renal sinus's, that the first pair stops at (docs/design.md)
DEFAULT_GEODESIC_SOFT_LAMBDA = 100.0
# The pixel noise (windowed units, 1 = the window's width) up to which a geodesic map's edge cost
# is taken from the image smoothed by a 1 px Gaussian; a noisier image is smoothed more, so that
# a low-dose scan's noise does not read as edges everywhere and shrink every map (docs/design.md,
# "Geodesic maps on noisy scans"). 0.012 of the 400 HU abdominal window is about 5 HU on the
# model's 256² grid, a standard-dose scan's level: 3D-IRCADb's is 0.010, spleen_8's 0.005.
DEFAULT_GEODESIC_NOISE_REF = 0.012
ENCODINGS = ("disk", "gaussian")


def _positive_number(v) -> bool:
    """Whether ``v`` is a real, finite number > 0 (a Python or NumPy int or float, not a bool)."""
    return not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating)) and bool(np.isfinite(v) and v > 0)


@dataclass(frozen=True)
class Click:
    """One user click: pixel row ``y``, column ``x`` (slice pixels), polarity, disk radius in px."""

    y: int
    x: int
    positive: bool
    radius_px: float = DEFAULT_RADIUS_PX

    def __post_init__(self) -> None:
        # checked here, where a click is made, not deep in encode_clicks where a float index fails
        for name in ("y", "x"):
            v = getattr(self, name)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"Click.{name} must be a whole pixel index (int), got {v!r}")
        if not isinstance(self.positive, (bool, np.bool_)):
            raise ValueError(f"Click.positive must be True (foreground) or False (background), got {self.positive!r}")
        if not _positive_number(self.radius_px):
            raise ValueError(f"Click.radius_px must be a number of pixels > 0, got {self.radius_px!r}")

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

    def __post_init__(self) -> None:
        # checked here, not at the second click (alpha) or never (a negative or NaN radius)
        for name in ("radius_px", "min_radius_px", "max_radius_px"):
            if not _positive_number(v := getattr(self, name)):
                raise ValueError(f"ClickSize.{name} must be a number of pixels > 0, got {v!r}")
        if self.min_radius_px > self.max_radius_px:
            raise ValueError(f"ClickSize.min_radius_px ({self.min_radius_px}) exceeds max_radius_px ({self.max_radius_px})")
        if self.alpha is not None and not _positive_number(self.alpha):
            raise ValueError(f"ClickSize.alpha must be a number > 0 such as 1/800 (or None for a fixed radius), got {self.alpha!r}")

    def radius_for(self, mask_area_px: int | float | None) -> float:
        """Radius in px of the next click, given the current mask area in px (None/0 = no mask yet)."""
        return click_radius_px(
            mask_area_px, self.alpha, self.radius_px, self.min_radius_px, self.max_radius_px
        )

    def describe(self) -> str:
        return f"dynamic α={format_alpha(self.alpha)}" if self.alpha else f"fixed {self.radius_px:g} px"


def parse_alpha(text: str | float | None) -> float | None:
    """The dynamic click size α from a command line or a setting.

    ``"1/800"`` or ``"0.00125"`` (or a number) → that float, which must be > 0; ``"none"`` or
    ``"fixed"`` (or None) → None, i.e. fixed-size clicks. Raises ValueError with a message that
    says what is accepted.
    """
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().lower()
        if s in ("none", "fixed"):
            return None
        try:
            value = 1.0 / float(s[2:]) if s.startswith("1/") else float(s)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"α {text!r}: give a number such as 1/800 or 0.00125, or 'none' for fixed-size clicks") from None
    if not (value > 0 and np.isfinite(value)):
        raise ValueError(f"α {text!r} must be a number > 0 (or 'none' for fixed-size clicks)")
    return value


def alpha_argument(text: str) -> float | None:
    """:func:`parse_alpha` for ``argparse`` (``type=alpha_argument``): its message, not a traceback."""
    try:
        return parse_alpha(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def format_alpha(alpha: float | None) -> str:
    """``1/800`` for 0.00125 (``1/N`` when N is a whole number, else the number); ``none`` for None."""
    if alpha is None:
        return "none"
    n = 1.0 / alpha
    return f"1/{round(n)}" if abs(n - round(n)) < 1e-6 * n else f"{alpha:g}"


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


def agreeing_radius_px(mask: np.ndarray, y: int, x: int, positive: bool, radius_px: float,
                       min_radius_px: float = MIN_RADIUS_PX) -> float:
    """The radius of a click at (y, x) on a slice whose mask so far is ``mask`` (Y, X) bool: a
    click that *agrees* with the mask (a positive click inside it, a negative one outside) is
    drawn no larger than its distance to the mask's border (pixel centre to centre; at least
    ``min_radius_px``), so that its disk confirms what is there and does not reach across the
    border into what lies beyond (a positive disk of 15 px near a spleen's edge tells the model
    that the touching kidney is foreground too, and the previous mask then keeps it;
    docs/design.md, "The previous mask and random clicks"). A click that disagrees (a
    correction), or on an empty mask (a first click), keeps ``radius_px``."""
    m = np.asarray(mask, bool)
    h, w = m.shape
    if not m.any() or not (0 <= y < h and 0 <= x < w) or bool(m[y, x]) != bool(positive):
        return float(radius_px)
    r = int(np.ceil(radius_px))
    y0, x0 = max(y - r, 0), max(x - r, 0)
    other = m[y0 : y + r + 1, x0 : x + r + 1] != bool(positive)  # the other side of the border, near the click
    if not other.any():
        return float(radius_px)
    oy, ox = np.nonzero(other)
    d = float(np.sqrt(np.min((oy + y0 - y) ** 2 + (ox + x0 - x) ** 2)))
    return float(max(min_radius_px, min(float(radius_px), d)))


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


def image_noise(image: np.ndarray) -> float:
    """The pixel noise of a windowed image (Y, X) in [0, 1], as a standard deviation in the same
    units: Immerkær's estimator (1996; the 3 × 3 second-difference kernel that cancels every
    linear ramp, whose response to white noise of standard deviation s has standard deviation
    6 s), made robust to edges with the median absolute response instead of the mean, over the
    pixels strictly inside the window (not clipped: air, bone and their edges do not count).
    0 for an image with fewer than 64 such pixels."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2 or min(img.shape) < 3:
        return 0.0
    lap = (img[:-2, :-2] - 2 * img[:-2, 1:-1] + img[:-2, 2:]
           - 2 * img[1:-1, :-2] + 4 * img[1:-1, 1:-1] - 2 * img[1:-1, 2:]
           + img[2:, :-2] - 2 * img[2:, 1:-1] + img[2:, 2:])
    centre = img[1:-1, 1:-1]
    inside = (centre > 0.02) & (centre < 0.98)
    if int(inside.sum()) < 64:
        return 0.0
    return float(np.median(np.abs(lap[inside]))) / (0.6745 * 6.0)  # the median of |N(0, 6s)| is 0.6745 · 6s


def geodesic_sigma_px(image: np.ndarray, noise_ref: float, sigma_px: float = 1.0) -> float:
    """The blur (px) of the image a geodesic map's edge cost is taken from: ``sigma_px``, times
    ``sqrt(noise / noise_ref)`` where the image's noise (:func:`image_noise`) is above
    ``noise_ref`` (the gradient of white noise blurred by a Gaussian of σ falls as 1 / σ², so
    this brings a noisy image's gradient noise back to the reference level). ``noise_ref`` 0:
    ``sigma_px`` whatever the noise."""
    if not noise_ref > 0:
        return float(sigma_px)
    return float(sigma_px) * max(1.0, float(np.sqrt(image_noise(image) / noise_ref)))


def geodesic_cost(image: np.ndarray, lam: float = DEFAULT_GEODESIC_LAMBDA, sigma_px: float = 1.0,
                  noise_ref: float = 0.0) -> np.ndarray:
    """The cost of stepping onto each pixel of ``image`` (Y, X), windowed to [0, 1]:
    ``1 + lam · |∇ image|`` after a Gaussian blur of ``sigma_px`` (more for an image noisier than
    ``noise_ref``: :func:`geodesic_sigma_px`; 0 = never more); float32 (Y, X), C-contiguous."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"geodesic maps need one 2D image (Y, X), got shape {img.shape}")
    sigma_px = geodesic_sigma_px(img, noise_ref, sigma_px)
    smooth = ndimage.gaussian_filter(img, sigma_px) if sigma_px > 0 else img
    gy, gx = np.gradient(smooth)
    return np.ascontiguousarray(1.0 + lam * np.hypot(gy, gx), dtype=np.float32)


def geodesic_distance(cost: np.ndarray, points: Sequence[tuple[int, int]]) -> np.ndarray:
    """Least total ``cost`` (Y, X) of an 8-connected path from the nearest of ``points`` (y, x)
    to every pixel (``dijkstra3d``); float32 (Y, X). The distance from several points is the
    pixel-wise minimum of their own distances."""
    import dijkstra3d

    pts = [(int(y), int(x)) for y, x in points]
    d = dijkstra3d.distance_field(cost, pts if len(pts) > 1 else pts[0], connectivity=8)
    return np.asarray(d, dtype=np.float32)


def geodesic_maps(
    image: np.ndarray,
    clicks: Sequence[Click],
    lam: float | Sequence[float] = DEFAULT_GEODESIC_LAMBDA,
    tau_px: float = DEFAULT_GEODESIC_TAU_PX,
    sigma_px: float = 1.0,
    noise_ref: float = 0.0,
) -> np.ndarray:
    """Exponentialised geodesic distance maps of ``clicks`` on ``image``.

    ``image``: (Y, X) float, windowed to [0, 1] (the model's image channel). Returns float32
    ``(2, Y, X)``: channel 0 from the foreground clicks, channel 1 from the background clicks,
    ``exp(-D / tau_px)`` with ``D`` the least total cost of an 8-connected path from the nearest
    click, a step onto a pixel costing ``1 + lam · |∇ image|`` (gradient after a Gaussian blur of
    ``sigma_px``, more on an image noisier than ``noise_ref`` when that is > 0;
    :func:`geodesic_cost`, :func:`geodesic_distance`); 1 at a click, 0 everywhere
    for a polarity without clicks. ``lam`` several edge weights: one such pair per weight, in
    that order, ``(2 · len(lam), Y, X)``. Clicks outside the image raise ``ValueError``.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"geodesic maps need one 2D image (Y, X), got shape {img.shape}")
    lams = [float(lam)] if np.isscalar(lam) else [float(v) for v in lam]
    h, w = img.shape
    maps = np.zeros((2 * len(lams), h, w), dtype=np.float32)
    for c in clicks:
        if not (0 <= c.y < h and 0 <= c.x < w):
            raise ValueError(f"click at (y={c.y}, x={c.x}) is outside the {h}×{w} image")
    if not clicks:
        return maps
    by_polarity = [(ch, [(c.y, c.x) for c in clicks if c.positive == positive]) for ch, positive in ((0, True), (1, False))]
    sigma_px = geodesic_sigma_px(img, noise_ref, sigma_px)  # one noise estimate for every edge weight
    for i, lam_i in enumerate(lams):
        cost = geodesic_cost(img, lam_i, sigma_px)
        for ch, pts in by_polarity:
            if pts:
                maps[2 * i + ch] = np.exp(-geodesic_distance(cost, pts) / tau_px)
    return maps
