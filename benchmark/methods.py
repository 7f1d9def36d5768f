"""The methods compared side by side, all driven by the same robot users.

- ``iunet-dynamic``: IU-Net, each click drawn with the dynamic size ``α · area of the current mask``.
- ``iunet-fixed``: IU-Net, every click a disk of fixed radius.
- ``iunet-zoom``: ``iunet-dynamic`` with ZoomIn (:class:`iunet.inference.ZoomIn`): from the
  second click on, the model sees a crop around the current object. Not in the default set: it
  needs a model trained with zoomed samples (``--zoom-p``).
- ``iunet-zoomout``: ``iunet-dynamic`` with ZoomOut (:class:`iunet.inference.ZoomOut`): a first
  click on a slice whose mask covers more than 4.5 % of it is predicted again on the slice
  shrunk twice, with a margin of air (a large organ seen whole).
- ``unet-auto``: the automatic U-Net (no clicks): one prediction per slice, a flat line.
- ``random-walker`` / ``watershed``: classical click-seeded segmentation that needs no training
  (scikit-image), seeded with the same clicks drawn as disks of the click radius on the
  abdomen-windowed slice.

IU-Net methods click through :class:`iunet.inference.Session` (the app's code path); the click
loop (:mod:`iunet.evaluation`) advances many sessions at once with
:func:`iunet.inference.step_sessions`. Classical methods keep their clicks in a
:class:`SeededState` and re-segment after each click.

Under the ``volume`` protocol (clicks anywhere in a 3D volume) the IU-Net methods click through
:class:`iunet.inference.VolumeSession` (the app's propagation code) and the random walker
segments the whole volume at once (:class:`SeededVolume`); methods without a 3D form
(``unet-auto``, ``watershed``) are left out of that protocol.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage
from skimage.filters import sobel
from skimage.segmentation import random_walker, watershed
from skimage.transform import resize

from iunet.clicks import Click, ClickSize
from iunet.inference import Predictor, Session, ZoomIn, ZoomOut
from iunet.windowing import apply_window, get_window

METHODS = ("iunet-dynamic", "iunet-fixed", "iunet-zoom", "iunet-zoomout", "unet-auto", "random-walker", "watershed")
DEFAULT_METHODS = tuple(m for m in METHODS if m not in ("iunet-zoom", "iunet-zoomout"))  # what a run compares unless told
ABDOMEN_LEVEL_HU, ABDOMEN_WIDTH_HU = get_window("abdomen")
RW_BETA = 130.0  # scikit-image's default edge sensitivity for images scaled to [0, 1]
# Smallest seed disk of a click on the 3D random walker's grid, in grid pixels. The grid is much
# coarser than the slice (a 5 px click on a 512² slice is under 1 px on a 96² grid); a one-voxel
# seed holds no probability mass against the border's background seeds, and the 3D random walker
# then segments nothing (3D Dice < 1 % on spleen_8 after 5 clicks; 71 % with 2.5 px).
RW_VOLUME_MIN_SEED_PX = 2.5
VOLUME_METHODS = ("iunet-dynamic", "iunet-fixed", "iunet-zoomout", "random-walker")  # methods with a 3D form


@dataclass
class SeededState:
    """A classical method's state on one slice: the windowed image, the clicks, the current mask.
    ``segment(image01, clicks) -> (Y, X) bool`` re-segments after each click."""

    image01: np.ndarray  # (Y, X) float32 in [0, 1], abdomen window
    click_size: ClickSize
    segment: Callable[[np.ndarray, list[Click]], np.ndarray] | None = None
    clicks: list[Click] = field(default_factory=list)
    mask: np.ndarray | None = None  # (Y, X) bool

    def make_click(self, y: int, x: int, positive: bool) -> Click:
        area = 0 if self.mask is None else int(self.mask.sum())
        return Click(int(y), int(x), bool(positive), self.click_size.radius_for(area))

    def add_click(self, y: int, x: int, positive: bool = True) -> np.ndarray:
        """Add a click (drawn at the click size for the current mask) and re-segment; (Y, X) bool."""
        self.clicks.append(self.make_click(y, x, positive))
        self.mask = self.segment(self.image01, self.clicks)
        return self.mask


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


def volume_grid(shape_zyx: Sequence[int], spacing_mm: Sequence[float], grid_px: int) -> tuple[int, int, int]:
    """The random walker's working grid for a volume: ``grid_px`` × ``grid_px`` in-plane, and
    slices merged in z (by a whole factor) until they are about as thick as the grid's pixels
    are wide; never finer than the volume. Returns (Zg, Yg, Xg)."""
    z, y, x = (int(v) for v in shape_zyx)
    dz, dy = float(spacing_mm[0]), float(spacing_mm[1])
    factor = max(1, int(round(dy * y / grid_px / dz)))
    return max(1, int(np.ceil(z / factor))), min(grid_px, y), min(grid_px, x)


@dataclass
class SeededVolume:
    """The 3D random walker's state on one volume: clicks anywhere, the whole volume re-segmented.

    The windowed volume is resized once to :func:`volume_grid` (the sparse solve grows fast with
    the voxel count: about 2.5 s for 32 × 96² voxels on one CPU core with the Jacobi-preconditioned
    conjugate gradient); clicks are seeds drawn as disks of their click radius on their slice (the
    dynamic size follows the mask's area on that slice; at least ``RW_VOLUME_MIN_SEED_PX`` on the
    grid), the in-plane border of every slice is background, and the foreground probability is
    resized back to the volume (linear) and thresholded at 0.5.
    """

    image01: np.ndarray  # (Z, Y, X) float32 in [0, 1], abdomen window
    click_size: ClickSize
    spacing_mm: tuple[float, float, float]
    grid_px: int = 96
    clicks: list[tuple[int, Click]] = field(default_factory=list)  # (z, click) in volume pixels
    mask: np.ndarray | None = None  # (Z, Y, X) bool
    _small: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.grid = volume_grid(self.image01.shape, self.spacing_mm, self.grid_px)
        self._small = resize(self.image01, self.grid, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)

    def add_click(self, z: int, y: int, x: int, positive: bool = True) -> np.ndarray:
        """Add a click on slice ``z`` at (y, x) and re-segment the volume; returns (Z, Y, X) bool."""
        shape = self.image01.shape
        if not (0 <= z < shape[0] and 0 <= y < shape[1] and 0 <= x < shape[2]):
            raise ValueError(f"click at (z={z}, y={y}, x={x}) is outside the volume {shape}")
        area = 0 if self.mask is None else int(self.mask[z].sum())
        self.clicks.append((int(z), Click(int(y), int(x), bool(positive), self.click_size.radius_for(area))))
        self.mask = self._segment()
        return self.mask

    def _segment(self) -> np.ndarray:
        shape = self.image01.shape
        zg, yg, xg = self.grid
        fz, sy, sx = shape[0] / zg, yg / shape[1], xg / shape[2]
        markers = np.zeros(self.grid, np.int32)
        markers[:, [0, -1], :] = markers[:, :, [0, -1]] = 2
        yy, xx = np.ogrid[:yg, :xg]
        for z, c in self.clicks:  # later clicks over earlier ones, as on a slice
            g = c.scaled(sy, sx)
            disk = (yy - g.y) ** 2 + (xx - g.x) ** 2 <= max(g.radius_px, RW_VOLUME_MIN_SEED_PX) ** 2
            markers[min(int(z / fz), zg - 1)][disk] = 1 if c.positive else 2
        if not (markers == 1).any():
            return np.zeros(shape, bool)
        spacing = (self.spacing_mm[0] * fz, self.spacing_mm[1] / sy, self.spacing_mm[2] / sx)
        with warnings.catch_warnings():  # "isolated unlabelled pixels" etc. are expected
            warnings.simplefilter("ignore")
            prob = random_walker(self._small, markers, beta=RW_BETA, mode="cg_j", tol=1e-3, spacing=spacing, return_full_prob=True)[0]
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
    zoom: ZoomIn | None = None
    zoom_out: ZoomOut | None = None
    small_carry: bool = True  # VolumeSession looks for small carried masks again (False: --no-small-carry)
    carry_negative_mm: float | None = None  # VolumeSession's reach of background clicks (None: its default)
    regrow_limit: float | None = None  # VolumeSession's limit on a re-propagated mask's growth into other tissue (None: its default)
    shrink_limit: float | None = None  # VolumeSession's limit on a foreground click's re-propagation cutting masks (None: its default)
    prev_mask: bool = True  # per slice, the model is shown the mask so far (False: --no-prev-mask, the clicks alone)

    @property
    def interactive(self) -> bool:
        return self.name != "unet-auto"

    @property
    def uses_session(self) -> bool:
        return self.name.startswith("iunet")

    def volume_label(self, rw_volume_grid_px: int) -> str:
        """The label of the method's 3D form (volume protocol)."""
        if self.name == "random-walker":
            return f"3D random walker ({rw_volume_grid_px}² in-plane grid), {self.click_size.describe()}"
        return f"{self.label}, propagated (VolumeSession)"

    @property
    def volumetric(self) -> bool:
        """Whether the method has a 3D form (the ``volume`` protocol)."""
        return self.name in VOLUME_METHODS

    def start(self, image_hu: np.ndarray) -> Session | SeededState:
        """A fresh per-slice state (no clicks yet) for the interactive methods. ``image_hu``: (Y, X)."""
        if self.uses_session:
            return Session(self.predictor, image_hu, self.click_size, zoom=self.zoom, zoom_out=self.zoom_out, prev_mask=self.prev_mask)
        if self.name == "random-walker":
            segment = partial(random_walker_mask, grid_px=self.rw_grid_px)
        else:
            segment = watershed_mask
        return SeededState(apply_window(image_hu, ABDOMEN_LEVEL_HU, ABDOMEN_WIDTH_HU), self.click_size, segment)

    def start_volume(self, volume_hu: np.ndarray, spacing_mm: Sequence[float], rw_grid_px: int = 96):
        """A fresh state for clicks anywhere in a volume (``volume`` protocol); ``volume_hu``: (Z, Y, X).

        IU-Net: :class:`iunet.inference.VolumeSession` (the app's propagation); random walker:
        :class:`SeededVolume` on a ``rw_grid_px`` grid. Both have ``mask`` (Z, Y, X) and
        ``add_click(z, y, x, positive)``.
        """
        if self.uses_session:
            from iunet import inference  # looked up at call time (the tests put a stand-in there)

            kw = {} if self.small_carry else {"small_carry": False}  # (a stand-in in the tests takes the defaults)
            if self.carry_negative_mm is not None:
                kw["carry_negative_mm"] = self.carry_negative_mm
            if self.regrow_limit is not None:
                kw["regrow_limit"] = self.regrow_limit
            if self.shrink_limit is not None:
                kw["shrink_limit"] = self.shrink_limit
            return inference.VolumeSession(self.predictor, volume_hu, self.click_size, spacing_mm=tuple(spacing_mm),
                                           zoom_out=self.zoom_out, **kw)
        if self.name == "random-walker":
            image01 = apply_window(np.asarray(volume_hu, np.float32), ABDOMEN_LEVEL_HU, ABDOMEN_WIDTH_HU)
            return SeededVolume(image01, self.click_size, tuple(float(s) for s in spacing_mm), rw_grid_px)
        raise ValueError(f"method {self.name!r} has no 3D form; volume methods: {VOLUME_METHODS}")


def build_methods(
    names, predictor: Predictor | None, unet: Predictor | None, click_size: ClickSize, fixed_radius_px: float, rw_grid_px: int
) -> list[Method]:
    """The requested methods, in ``METHODS`` order."""
    fixed = ClickSize(fixed_radius_px, None)
    table = {
        # (with --alpha none its clicks are fixed too: say which row is which)
        "iunet-dynamic": lambda: Method("iunet-dynamic", f"IU-Net, {click_size.describe()}"
                                        + (" (iunet-dynamic, --alpha none)" if click_size.alpha is None else ""), predictor, click_size),
        "iunet-fixed": lambda: Method("iunet-fixed", f"IU-Net, {fixed.describe()}", predictor, fixed),
        "iunet-zoom": lambda: Method("iunet-zoom", f"IU-Net, {click_size.describe()}, ZoomIn from click 2", predictor, click_size, zoom=ZoomIn()),
        "iunet-zoomout": lambda: Method("iunet-zoomout", f"IU-Net, {click_size.describe()}, ZoomOut at a large first mask", predictor, click_size, zoom_out=ZoomOut()),
        "unet-auto": lambda: Method("unet-auto", "U-Net, automatic (no clicks)", unet),
        "random-walker": lambda: Method("random-walker", f"random walker ({rw_grid_px}² grid), {click_size.describe()}", None, click_size, rw_grid_px),
        "watershed": lambda: Method("watershed", f"marker watershed, {click_size.describe()}", None, click_size),
    }
    return [table[n]() for n in METHODS if n in names]
