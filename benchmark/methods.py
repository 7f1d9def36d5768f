"""The methods compared side by side, all driven by the same robot users.

- ``iunet-dynamic``: IU-Net, each click drawn with the dynamic size ``α · area of the current mask``.
- ``iunet-fixed``: IU-Net, every click a disk of fixed radius.
- ``unet-auto``: the automatic U-Net (no clicks): one prediction per slice, a flat line.
- ``random-walker`` / ``watershed``: classical click-seeded segmentation that needs no training
  (scikit-image), seeded with the same clicks drawn as disks of the click radius on the
  abdomen-windowed slice.

IU-Net methods click through :class:`iunet.inference.Session` (the app's code path); the
runner advances many sessions at once with :func:`iunet.inference.step_sessions`. Classical
methods keep their clicks in a :class:`SeededState` and re-segment after each click.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from skimage.filters import sobel
from skimage.segmentation import random_walker, watershed
from skimage.transform import resize

from iunet.clicks import Click, ClickSize
from iunet.inference import Predictor, Session
from iunet.windowing import apply_window, get_window

METHODS = ("iunet-dynamic", "iunet-fixed", "unet-auto", "random-walker", "watershed")
ABDOMEN_LEVEL_HU, ABDOMEN_WIDTH_HU = get_window("abdomen")
RW_BETA = 130.0  # scikit-image's default edge sensitivity for images scaled to [0, 1]


@dataclass
class SeededState:
    """A classical method's state on one slice: the windowed image, the clicks, the current mask."""

    image01: np.ndarray  # (Y, X) float32 in [0, 1], abdomen window
    click_size: ClickSize
    clicks: list[Click] = field(default_factory=list)
    mask: np.ndarray | None = None  # (Y, X) bool

    def make_click(self, y: int, x: int, positive: bool) -> Click:
        area = 0 if self.mask is None else int(self.mask.sum())
        return Click(int(y), int(x), bool(positive), self.click_size.radius_for(area))


def seed_markers(clicks: list[Click], shape_yx: tuple[int, int]) -> np.ndarray:
    """Seed labels (Y, X) int32 for the classical methods: 1 = foreground, 2 = background, 0 = free.

    The image border is background (organs do not touch the edge of a CT slice); each click
    paints a disk of its radius, later clicks over earlier ones (the user's latest word wins).
    """
    markers = np.zeros(shape_yx, np.int32)
    markers[[0, -1], :] = markers[:, [0, -1]] = 2
    yy, xx = np.ogrid[: shape_yx[0], : shape_yx[1]]
    for c in clicks:
        markers[(yy - c.y) ** 2 + (xx - c.x) ** 2 <= max(c.radius_px, 0.5) ** 2] = 1 if c.positive else 2
    return markers


def random_walker_mask(image01: np.ndarray, clicks: list[Click], grid_px: int = 128) -> np.ndarray:
    """Random walker (Grady 2006) seeded with ``clicks``; returns a (Y, X) bool mask.

    The sparse solve grows fast with the pixel count (2.5 s for one 512² slice on a CPU core), so
    it runs on a ``grid_px`` grid and the foreground probability is resized back bilinearly.
    """
    shape = image01.shape
    sy, sx = grid_px / shape[0], grid_px / shape[1]
    small = resize(image01, (grid_px, grid_px), order=1, anti_aliasing=True, preserve_range=True)
    markers = seed_markers([c.scaled(sy, sx) for c in clicks], (grid_px, grid_px))
    if not (markers == 1).any():
        return np.zeros(shape, bool)
    with warnings.catch_warnings():  # "isolated unlabelled pixels" etc. are expected on some slices
        warnings.simplefilter("ignore")
        prob = random_walker(small, markers, beta=RW_BETA, mode="bf", return_full_prob=True)[0]
    return resize(prob, shape, order=1, preserve_range=True) >= 0.5


def watershed_mask(image01: np.ndarray, clicks: list[Click]) -> np.ndarray:
    """Marker watershed on the Sobel gradient of the lightly smoothed slice; (Y, X) bool mask."""
    gradient = sobel(ndimage.gaussian_filter(image01, 1.0))
    return watershed(gradient, seed_markers(clicks, image01.shape)) == 1


@dataclass(frozen=True)
class Method:
    """One method of the comparison. ``predictor`` for the network methods, ``click_size`` for the
    interactive ones; ``label`` is the human-readable name used in reports."""

    name: str
    label: str
    predictor: Predictor | None = None
    click_size: ClickSize | None = None
    rw_grid_px: int = 128

    @property
    def interactive(self) -> bool:
        return self.name != "unet-auto"

    @property
    def uses_session(self) -> bool:
        return self.name.startswith("iunet")

    def start(self, image_hu: np.ndarray) -> Session | SeededState:
        """A fresh per-slice state (no clicks yet) for the interactive methods."""
        if self.uses_session:
            return Session(self.predictor, image_hu, self.click_size)
        return SeededState(apply_window(image_hu, ABDOMEN_LEVEL_HU, ABDOMEN_WIDTH_HU), self.click_size)

    def click(self, state: SeededState, point: tuple[int, int, bool]) -> float:
        """Add one click to a classical method's state and re-segment; returns milliseconds."""
        t0 = time.perf_counter()
        state.clicks.append(state.make_click(*point))
        if self.name == "random-walker":
            state.mask = random_walker_mask(state.image01, state.clicks, self.rw_grid_px)
        else:
            state.mask = watershed_mask(state.image01, state.clicks)
        return (time.perf_counter() - t0) * 1000.0


def build_methods(
    names, predictor: Predictor | None, unet: Predictor | None, click_size: ClickSize, fixed_radius_px: float, rw_grid_px: int
) -> list[Method]:
    """The requested methods, in ``METHODS`` order."""
    fixed = ClickSize(fixed_radius_px, None)
    table = {
        "iunet-dynamic": lambda: Method("iunet-dynamic", f"IU-Net, {click_size.describe()}", predictor, click_size),
        "iunet-fixed": lambda: Method("iunet-fixed", f"IU-Net, {fixed.describe()}", predictor, fixed),
        "unet-auto": lambda: Method("unet-auto", "U-Net, automatic (no clicks)", unet),
        "random-walker": lambda: Method("random-walker", f"random walker ({rw_grid_px}² grid), {click_size.describe()}", None, click_size, rw_grid_px),
        "watershed": lambda: Method("watershed", f"marker watershed, {click_size.describe()}", None, click_size),
    }
    return [table[n]() for n in METHODS if n in names]
