"""Training data: slices, synthetic CT rendered from label maps, and click simulation.

Very little labelled CT exists here, so most training slices are *rendered* from real label
maps in the spirit of SynthSeg (domain randomisation): every structure gets a HU value drawn
around contrast-CT values (wide enough to cover any organ or lesion), smooth texture, a body
with subcutaneous fat, muscle, spine and ribs, bowel with gas, distractor blobs, partial-volume
blur, noise and random geometry. Real CT slices (with their labels) are mixed in when given.

Everything here works on the model grid (G × G) to keep rendering cheap; ``native_px`` records
the slice's original size so that the dynamic click radius (α · area, paper eq. 4) is computed
on native pixels exactly as at test time, then scaled to the grid.

Sources (``SliceBank``): label volumes from NIfTI files (MSD labels, TotalSegmentator maps),
real (image, label) volumes (an MSD task folder, TotalSegmentator's CT), and a built-in
generator of random anatomy-like shapes that needs no data at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from .clicks import Click, click_radius_px, encode_clicks, geodesic_maps
from .model import InputConfig
from .robot import PAPER_BAND_PX, bounding_box, deepest_point, paper_pair
from .weight_maps import combined_weight_map
from .windowing import HU_AIR, apply_window

# HU ranges (contrast-enhanced, portal venous phase) used for domain randomisation.
HU_FAT = (-120.0, -70.0)
HU_MUSCLE = (30.0, 70.0)
HU_ORGAN = (-20.0, 260.0)  # any organ or lesion the user might click
HU_SOFT = (10.0, 80.0)
HU_CORTICAL = (500.0, 1200.0)
HU_MARROW = (120.0, 350.0)


@dataclass
class LabelSlice:
    """One axial slice on the grid: integer labels (G, G) (0 = background), an optional real
    HU image (G, G), the body mask when known, and the slice's native size in pixels."""

    labels: np.ndarray
    native_px: int
    hu: np.ndarray | None = None
    body: np.ndarray | None = None
    target_ids: tuple[int, ...] = ()  # label ids that may be chosen as target (empty = any)
    source: str = ""
    # The whole label volume on the grid (Z, G, G), shared by all slices of a volume, with this
    # slice's index and the slice spacing: neighbouring slices for propagation training.
    volume: np.ndarray | None = field(default=None, repr=False)
    z: int = -1
    spacing_z_mm: float = 0.0


def _resize_nearest(a: np.ndarray, g: int) -> np.ndarray:
    zy, zx = g / a.shape[0], g / a.shape[1]
    return ndimage.zoom(a, (zy, zx), order=0, grid_mode=True, mode="nearest")


def _resize_linear(a: np.ndarray, g: int) -> np.ndarray:
    zy, zx = g / a.shape[0], g / a.shape[1]
    sigma = (max(1 / zy - 1, 0) / 2, max(1 / zx - 1, 0) / 2)  # anti-alias when shrinking
    a = ndimage.gaussian_filter(a.astype(np.float32), sigma) if max(sigma) > 0 else a.astype(np.float32)
    return ndimage.zoom(a, (zy, zx), order=1, grid_mode=True, mode="nearest")


def slices_from_volume(
    labels_zyx: np.ndarray,
    grid_px: int,
    hu_zyx: np.ndarray | None = None,
    target_ids: Sequence[int] = (),
    min_area_px: int = 20,
    source: str = "",
    spacing_z_mm: float = 0.0,
) -> list[LabelSlice]:
    """Axial slices of a (Z, Y, X) label volume (display orientation) that contain a target
    structure of at least ``min_area_px`` native pixels, resized to the grid. Every slice keeps a
    reference to the whole grid label volume (``volume``, (Z, G, G) int16, shared) and its index,
    so that propagation samples can use its neighbours ``spacing_z_mm`` apart."""
    out = []
    lab = np.asarray(labels_zyx).astype(np.int32)
    grid_vol = np.stack([_resize_nearest(lab[z], grid_px).astype(np.int16) for z in range(lab.shape[0])])
    for z in range(lab.shape[0]):
        sl = lab[z]
        tgt = np.isin(sl, target_ids) if target_ids else sl > 0
        if tgt.sum() < min_area_px:
            continue
        hu = None if hu_zyx is None else _resize_linear(hu_zyx[z], grid_px)
        body = None if hu_zyx is None else _resize_nearest((hu_zyx[z] > -500).astype(np.uint8), grid_px) > 0
        out.append(LabelSlice(grid_vol[z].copy(), int(max(sl.shape)), hu, body, tuple(target_ids), source, grid_vol, z, float(spacing_z_mm)))
    return out


# ---------------------------------------------------------------------------------------
# Rendering


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_px)
    return n / (n.std() + 1e-6)


def _gaussian_radius(sigma_px: float) -> int:
    """The half-width in px of ``ndimage.gaussian_filter``'s kernel (its default truncate=4)."""
    return int(4.0 * float(sigma_px) + 0.5)


def _noise_std(sigma_px: float) -> float:
    """The standard deviation of unit white noise after ``ndimage.gaussian_filter`` with
    ``sigma_px`` (default truncation): the sum of the squared 1D kernel taps, squared and
    rooted over two axes, i.e. that sum itself."""
    radius = _gaussian_radius(sigma_px)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / float(sigma_px)) ** 2)
    k /= k.sum()
    return float((k**2).sum())


def _smooth_noise_in(mask: np.ndarray, rng: np.random.Generator, sigma_px: float) -> np.ndarray:
    """``_smooth_noise`` where ``mask`` (G, G) bool is True, 1D (in ``mask``'s order): the same
    white noise is drawn over the whole grid (so the random stream, and everything rendered
    after it, is as with ``_smooth_noise``, and a structure rendered on several slices with one
    seed keeps its texture), but it is filtered only on the mask's box grown by the filter's
    reach, and scaled by the filtered field's theoretical standard deviation instead of its
    sample one: inside the mask, the whole-grid field's values up to that scale, for the cost
    of the box (most labelled structures are small)."""
    white = rng.standard_normal(mask.shape)
    box = bounding_box(mask, _gaussian_radius(sigma_px) + 1)
    n = ndimage.gaussian_filter(white[box].astype(np.float32), sigma_px)
    return n[mask[box]] / _noise_std(sigma_px)


def _edt(m: np.ndarray) -> np.ndarray:
    """``ndimage.distance_transform_edt(m)`` for a (G, G) bool mask, the same values, computed on
    the mask's box grown by one pixel where the grid allows (that ring is background, and no
    background beyond it is nearer to a pixel inside), so a small structure costs its box."""
    out = np.zeros(m.shape, np.float64)
    if m.any():
        box = bounding_box(m, 1)
        out[box] = ndimage.distance_transform_edt(m[box])
    return out


def _dilate(m: np.ndarray, iterations: int = 1) -> np.ndarray:
    """``ndimage.binary_dilation(m, iterations=iterations)`` (the default cross) for a (G, G)
    bool mask, the same pixels, computed on the mask's box grown by ``iterations`` (nothing
    beyond it can be reached), so a small structure costs its box. ``iterations`` < 1 (scipy:
    until nothing changes) runs on the whole grid."""
    if int(iterations) < 1:
        return ndimage.binary_dilation(m, iterations=int(iterations))
    out = np.zeros(m.shape, bool)
    if m.any():
        box = bounding_box(m, int(iterations))
        out[box] = ndimage.binary_dilation(m[box], iterations=int(iterations))
    return out


def _ellipse(shape, cy, cx, ry, rx, angle=0.0) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
    return (u / max(rx, 1e-3)) ** 2 + (v / max(ry, 1e-3)) ** 2 <= 1.0


def random_blob(shape: tuple[int, int], rng: np.random.Generator, cy: float, cx: float, r: float) -> np.ndarray:
    """A smooth irregular blob of mean radius ``r`` px around (cy, cx). Evaluated only in the
    box it can reach (radius ≤ r · (1 + Σ 0.25/k) · 1.4 < 2.2 r): the same blob as over the
    whole grid, the same draws, a fraction of the work for small blobs."""
    amps = [(rng.uniform(0, 0.25 / k), rng.uniform(0, 2 * np.pi)) for k in range(1, 5)]
    ry, rx = rng.uniform(0.6, 1.4), rng.uniform(0.6, 1.4)
    out = np.zeros(shape, bool)
    reach = 2.2 * max(r, 0.0) + 2
    y0, y1 = max(int(np.floor(cy - reach)), 0), min(int(np.ceil(cy + reach)) + 1, shape[0])
    x0, x1 = max(int(np.floor(cx - reach)), 0), min(int(np.ceil(cx + reach)) + 1, shape[1])
    if y0 >= y1 or x0 >= x1:
        return out
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    ang = np.arctan2(yy - cy, xx - cx)
    rad = np.full_like(ang, r)
    for k, (a, phase) in enumerate(amps, start=1):
        rad += r * a * np.cos(k * ang + phase)
    out[y0:y1, x0:x1] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= rad**2
    return out


def synthetic_labels(grid_px: int, rng: np.random.Generator) -> LabelSlice:
    """A built-in random 'anatomy': 2–6 organ-like blobs inside an elliptic body; needs no data."""
    g = grid_px
    lab = np.zeros((g, g), np.int16)
    n = int(rng.integers(2, 7))
    for k in range(1, n + 1):
        r = rng.uniform(0.03, 0.14) * g
        cy, cx = rng.uniform(0.3, 0.7) * g, rng.uniform(0.2, 0.8) * g
        lab[random_blob((g, g), rng, cy, cx, r) & (lab == 0)] = k
    return LabelSlice(lab, 512, source="synthetic")


def random_tube(shape: tuple[int, int], rng: np.random.Generator, width_px: float,
                start_yx: tuple[float, float] | None = None) -> np.ndarray:
    """A smooth curved tube (vessel-like, possibly branching) of about ``width_px`` px across,
    from ``start_yx`` (default: a random point in the middle of the slice)."""
    g = shape[0]
    canvas = np.zeros(shape, bool)
    y, x = (rng.uniform(0.3, 0.7) * g, rng.uniform(0.25, 0.75) * g) if start_yx is None else start_yx
    for _branch in range(int(rng.integers(1, 4))):
        ang, yy, xx = rng.uniform(0, 2 * np.pi), y, x
        for _ in range(int(rng.integers(15, 60))):
            ang += rng.normal(0, 0.15)
            yy, xx = yy + 2 * np.sin(ang), xx + 2 * np.cos(ang)
            iy, ix = int(round(yy)), int(round(xx))
            if not (0 <= iy < g and 0 <= ix < g):
                break
            canvas[iy, ix] = True
        y, x = yy, xx
    return _dilate(canvas, max(1, int(round(width_px / 2))))


def training_labels(grid_px: int, rng: np.random.Generator) -> LabelSlice:
    """Random label slices for training, wider than ``synthetic_labels`` (which stays as it is,
    since the benchmark's synthetic dataset is drawn from it): small lesions to regions filling a
    third of the slice, and branching tubes (vessels), so that no size is the only one a first
    click has ever meant."""
    sl = synthetic_labels(grid_px, rng)
    g = grid_px
    lab = sl.labels
    k = int(lab.max()) + 1
    if rng.random() < 0.35:  # a large organ-like region (liver-sized)
        big = random_blob((g, g), rng, rng.uniform(0.35, 0.65) * g, rng.uniform(0.3, 0.7) * g, rng.uniform(0.15, 0.27) * g)
        lab[big] = k
        k += 1
    for _ in range(int(rng.integers(0, 3))):  # vessels
        lab[random_tube((g, g), rng, rng.uniform(2, 9) * g / 256) & (lab == 0)] = k
        k += 1
    if rng.random() < 0.4:  # small lesions
        for _ in range(int(rng.integers(1, 4))):
            lab[random_blob((g, g), rng, rng.uniform(0.3, 0.7) * g, rng.uniform(0.25, 0.75) * g, rng.uniform(0.008, 0.03) * g)] = k
            k += 1
    return sl


INTERIOR_MIN_DEPTH_PX = 6.0  # grid px: structures thinner than this get no interior structure


def render_interior(hu: np.ndarray, m: np.ndarray, base_hu: float, rng: np.random.Generator, fat_sinus: bool = False,
                    wide: bool = False, soft: bool = False, mottled: bool = False) -> np.ndarray:
    """Internal structure that a structure's label includes, drawn into ``hu`` (G, G) in place:
    either a fat or fluid *sinus* at its core, often opening to its border (renal sinus and
    hilum, splenic hilum, a necrotic centre), or *vessels* through it (enhanced brighter, or
    darker, as portal and hepatic veins in the liver). Real organs are not uniform, and the
    deepest point of a kidney, where the ``ritm`` robot and many people click first, lies in its
    sinus: the label, and so the target, stays the whole structure. ``m`` (G, G) bool; returns
    the changed pixels (empty when ``m`` is thinner than ``INTERIOR_MIN_DEPTH_PX``).
    ``fat_sinus``: always a sinus, of fat (a renal sinus; ``--sinus-p`` samples); ``wide``: a
    wide one, as a kidney's middle slices show it (``_renal_sinus``); ``soft``: its core of
    fluid or soft tissue instead of fat; ``mottled``: fat with soft-tissue strands."""
    d = _edt(m)
    depth = float(d.max())
    if depth < INTERIOR_MIN_DEPTH_PX:
        return np.zeros_like(m)
    cy, cx = np.unravel_index(int(np.argmax(d)), d.shape)
    shape = m.shape
    if fat_sinus:
        return _renal_sinus(hu, m, d, (int(cy), int(cx)), depth, base_hu, rng, wide, soft, mottled)
    if rng.random() < 0.5:  # sinus
        region = random_blob(shape, rng, cy, cx, rng.uniform(0.3, 0.65) * depth) & (d > 2)
        region[cy, cx] = True  # its core: the structure's deepest point
        if rng.random() < 0.6:  # the hilum: an opening from the core to the border
            region |= _hilum(shape, (cy, cx), depth, (0.12, 0.3), rng)
        region &= m
        value = rng.uniform(-110, -30) if rng.random() < 0.65 else rng.uniform(-5, 30)
        hu[region] = value + rng.uniform(2, 10) * _smooth_noise(shape, rng, 1.5)[region]
        return region
    region = np.zeros_like(m)  # vessels
    ys, xs = np.nonzero(m)
    for i in range(int(rng.integers(1, 5))):
        start = (float(cy), float(cx)) if i == 0 and rng.random() < 0.5 else (float(ys[j := int(rng.integers(len(ys)))]), float(xs[j]))
        tube = random_tube(shape, rng, rng.uniform(1.5, max(2.0, 0.35 * depth)), start) & m
        shift = rng.uniform(40, 160) if rng.random() < 0.7 else -rng.uniform(30, 80)
        hu[tube] = base_hu + shift
        region |= tube
    return region


def _hilum(shape: tuple[int, int], core_yx: tuple[int, int], depth: float, width: tuple[float, float],
           rng: np.random.Generator) -> np.ndarray:
    """A straight opening (G, G) bool from ``core_yx`` outwards in a random direction, 1.8 ×
    ``depth`` px long, ``width`` (a range, in units of ``depth``) wide."""
    cy, cx = core_yx
    ang = rng.uniform(0, 2 * np.pi)
    t = np.arange(0.0, 1.8 * depth, 0.5)
    ys = np.clip(np.round(cy + t * np.sin(ang)).astype(int), 0, shape[0] - 1)
    xs = np.clip(np.round(cx + t * np.cos(ang)).astype(int), 0, shape[1] - 1)
    line = np.zeros(shape, bool)
    line[ys, xs] = True
    return _dilate(line, max(1, int(rng.uniform(*width) * depth)))


def _soft_sinus_hu(base_hu: float, rng: np.random.Generator) -> float:
    """HU of a renal sinus's fluid or soft tissue: 30-130 HU below the parenchyma's ``base_hu``, -5 at least."""
    return max(-5.0, base_hu - rng.uniform(30, 130))


def _renal_sinus(hu: np.ndarray, m: np.ndarray, d: np.ndarray, core_yx: tuple[int, int], depth: float,
                 base_hu: float, rng: np.random.Generator, wide: bool = False, soft: bool = False,
                 mottled: bool = False) -> np.ndarray:
    """A renal sinus as real CT shows it, drawn into ``hu`` (G, G) in place: a small fat core at
    the structure's deepest point ``core_yx`` (an eighth to a third of its depth ``depth`` px, 2 px at least),
    thin branches (calyces, 1-3 px) running from it towards the cortex, often a narrow hilum to
    the border, some branches fluid or enhanced (urine, vessels). Not the large round blob of
    ``render_interior``'s sinus, which looks like a lesion: in a kidney the bright parenchyma
    surrounds a branched dark pattern. ``wide``: the sinus of a kidney's middle slices, whose
    parenchyma wraps it as a C: a core of 0.3-0.55 × the depth and always a hilum, 0.15-0.35 ×
    the depth wide, so that the parenchyma on either side looks like two pieces. ``soft``: the core is not
    fat but fluid or soft tissue, 30-130 HU below the parenchyma (-5 HU at least), as a sinus with
    little fat, urine in the pelvis or a partial volume of both shows it (the 3D-IRCADb kidneys'
    sinus is 38-125 HU). ``mottled``: fat and soft tissue mixed on a 1-2 px scale, 30-70 % of the
    core soft tissue (vessels, a collapsed pelvis, septa in the fat), as the 3D-IRCADb kidneys'
    sinus looks where the robot clicks (clicks read -34 to 44 HU). ``m`` (G, G)
    bool, ``d`` its distance map; returns the changed pixels, which hold ``core_yx``."""
    shape = m.shape
    cy, cx = core_yx
    inner = d > 1.5
    region = random_blob(shape, rng, cy, cx, max(2.0, rng.uniform(*((0.3, 0.55) if wide else (0.12, 0.3))) * depth)) & inner
    region[cy, cx] = True
    branches = np.zeros_like(m)
    for _ in range(int(rng.integers(2, 7))):  # calyces
        ang, y, x = rng.uniform(0, 2 * np.pi), float(cy), float(cx)
        for _step in range(int(rng.uniform(0.5, 1.1) * depth / 0.7)):
            ang += rng.normal(0, 0.25)
            y, x = y + 0.7 * np.sin(ang), x + 0.7 * np.cos(ang)
            iy, ix = int(round(y)), int(round(x))
            if not (0 <= iy < shape[0] and 0 <= ix < shape[1]) or not inner[iy, ix]:
                break
            branches[iy, ix] = True
    if rng.random() < 0.5:
        branches = _dilate(branches) & inner
    region |= branches
    if wide:  # the hilum, wide open
        region |= _hilum(shape, (cy, cx), depth, (0.15, 0.35), rng)
    elif rng.random() < 0.6:  # the hilum: a narrow opening from the core to the border
        region |= _hilum(shape, (cy, cx), depth, (0.06, 0.18), rng)
    region &= m
    noise = _smooth_noise(shape, rng, 1.0)
    core_hu = rng.uniform(-110, -30)
    if soft:
        core_hu = _soft_sinus_hu(base_hu, rng)
    hu[region] = core_hu + rng.uniform(4, 14) * noise[region]
    if mottled:  # soft-tissue strands through the fat (drawn only here: the rest is as before, draw for draw)
        soft_hu = _soft_sinus_hu(base_hu, rng)
        mix = _smooth_noise(shape, rng, rng.uniform(0.8, 1.8))
        strands = region & (mix > np.quantile(mix[region], rng.uniform(0.3, 0.7)))
        hu[strands] += soft_hu - core_hu
    if rng.random() < 0.5:  # some branches hold urine or enhanced vessels
        other = branches & region & (noise > rng.uniform(0.0, 1.0))
        other[cy, cx] = False
        hu[other] = rng.uniform(-5, 25) if rng.random() < 0.5 else base_hu + rng.uniform(20, 120)
    return region


def _body_mask(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An elliptic body that contains every labelled pixel."""
    g = labels.shape[0]
    cy, cx = g * rng.uniform(0.47, 0.55), g * rng.uniform(0.47, 0.53)
    ry, rx = g * rng.uniform(0.28, 0.38), g * rng.uniform(0.36, 0.47)
    ys, xs = np.nonzero(labels)
    if len(ys):  # grow until the labels fit
        need = np.max(((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2)
        if need > 0.8:
            f = np.sqrt(need / 0.8)
            ry, rx = min(ry * f, g * 0.49), min(rx * f, g * 0.49)
    return _ellipse((g, g), cy, cx, ry, rx, rng.uniform(-0.1, 0.1))


WIDE_SINUS_CENTRE_P = 0.5  # a wide sinus's sample is first clicked at its core (else anywhere in the target)
SEAM_MAX_PX = 2  # fat planes between touching structures: 1-2 grid pixels (about 1.5-3 mm at 256²)


def fat_seam(labels: np.ndarray, width_px: int = 1) -> np.ndarray:
    """(G, G) bool: the interface a fat plane fills in CT where two labelled structures touch: the
    pixels of each structure within ``width_px`` (4-connected steps) of a structure with a
    higher label, so the plane is ``width_px`` wide, on one side, as label maps split it
    arbitrarily. Background (0) makes no interface: a structure's edge against fat or bowel
    already has one."""
    cross = ndimage.generate_binary_structure(2, 1)
    highest = labels
    for _ in range(width_px):  # the highest label within width_px 4-connected steps
        highest = ndimage.grey_dilation(highest, footprint=cross, mode="nearest")
    return (labels > 0) & (highest > labels)


def render_ct(sl: LabelSlice, rng: np.random.Generator, focus_id: int = 0, similar_p: float = 0.0,
              interior_p: float = 0.0, sinus_mask: np.ndarray | None = None, seam_p: float = 0.0,
              wide_sinus: bool = False, soft_sinus: bool = False, mottled_sinus: bool = False) -> np.ndarray:
    """Render a synthetic CT slice (G, G) float32 HU from a label slice (domain randomised).

    With probability ``similar_p``, the structures that touch label ``focus_id`` (the target)
    get nearly its HU (± 12 HU), as the spleen, kidney and liver have in portal venous CT: then
    only shape and the previous mask tell them apart, which is what a model must learn so that
    it neither grows into a touching organ nor propagates into it. ``focus_id=0`` (the default)
    renders exactly as before, draw for draw. With probability ``interior_p`` per structure,
    ``render_interior`` adds a sinus or vessels inside it (0, the default: as before).
    ``sinus_mask`` (G, G) bool, a part of label ``focus_id`` (the target): it gets a fat sinus
    at its core, always (None, the default: as before), a wide one with ``wide_sinus``, one of
    fluid or soft tissue with ``soft_sinus``, of fat with soft-tissue strands with ``mottled_sinus``. With
    probability ``seam_p``, every interface where two labelled structures touch gets a thin fat
    plane (``fat_seam``), as CT shows between most abutting organs (0, the default: as before,
    draw for draw)."""
    lab = sl.labels
    g = lab.shape[0]
    shape = (g, g)
    body = sl.body if sl.body is not None else _body_mask(lab, rng)
    hu = np.full(shape, HU_AIR, np.float32)
    # body wall: subcutaneous fat, then muscle, then visceral fat/soft tissue mix
    depth = ndimage.distance_transform_edt(body)
    fat_w, mus_w = rng.uniform(0.01, 0.06) * g, rng.uniform(0.015, 0.04) * g
    hu[body] = rng.uniform(*HU_FAT)
    muscle = body & (depth > fat_w) & (depth <= fat_w + mus_w)
    hu[muscle] = rng.uniform(*HU_MUSCLE)
    inner = body & (depth > fat_w + mus_w)
    mix = _smooth_noise(shape, rng, rng.uniform(2, 6))
    visceral = np.where(mix > rng.uniform(-0.5, 0.8), rng.uniform(*HU_FAT), rng.uniform(*HU_SOFT))
    hu[inner] = visceral[inner]
    # spine and ribs (posterior = bottom of the image)
    ys, xs = np.nonzero(body)
    if len(ys):
        cy, cx = ys.max() - rng.uniform(0.12, 0.2) * (ys.max() - ys.min()), xs.mean() + rng.normal(0, 2)
        rv = rng.uniform(0.035, 0.06) * g
        vert = _ellipse(shape, cy, cx, rv, rv * rng.uniform(1.0, 1.3))
        hu[vert] = rng.uniform(*HU_CORTICAL)
        hu[ndimage.binary_erosion(vert, iterations=max(1, int(rv * 0.2)))] = rng.uniform(*HU_MARROW)
        rim = body & (depth > fat_w) & (depth <= fat_w + mus_w + 0.02 * g) & ~muscle
        for _ in range(int(rng.integers(0, 10))):
            k = rng.integers(len(ys))
            if rim[ys[k], xs[k]]:
                hu[_ellipse(shape, ys[k], xs[k], rng.uniform(1, 3) * g / 256, rng.uniform(2, 6) * g / 256, rng.uniform(0, 3))] = rng.uniform(*HU_CORTICAL)
    # distractors: organ-like blobs and bowel with gas, under the labelled structures
    for _ in range(int(rng.integers(1, 7))):
        if not len(ys):
            break
        k = rng.integers(len(ys))
        blob = random_blob(shape, rng, ys[k], xs[k], rng.uniform(0.02, 0.1) * g) & inner
        hu[blob] = rng.uniform(*HU_ORGAN) + 12 * _smooth_noise(shape, rng, 3)[blob]
        if rng.random() < 0.4:  # bowel: wall + gas/fluid content
            gas = ndimage.binary_erosion(blob, iterations=2) & (_smooth_noise(shape, rng, 2) > 0.3)
            hu[gas] = HU_AIR if rng.random() < 0.6 else rng.uniform(-10, 30)
    # labelled structures, each with its own HU and texture
    similar: set[int] = set()
    if focus_id and similar_p > 0 and rng.random() < similar_p and (lab == focus_id).any():
        touching = _dilate(lab == focus_id, max(2, g // 64))
        similar = {int(k) for k in np.unique(lab[touching]) if k and k != focus_id}
        focus_hu = rng.uniform(*HU_ORGAN)
    for k in np.unique(lab):
        if k == 0:
            continue
        m = lab == k
        tex = rng.uniform(3, 20) * _smooth_noise_in(m, rng, rng.uniform(1, 4))  # (m.sum(),)
        if similar and k == focus_id:
            base = focus_hu
        elif similar and k in similar:
            base = focus_hu + rng.normal(0, 12)
        else:
            base = rng.uniform(*HU_ORGAN)
        hu[m] = base + tex
        if rng.random() < 0.15:  # a lesion inside an organ
            ys_k, xs_k = np.nonzero(m)
            i = rng.integers(len(ys_k))
            les = random_blob(shape, rng, ys_k[i], xs_k[i], rng.uniform(0.01, 0.04) * g) & m
            hu[les] = rng.uniform(*HU_ORGAN)
        if sinus_mask is not None and k == focus_id:
            render_interior(hu, sinus_mask, base, rng, fat_sinus=True, wide=wide_sinus, soft=soft_sinus, mottled=mottled_sinus)
        elif interior_p > 0 and rng.random() < interior_p:
            render_interior(hu, m, base, rng)
    if seam_p > 0 and rng.random() < seam_p:
        seam = fat_seam(lab, int(rng.integers(1, SEAM_MAX_PX + 1)))
        if seam.any():  # partial volume: the plane is thinner than a pixel as often as not
            f = rng.uniform(0.5, 1.0)
            hu[seam] = (1 - f) * hu[seam] + f * rng.uniform(*HU_FAT)
    # scanner: partial-volume blur, correlated noise, occasional streaks
    hu = ndimage.gaussian_filter(hu, rng.uniform(0.3, 1.2))
    hu += rng.uniform(3, 25) * (0.6 * rng.standard_normal(shape) + 0.4 * _smooth_noise(shape, rng, 1.0)).astype(np.float32)
    return hu.astype(np.float32)


# ---------------------------------------------------------------------------------------
# Training samples


@dataclass(frozen=True)
class SampleConfig:
    """How a training sample is made (paper Table I options live here)."""

    # the model's input settings (window, grid, click encoding, default radius, α): the same
    # InputConfig the checkpoint carries, so training draws exactly what inference will
    inputs: InputConfig = field(default_factory=InputConfig)
    window_jitter: float = 0.15  # random windowing: ± fraction of the width
    interactions: int = 1  # random (positive, negative) pairs, the paper's simulation
    max_interactions: int = 3  # draw 1..max pairs per sample when > interactions
    boundary_weights: bool = True
    click_weights: str = "equal"
    real_fraction: float = 0.3  # use the real image instead of a rendering when a slice has one
    flip: bool = False  # left-right flips (off for organ-specific models: the spleen is on the left)
    geometry: bool = True  # random scale / rotation / shift
    # The first interaction's clicks get the default radius, as at test time (no mask yet, so
    # α · area is unknown); α · true area would tell the model the object's size through the
    # disk, a cue a user's first click never carries (docs/design.md, "first click").
    first_click_default: bool = False
    single_click_p: float = 0.0  # first interaction = one positive click only (as the ritm robot / a person)
    centre_click_p: float = 0.5  # of those, at the object's deepest point (else anywhere inside)
    propagate_p: float = 0.0  # samples that carry a neighbouring slice's mask and no click
    similar_p: float = 0.0  # structures touching the target rendered at nearly its HU (render_ct)
    max_gap_mm: float = 8.0  # neighbours for propagation up to this far apart (1 or 2 slices)
    geodesic: bool = False  # also compute the clicks' geodesic maps (models with ModelConfig.geodesic)
    geodesic_soft: bool = False  # and the second pair at inputs.geodesic_soft_lambda (ModelConfig.geodesic_soft)
    interior_p: float = 0.0  # per structure: a sinus or vessels inside it, part of its label (render_interior)
    large_target_p: float = 0.0  # the target chosen by area instead of uniformly (choose_target_id)
    partial_prev_p: float = 0.0  # propagation samples whose previous mask is only a part (partial_mask)
    spill_p: float = 0.0  # click samples correcting a previous mask that spilt into a touching structure
    prop_spill_p: float = 0.0  # propagation samples whose previous mask spilt into a touching structure (no click)
    spill_parts: int = 1  # a spill sample's leak runs into 1 to this many structures, one touching the next (spill_mask)
    zoom_p: float = 0.0  # click samples seen zoomed in around the object, as ZoomIn shows them (zoom_crop)
    wrong_prev_p: float = 0.0  # click samples whose previous mask is another structure, a background click on it
    lesion_p: float = 0.0  # click samples with a faint lesion painted into the target organ (inner_lesion)
    lesion_target_p: float = 0.6  # of those, the lesion is the target (else the organ, which includes it)
    vessel_p: float = 0.0  # click samples with a vessel drawn into the target organ (inner_vessel)
    vessel_target_p: float = 0.6  # of those, the vessel is the target (else the organ, which includes it)
    vessel_pieces_p: float = 0.0  # of cross-section vessels, the share with 1-3 more cross-sections of the same tree
    sinus_p: float = 0.0  # click samples whose target has a fat sinus at its core, first clicked there
    sinus_wide_p: float = 0.0  # of those, the share with a wide sinus and hilum (a kidney's middle slices)
    sinus_soft_p: float = 0.0  # of those, the share whose sinus core is fluid or soft tissue, not fat
    sinus_mottled_p: float = 0.0  # of the others, the share whose fat core has soft-tissue strands
    seam_p: float = 0.0  # renderings with a thin fat plane wherever two labelled structures touch (fat_seam)
    # plain click samples whose target must show its border: drawn again (a new rendering) while
    # over clear_boundary_max of its border is hidden (boundary_ambiguity), up to CLEAR_BOUNDARY_TRIES times
    clear_boundary_p: float = 0.0
    clear_boundary_max: float = 0.25
    prev_image: bool = False  # also the image the previous mask was drawn on (models with ModelConfig.prev_image)
    near_end_p: float = 0.0  # of the propagation pairs at a structure's end, the share taken onto its last slice (neighbour_target)
    near_end_max_px: int = 0  # ... only for structures no larger than this (grid px) to their end; 0: any


@dataclass
class Sample:
    image: np.ndarray  # (1, G, G) windowed [0, 1]
    guidance: np.ndarray  # (2, G, G)
    target: np.ndarray  # (1, G, G) 0/1
    weight: np.ndarray  # (1, G, G) max(d, w)
    clicks: list[Click] = field(default_factory=list)  # on the grid
    native_px: int = 512
    hu: np.ndarray | None = None  # (G, G) HU, for iterative click simulation
    prev: np.ndarray | None = None  # (1, G, G) 0/1 previous-mask channel (neighbour's mask when propagating)
    geodesic: np.ndarray | None = None  # (2, G, G) geodesic click maps (SampleConfig.geodesic; 4 with geodesic_soft), else None
    # (1, G, G) windowed: the slice the previous mask was drawn on (the neighbour when
    # propagating, else the image itself), with SampleConfig.prev_image; else None
    prev_image: np.ndarray | None = None
    prev_hu: np.ndarray | None = None  # (G, G) HU of that slice, with prev_image (for validation)


def choose_target(sl: LabelSlice, rng: np.random.Generator) -> np.ndarray:
    """The structure the simulated user wants: a random allowed label's largest component."""
    return choose_target_id(sl, rng)[0]


def choose_target_id(sl: LabelSlice, rng: np.random.Generator, large_p: float = 0.0) -> tuple[np.ndarray, int]:
    """``choose_target`` and the label id it chose (0 when the slice has no allowed label).
    Each allowed label is equally likely; with probability ``large_p`` the choice is by area
    instead, so that large organs (a liver is one of many labels on its slices) are targets as
    often as a user means them (0, the default: as before, draw for draw)."""
    ids = [int(k) for k in np.unique(sl.labels) if k and (not sl.target_ids or k in sl.target_ids)]
    if not ids:
        return np.zeros(sl.labels.shape, bool), 0
    ids_ok = [k for k in ids if (sl.labels == k).sum() >= 4] or ids
    if large_p > 0 and rng.random() < large_p:
        areas = np.array([(sl.labels == k).sum() for k in ids_ok], np.float64)
        k = int(rng.choice(ids_ok, p=areas / areas.sum()))
    else:
        k = int(rng.choice(ids_ok))
    m = sl.labels == k
    if not sl.target_ids:  # class-agnostic: a single connected object
        cc, n = ndimage.label(m)
        if n > 1:
            m = cc == (1 + int(np.argmax(np.bincount(cc.ravel())[1:])))
    return m, k


def _near(labels: np.ndarray, k: int, footprint: np.ndarray, reach_px: int) -> np.ndarray:
    """The components of label ``k`` in ``labels`` that touch ``footprint`` grown by ``reach_px``."""
    m = labels == k
    if not m.any() or not footprint.any():
        return np.zeros_like(m)
    near = _dilate(footprint, reach_px)
    cc, _ = ndimage.label(m)
    keep = np.unique(cc[near & m])
    return np.isin(cc, keep[keep > 0])


def neighbour_target(
    sl: LabelSlice, k: int, target: np.ndarray, rng: np.random.Generator, max_gap_mm: float, end_p: float = 0.4,
    near_end_p: float = 0.0, near_end_max_px: int = 0,
) -> tuple[LabelSlice, np.ndarray, np.ndarray, np.ndarray] | None:
    """A propagation pair from the label volume of ``sl``: ``(slice to render, its target,
    previous mask, the labels (G, G) of the slice that mask lies on)``. The previous mask is
    the structure (label ``k``, the components near ``target``) on one slice, the target the
    same structure 1 or 2 slices away (at most ``max_gap_mm``). With probability ``end_p`` the
    pair is taken where the structure ends, so the target is empty: that is the right answer
    there, and the signal that stops propagation. Of those, with probability ``near_end_p`` the
    pair is taken one step earlier, onto the last slice that has the structure: a small carried
    mask then goes on as often as it ends, so that a small structure is not taken for an ending
    one (0, the default: as before, draw for draw). With ``near_end_max_px`` > 0 only structures
    small all the way to their end (no walked cross-section over that many grid pixels: lesions,
    nodes, vessels) are taken so, and a large organ's tapering tip still ends. ``None`` when
    ``sl`` has no volume or the neighbour is outside it."""
    if sl.volume is None or sl.z < 0 or k == 0:
        return None
    vol, nz = sl.volume, sl.volume.shape[0]
    reach = max(2, sl.labels.shape[0] // 32)
    gaps = [d for d in (1, 2) if d == 1 or (sl.spacing_z_mm > 0 and d * sl.spacing_z_mm <= max_gap_mm)]
    gap, step = int(rng.choice(gaps)), int(rng.choice((-1, 1)))
    z1, prev = sl.z, target
    if rng.random() < end_p:  # walk to the last slice that still has the structure
        walked = [(z1, prev)]
        while 0 <= z1 + step < nz:
            nxt = _near(vol[z1 + step], k, prev, reach)
            if not nxt.any():
                break
            z1, prev = z1 + step, nxt
            walked.append((z1, prev))
        if near_end_p > 0 and rng.random() < near_end_p and len(walked) > gap:  # onto the last slice instead
            if near_end_max_px <= 0 or max(int(m.sum()) for _, m in walked) <= near_end_max_px:
                z1, prev = walked[-1 - gap]
    z2 = z1 + gap * step
    if not 0 <= z2 < nz:
        return None
    lab1, lab2 = vol[z1].astype(np.int32), vol[z2].astype(np.int32)
    if sl.labels.max() >= 1000:  # rendered into a context: keep the context, swap the structures
        ctx = np.where(sl.labels >= 1000, sl.labels, 0)
        lab1, lab2 = np.where(lab1 > 0, lab1, ctx), np.where(lab2 > 0, lab2, ctx)
    body = sl.body
    if body is not None:
        body = body | ndimage.binary_dilation(lab2 > 0, iterations=3)
    out = LabelSlice(lab2, sl.native_px, None, body, sl.target_ids, sl.source)
    return out, _near(lab2, k, prev, reach), prev, lab1


def neighbour_hu(hu: np.ndarray, labels: np.ndarray, prev_labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The neighbouring slice of a rendering, on the same scan: ``hu`` (G, G) rendered from
    ``labels``, returned as the slice of ``prev_labels`` would look. Every pixel whose label
    differs takes the HU of the nearest pixel that has its new label in ``hu`` (so a structure
    keeps its intensity and texture from slice to slice, and where one has ended the tissue
    around it shows); a label absent from ``hu`` gets an organ HU of its own. The changed
    pixels' edges get the scanner's blur, and the whole slice fresh noise, so that unchanged
    pixels are not copies (a cue real neighbours never give). float32 (G, G)."""
    out = hu.astype(np.float32, copy=True)
    changed = labels != prev_labels
    if changed.any():
        for j in np.unique(prev_labels[changed]):
            dst = changed & (prev_labels == j)
            src = (labels == j) & ~changed
            if src.any():
                _, (iy, ix) = ndimage.distance_transform_edt(~src, return_indices=True)
                out[dst] = hu[iy[dst], ix[dst]]
            else:
                out[dst] = rng.uniform(*HU_ORGAN) + rng.uniform(3, 20) * _smooth_noise_in(dst, rng, rng.uniform(1, 4))
        edge = _dilate(changed, 2) & ~ndimage.binary_erosion(changed, iterations=2)
        out[edge] = ndimage.gaussian_filter(out, rng.uniform(0.5, 1.2))[edge]
    out += rng.uniform(2, 10) * rng.standard_normal(out.shape).astype(np.float32)
    return out


def perturb_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A neighbour's mask as a model would have predicted it: slightly grown or shrunk and shifted."""
    m = mask.copy()
    if not m.any():
        return m
    r = int(rng.integers(-2, 3))
    if r > 0:
        m = _dilate(m, r)
    elif r < 0:
        eroded = ndimage.binary_erosion(m, iterations=-r)
        m = eroded if eroded.any() else m
    dy, dx = rng.integers(-2, 3, 2)
    return np.roll(m, (int(dy), int(dx)), axis=(0, 1))


def partial_mask(mask: np.ndarray, rng: np.random.Generator, keep: tuple[float, float] = (0.2, 0.8)) -> np.ndarray:
    """A part of ``mask`` (G, G) bool, cut by a random blob around one of its pixels, as a
    propagated mask is when an earlier slice was under-segmented: its cut edges run through the
    structure, not along image edges. Keeps about ``keep`` of the area (the whole mask when the
    cut keeps under 10 %)."""
    if not mask.any():
        return mask
    ys, xs = np.nonzero(mask)
    i = int(rng.integers(len(ys)))
    r = np.sqrt(rng.uniform(*keep) * len(ys) / np.pi)
    part = mask & random_blob(mask.shape, rng, ys[i], xs[i], r)
    return part if part.sum() >= 0.1 * len(ys) else mask


def _touching_labels(labels: np.ndarray, k: int, target: np.ndarray) -> list[int]:
    """The label ids other than ``k`` within 3 px of ``target`` (G, G) bool."""
    ring = _dilate(target, 3) & ~target
    return [int(v) for v in np.unique(labels[ring]) if v and v != k]


PROP_SPILL_KEEP = (0.1, 0.5)  # a propagated leak: a part of the touching structure, never most of it
PROP_SPILL_MAX = 0.5  # ... and at most half the carried mask's area (more is a mask on the wrong organ)


def spill_part(labels: np.ndarray, k: int, footprint: np.ndarray, rng: np.random.Generator,
               keep: tuple[float, float] = (0.3, 1.0)) -> np.ndarray | None:
    """The part (G, G) bool outside ``footprint`` of a structure that touches it (label ``k``'s
    mask, or a mask carried onto it), cut to ``keep`` of that structure's area, as a mask
    carried from slice to slice spills into a touching organ of the same intensity (spleen into
    kidney, liver into kidney); ``None`` when no other structure touches it, when nothing is
    left outside it, or, with ``keep`` under 1, when the cut would take all of the structure."""
    others = _touching_labels(labels, k, footprint)
    if not others:
        return None
    j = int(rng.choice(others))
    near = _near(labels, j, footprint, 3)
    part = partial_mask(near, rng, keep)
    if part.sum() > keep[1] * near.sum() + 0.5:  # the cut missed (partial_mask kept all of it)
        return None
    spill = part & ~footprint
    return spill if spill.any() else None


def spill_mask(labels: np.ndarray, k: int, target: np.ndarray, rng: np.random.Generator,
               keep: tuple[float, float] = (0.3, 1.0), parts: int = 1) -> np.ndarray | None:
    """``target`` (G, G) bool plus a spill into a structure that touches it (``spill_part``),
    then, up to ``parts`` structures in all, into a structure that touches the mask so far (a
    mask carried on over several slices runs from one organ into the next: the 3D-IRCADb liver's
    lower tip into the kidney and the bowel, docs/design.md "Volumes"); ``None`` when nothing
    touches the target."""
    mask, taken = target.copy(), []  # the labels spilt into so far
    for _ in range(max(1, parts)):
        lab = np.where(np.isin(labels, taken), 0, labels)  # a structure spilt into is not drawn again
        spill = spill_part(lab, k, mask, rng, keep)
        if spill is None:
            break
        taken += [int(v) for v in np.unique(labels[spill]) if v]
        mask |= spill
    return mask if (mask & ~target).any() else None


def wrong_mask(labels: np.ndarray, k: int, target: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A previous mask (G, G) bool that holds another structure instead of the target: a
    component of a label that touches ``target`` (preferred) or of any other label, as a mask
    carried past the target's end sits on the organ beside it (the spleen's on the left
    kidney). ``None`` when the slice has no other structure."""
    others = _touching_labels(labels, k, target) or [int(v) for v in np.unique(labels) if v and v != k]
    if not others:
        return None
    j = int(rng.choice(others))
    cc, _ = ndimage.label(labels == j)
    sizes = np.bincount(cc.ravel())[1:]
    m = cc == 1 + int(np.argmax(sizes))
    return m if m.sum() >= 16 else None


def _augment(hu: np.ndarray, masks: list[np.ndarray], rng: np.random.Generator, cfg: SampleConfig,
             others: Sequence[np.ndarray] = ()) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """The same random flip / scale / rotation / shift for the HU slice, every (G, G) mask and
    every HU slice of ``others`` (drawn once, so a sample's draws do not depend on ``others``).
    Returns the slice, the masks and the others."""
    hus = [hu, *others]
    if cfg.flip and rng.random() < 0.5:
        hus, masks = [h[:, ::-1] for h in hus], [m[:, ::-1] for m in masks]
    if cfg.geometry and rng.random() < 0.7:
        g = hu.shape[0]
        s = rng.uniform(0.8, 1.25)
        a = np.deg2rad(rng.uniform(-12, 12))
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) / s
        c = np.array([g / 2, g / 2])
        off = c - rot @ c + rng.uniform(-0.06, 0.06, 2) * g
        hus = [ndimage.affine_transform(h, rot, off, order=1, mode="constant", cval=HU_AIR) for h in hus]
        masks = [ndimage.affine_transform(m.astype(np.float32), rot, off, order=1) > 0.5 for m in masks]
    hus = [np.ascontiguousarray(h) for h in hus]
    return hus[0], [np.ascontiguousarray(m) for m in masks], hus[1:]


ZOOM_MAX = 3.0  # the closest zoom-in: a crop of a third of the full view's side (also iunet.inference.ZoomIn)


def zoom_crop(hu: np.ndarray, masks: list[np.ndarray], native_px: int, rng: np.random.Generator,
              expansion: tuple[float, float] = (1.25, 2.2), max_zoom: float = ZOOM_MAX) -> tuple[np.ndarray, list[np.ndarray], int]:
    """A zoomed-in view as the inference's ZoomIn makes it: a square crop around the union of
    ``masks`` (the target and the previous mask, (G, G) bool) whose side is their box's longer
    side times ``expansion`` (between a ``1/max_zoom`` and the whole of the view's side, at a
    random offset), resized back to the (G, G) grid. The HU slice (G, G) is interpolated
    linearly and gets fresh fine noise, so that the texture is not that of a smoothed image;
    the masks are interpolated and thresholded at 0.5. Returns the view, the masks and the
    native pixel size of the crop (for the α · area click size). Unchanged when the masks are
    empty or the crop would be nearly the whole view."""
    g = hu.shape[0]
    ref = np.logical_or.reduce(masks)
    if not ref.any():
        return hu, masks, native_px
    ys, xs = np.nonzero(ref)
    box = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    side = int(np.clip(round(box * rng.uniform(*expansion)), np.ceil(g / max_zoom), g))
    if side > 0.85 * g:
        return hu, masks, native_px
    cy = (ys.min() + ys.max()) / 2 + rng.uniform(-0.12, 0.12) * side
    cx = (xs.min() + xs.max()) / 2 + rng.uniform(-0.12, 0.12) * side
    y0 = int(np.clip(round(cy - side / 2), 0, g - side))
    x0 = int(np.clip(round(cx - side / 2), 0, g - side))
    view = _resize_linear(hu[y0 : y0 + side, x0 : x0 + side], g)
    view += rng.uniform(2, 12) * rng.standard_normal(view.shape).astype(np.float32)
    out = [_resize_linear(m[y0 : y0 + side, x0 : x0 + side].astype(np.float32), g) > 0.5 for m in masks]
    return view.astype(np.float32), out, max(1, int(round(native_px * side / g)))


def grid_radius(cfg: SampleConfig, area_grid_px: float, native_px: int) -> float:
    """Click radius on the grid: α · area computed on *native* pixels (as at test time), scaled."""
    scale = native_px / cfg.inputs.grid_px
    r_native = click_radius_px(area_grid_px * scale * scale, cfg.inputs.alpha, cfg.inputs.default_radius_px)
    return r_native / scale


def grid_band_px(grid_px: int, native_px: int) -> int:
    """The paper's band around the object (``PAPER_BAND_PX`` native pixels, where its negative
    click falls) on a ``grid_px`` grid of a ``native_px`` slice; at least 2 px."""
    return max(2, int(round(PAPER_BAND_PX * grid_px / native_px)))


def with_context(sl: LabelSlice, ctx: LabelSlice) -> LabelSlice:
    """Place the structures of ``sl`` (e.g. an MSD spleen label) into the anatomy of a context
    slice (e.g. a TotalSegmentator slice: real neighbouring organs and body outline), so that the
    target is rendered among realistic neighbours. Context labels get ids offset by 1000 and
    are never targets when ``sl`` restricts its targets."""
    lab = np.where(ctx.labels > 0, ctx.labels.astype(np.int32) + 1000, 0)
    lab = np.where(sl.labels > 0, sl.labels, lab).astype(np.int32)
    body = ctx.body
    if body is not None:
        body = body | ndimage.binary_dilation(sl.labels > 0, iterations=3)
    tids = sl.target_ids or tuple(int(k) for k in np.unique(sl.labels) if k)
    return LabelSlice(lab, sl.native_px, None, body, tids, f"{sl.source}+{ctx.source}", sl.volume, sl.z, sl.spacing_z_mm)


LESION_CONTRAST_HU = (12.0, 70.0)  # |HU| between a painted lesion and its organ: faint to clear
LESION_MIN_DEPTH_PX = 5.0  # grid px: an organ thinner than this gets no lesion


def inner_lesion(organ: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A lesion-shaped region (G, G) bool inside ``organ`` (G, G) bool, away from its border,
    from a few pixels to most of its depth; None when the organ is too thin or it came out
    under 6 px."""
    d = _edt(organ)
    depth = float(d.max())
    if depth < LESION_MIN_DEPTH_PX:
        return None
    ys, xs = np.nonzero(d >= 0.4 * depth)
    i = int(rng.integers(len(ys)))
    r = max(1.5, rng.uniform(0.15, 0.75) * float(d[ys[i], xs[i]]))
    les = random_blob(organ.shape, rng, ys[i], xs[i], r) & (d >= 1.5)
    return les if les.sum() >= 6 else None


def paint_lesion(hu: np.ndarray, lesion: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``hu`` (G, G) with a lesion over ``lesion`` (G, G) bool: hypodense (three in four) or
    hyperdense by ``LESION_CONTRAST_HU``, with a soft edge (partial volume, infiltration) and
    a texture of its own; the organ's noise stays on it. Real liver tumours are often only
    20-40 HU from the liver around them, a contrast the rendered organs' own lesions (any
    organ HU) rarely had (docs/design.md, "What the model is trained on")."""
    contrast = rng.uniform(*LESION_CONTRAST_HU) * (-1.0 if rng.random() < 0.75 else 1.0)
    soft = ndimage.gaussian_filter(lesion.astype(np.float32), rng.uniform(0.3, 2.0))
    tex = rng.uniform(2, 10) * _smooth_noise(hu.shape, rng, rng.uniform(1, 3))
    return (hu + soft * (contrast + tex)).astype(np.float32)


VESSEL_CONTRAST_HU = (35.0, 120.0)  # an enhanced vessel above its organ (portal venous phase); darker ones less
VESSEL_MAX_WIDTH_PX = 8.0  # grid px: the widest tube drawn in an organ
VESSEL_MAX_PIECES = 4  # cross-sections of one vessel tree on a slice (inner_vessel's pieces_p)


def inner_vessel(organ: np.ndarray, rng: np.random.Generator, pieces_p: float = 0.0) -> np.ndarray | None:
    """A vessel (G, G) bool inside ``organ`` (G, G) bool: half of the time a tube running in the
    slice (1.5-8 px across), else one round cross-section of a vessel crossing the slice (2-6 px
    radius), as the intrahepatic portal and hepatic veins are; with probability ``pieces_p`` a
    cross-section comes with 1-3 more of the same tree elsewhere in the organ (a branching vein
    crosses a slice several times: one target of several pieces, each needing its own click).
    None when the organ is too thin or the vessel came out under 6 px or over 40 % of the organ."""
    d = _edt(organ)
    depth = float(d.max())
    if depth < LESION_MIN_DEPTH_PX:
        return None
    inner = d >= 1.5
    if rng.random() < 0.5:  # a tube in the slice, from a point inside the organ
        ys, xs = np.nonzero(d >= 0.3 * depth)
        i = int(rng.integers(len(ys)))
        width = rng.uniform(1.5, min(VESSEL_MAX_WIDTH_PX, max(2.0, 0.5 * depth)))
        ves = random_tube(organ.shape, rng, width, (float(ys[i]), float(xs[i]))) & inner
        parts = ndimage.label(ves)[0]  # the piece through the start point (the organ may cut the tube)
        ves = parts == parts[ys[i], xs[i]] if ves[ys[i], xs[i]] else np.zeros_like(ves)
    else:  # a cross-section
        r = rng.uniform(2.0, min(6.0, max(2.0, 0.6 * depth)))
        ys, xs = np.nonzero(d >= r + 1.5)
        if not len(ys):
            return None
        i = int(rng.integers(len(ys)))
        ves = random_blob(organ.shape, rng, ys[i], xs[i], r) & inner
        if pieces_p > 0 and rng.random() < pieces_p:  # more branches of the same tree
            for _ in range(int(rng.integers(1, VESSEL_MAX_PIECES))):
                j = int(rng.integers(len(ys)))
                ves |= random_blob(organ.shape, rng, ys[j], xs[j], r * rng.uniform(0.6, 1.2)) & inner
    return ves if 6 <= ves.sum() <= 0.4 * organ.sum() else None


def paint_vessel(hu: np.ndarray, vessel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``hu`` (G, G) with a vessel over ``vessel`` (G, G) bool: enhanced, ``VESSEL_CONTRAST_HU``
    above the organ (four in five), else 20-60 HU darker (an unenhanced vein); a thin soft edge."""
    contrast = rng.uniform(*VESSEL_CONTRAST_HU) if rng.random() < 0.8 else -rng.uniform(20.0, 60.0)
    soft = ndimage.gaussian_filter(vessel.astype(np.float32), rng.uniform(0.3, 1.0))
    tex = rng.uniform(2, 8) * _smooth_noise(hu.shape, rng, 1.0)
    return (hu + soft * (contrast + tex)).astype(np.float32)


def _first_click(target: np.ndarray, rng: np.random.Generator, centre_p: float) -> tuple[int, int, bool]:
    """A user's first click: at the object's deepest point (where the ritm robot and most people
    click first) with probability ``centre_p``, else anywhere inside it."""
    if rng.random() < centre_p:
        return (*deepest_point(target), True)
    ys, xs = np.nonzero(target)
    i = int(rng.integers(len(ys)))
    return int(ys[i]), int(xs[i]), True


def _inner_target(organ: np.ndarray, inner: np.ndarray | None, target_p: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """(target, inner structure to draw) for a structure ``inner`` (G, G) bool drawn inside the
    target ``organ``, or None when none could be: the inner structure is the target with
    probability ``target_p`` (the user means it), else the organ, which includes it; then it
    is dropped when it covers the organ's centre, where a click would be ambiguous."""
    if inner is None:
        return organ, None
    if rng.random() < target_p:
        return inner, inner
    return organ, (None if inner[deepest_point(organ)] else inner)


CLEAR_BOUNDARY_HU = 20.0  # a border whose two sides differ by less than this (local means, HU) is hidden
CLEAR_BOUNDARY_TRIES = 4  # renderings drawn again, at most, for a target with a hidden border


def boundary_ambiguity(hu: np.ndarray, target: np.ndarray, contrast_hu: float = CLEAR_BOUNDARY_HU,
                       band_px: int = 3, window_px: int = 7) -> float:
    """The share (0-1) of ``target``'s border (G, G) bool whose two sides differ by less than
    ``contrast_hu`` on ``hu`` (G, G): for each border pixel, the mean HU of the target's
    ``band_px`` inner band against that of the band just outside it, both within a
    ``window_px`` square. A target drawn at nearly the HU of the tissue beside it (a touching
    structure, a distractor blob, the soft tissue around it) has a hidden border: the label says
    where it ends, the image does not. Real organs' borders are mostly visible (3D-IRCADb's
    kidneys under 2 % hidden, the spleen 5 %, the liver 15 %; docs/design.md "What the model is
    trained on", --clear-boundary-p). NaN when the target is too small, fills the slice, or has no
    measurable border."""
    t = np.asarray(target, bool)
    if t.sum() < 30 or t.all():
        return float("nan")
    inner = t & ~ndimage.binary_erosion(t, iterations=band_px)
    outer = ndimage.binary_dilation(t, iterations=band_px) & ~t
    hu = np.asarray(hu, np.float32)

    def local_mean(band: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        share = ndimage.uniform_filter(band.astype(np.float32), window_px)
        return ndimage.uniform_filter(hu * band, window_px) / np.maximum(share, 1e-6), share

    mean_in, share_in = local_mean(inner)
    mean_out, share_out = local_mean(outer)
    edge = t & ~ndimage.binary_erosion(t) & (share_in > 0.05) & (share_out > 0.05)
    if edge.sum() < 5:
        return float("nan")
    return float((np.abs(mean_in - mean_out)[edge] < contrast_hu).mean())


def make_sample(sl: LabelSlice, rng: np.random.Generator, cfg: SampleConfig) -> Sample:
    """Render/choose the image, pick the target, augment, simulate clicks, weight map.

    Two kinds of sample: *click* samples (the paper's random pairs, or a single positive
    first click; previous mask empty, as before a user's first click) and, with probability
    ``cfg.propagate_p``, *propagation* samples: the image is a neighbouring slice of the label
    volume, the previous-mask channel holds the structure on ``sl`` (perturbed, as a predicted
    mask would be), there is no click, and the target is the same structure on the neighbour,
    which is empty where the structure has ended; with ``cfg.prop_spill_p`` the previous mask
    also spilt into a part of a touching structure, which the target leaves out."""
    target, k = choose_target_id(sl, rng, cfg.large_target_p)
    prev = np.zeros_like(target)
    spilt = wrong = False
    pair = (neighbour_target(sl, k, target, rng, cfg.max_gap_mm, near_end_p=cfg.near_end_p,
                             near_end_max_px=cfg.near_end_max_px)
            if cfg.propagate_p > 0 and rng.random() < cfg.propagate_p else None)
    if pair is not None:
        sl, target, prev, prev_labels = pair
        prev = perturb_mask(prev, rng)
        if cfg.partial_prev_p > 0 and rng.random() < cfg.partial_prev_p:  # learn to complete it
            prev = partial_mask(prev, rng)
        elif cfg.prop_spill_p > 0 and rng.random() < cfg.prop_spill_p:  # learn not to carry a leak on
            spill = spill_part(sl.labels, k, prev | target, rng, PROP_SPILL_KEEP)
            if spill is not None and spill.sum() <= PROP_SPILL_MAX * prev.sum():  # a leak, not another organ
                prev, spilt = prev | spill, True
    if pair is None and cfg.spill_p > 0 and rng.random() < cfg.spill_p:  # a leak to correct
        leak = spill_mask(sl.labels, k, target, rng, parts=int(rng.integers(1, cfg.spill_parts + 1)))
        if leak is not None:
            prev, spilt = leak, True
    if pair is None and not spilt and cfg.wrong_prev_p > 0 and rng.random() < cfg.wrong_prev_p:
        other = wrong_mask(sl.labels, k, target, rng)
        if other is not None:  # the mask sits on the wrong structure: a background click removes all of it
            prev, wrong = perturb_mask(other, rng), True
            if rng.random() < 0.5:  # the target is not on this slice (the mask was carried past its end)
                target = np.zeros_like(target)
    free = pair is None and not spilt and not wrong  # a plain click sample so far
    lesion = vessel = None
    if free and cfg.lesion_p > 0 and target.any() and rng.random() < cfg.lesion_p:
        target, lesion = _inner_target(target, inner_lesion(target, rng), cfg.lesion_target_p, rng)  # a faint lesion
    if free and lesion is None and cfg.vessel_p > 0 and target.any() and rng.random() < cfg.vessel_p:
        target, vessel = _inner_target(target, inner_vessel(target, rng, cfg.vessel_pieces_p), cfg.vessel_target_p, rng)  # an enhanced vessel
    sinus = free and lesion is None and vessel is None and cfg.sinus_p > 0 and rng.random() < cfg.sinus_p
    sinus = sinus and float(_edt(target).max()) >= INTERIOR_MIN_DEPTH_PX
    wide_sinus = sinus and cfg.sinus_wide_p > 0 and rng.random() < cfg.sinus_wide_p
    soft_sinus = sinus and cfg.sinus_soft_p > 0 and rng.random() < cfg.sinus_soft_p
    mottled_sinus = sinus and not soft_sinus and cfg.sinus_mottled_p > 0 and rng.random() < cfg.sinus_mottled_p
    use_real = pair is None and sl.hu is not None and not sinus and rng.random() < cfg.real_fraction
    # a spill (or a mask carried onto another organ) is hardest, and most common, into a touching
    # structure of the target's HU
    def render() -> np.ndarray:
        return render_ct(sl, rng, k, 0.5 if spilt or wrong else cfg.similar_p, cfg.interior_p,
                         sinus_mask=target if sinus else None, seam_p=cfg.seam_p, wide_sinus=wide_sinus,
                         soft_sinus=soft_sinus, mottled_sinus=mottled_sinus)

    hu = sl.hu.astype(np.float32) if use_real else render()
    if free and lesion is None and vessel is None and not sinus and cfg.clear_boundary_p > 0 and rng.random() < cfg.clear_boundary_p:
        # a target whose border the image hides teaches a click to stop anywhere inside uniform
        # tissue (the first click's small-object prior): drawn again, the least hidden kept
        hidden = boundary_ambiguity(hu, target)
        for _ in range(CLEAR_BOUNDARY_TRIES):
            if not hidden > cfg.clear_boundary_max:  # (NaN: nothing to measure, kept)
                break
            again = render()
            h = boundary_ambiguity(again, target)
            if h < hidden:
                hu, hidden = again, h
    if lesion is not None:
        hu = paint_lesion(hu, lesion, rng)
    if vessel is not None:
        hu = paint_vessel(hu, vessel, rng)
    # 2.5D: the slice the carried mask was drawn on, as the same scan shows it; drawn from a
    # child generator, so the sample is otherwise the one drawn without it, draw for draw
    neighbour = neighbour_hu(hu, sl.labels, prev_labels, rng.spawn(1)[0]) if cfg.prev_image and pair is not None else None
    hu, (target, prev), others = _augment(hu, [target, prev], rng, cfg, [neighbour] if neighbour is not None else [])
    native_px = sl.native_px
    if pair is None and cfg.zoom_p > 0 and rng.random() < cfg.zoom_p:
        hu, (target, prev), native_px = zoom_crop(hu, [target, prev], native_px, rng)
    inputs = cfg.inputs
    g = inputs.grid_px
    jitter = inputs.width_hu * cfg.window_jitter
    level = inputs.level_hu + rng.uniform(-jitter, jitter)
    width = inputs.width_hu + rng.uniform(-jitter, jitter)
    image = apply_window(hu, level, width)[None]
    prev_image = prev_hu = None
    if cfg.prev_image:  # a click sample's previous mask (if any) is its own slice's
        prev_hu = others[0] if others else hu
        prev_image = apply_window(prev_hu, level, width)[None]
    clicks: list[Click] = []
    if wrong and prev.any():
        # a background click on the wrong structure, after a click on the target when it is there
        r = grid_radius(cfg, float(prev.sum()), native_px)
        if target.any():
            clicks.append(Click(*deepest_point(target), True, r))
        clicks.append(Click(*deepest_point(prev), False, r))
    elif spilt and pair is None and (prev & ~target).any() and target.any():
        # the user's first click on the target, then a background click on the spill
        r = grid_radius(cfg, float(prev.sum()), native_px)
        if rng.random() < 0.5:
            clicks.append(Click(*deepest_point(target), True, r))
        clicks.append(Click(*deepest_point(prev & ~target), False, r))
    elif pair is None and target.any():
        n_pairs = cfg.interactions if cfg.max_interactions <= cfg.interactions else int(rng.integers(cfg.interactions, cfg.max_interactions + 1))
        r_true = grid_radius(cfg, float(target.sum()), native_px)
        r_first = grid_radius(cfg, 0.0, native_px) if cfg.first_click_default else r_true
        band = grid_band_px(g, native_px)
        if sinus:  # the first click at the target's deepest point, in its sinus (where the ritm robot clicks a kidney)
            # or, beside a wide sinus, as often anywhere in the target: mostly on one side of it
            at = _first_click(target, rng, WIDE_SINUS_CENTRE_P)[:2] if wide_sinus else deepest_point(target)
            clicks.append(Click(*at, True, r_first))
            n_pairs -= 1
        elif rng.random() < cfg.single_click_p:
            clicks.append(Click(*_first_click(target, rng, cfg.centre_click_p), r_first))
            n_pairs -= 1
        for i in range(n_pairs):
            r = r_first if not clicks and i == 0 else r_true
            clicks += [Click(y, x, p, r) for (y, x, p) in paper_pair(target, rng, band_px=band)]
    guidance = encode_clicks(clicks, (g, g), inputs.click_encoding)
    geo = geodesic_maps(image[0], clicks, inputs.geodesic_lambdas(cfg.geodesic_soft), inputs.geodesic_tau_px,
                        noise_ref=inputs.geodesic_noise_ref) if cfg.geodesic else None
    weight = combined_weight_map(target, clicks, cfg.boundary_weights, cfg.click_weights)
    return Sample(
        image.astype(np.float32), guidance, target[None].astype(np.float32), weight[None], clicks, native_px, hu,
        prev[None].astype(np.float32), geo, None if prev_image is None else prev_image.astype(np.float32), prev_hu,
    )


# ---------------------------------------------------------------------------------------
# Sources


class SliceBank:
    """A pool of label slices from several sources, sampled with weights; the built-in
    generator, when enabled, is one more source whose slices are made on the fly."""

    SYNTHETIC = "synthetic"

    def __init__(self, grid_px: int):
        self.grid_px = grid_px
        self.groups: dict[str, list[LabelSlice]] = {}  # loaded slices per source
        self.weights: dict[str, float] = {}  # every source's weight, the generator's included
        self.context: list[LabelSlice] = []  # anatomy to render label-only slices into
        self.context_p = 0.7
        self.wide_shapes = False  # the generator draws ``training_labels`` instead of ``synthetic_labels``

    def add(self, name: str, slices: list[LabelSlice], weight: float = 1.0) -> None:
        if slices:
            self.groups.setdefault(name, []).extend(slices)
            self.weights[name] = weight

    def add_synthetic(self, weight: float = 1.0, wide: bool = False) -> None:
        """Enable the built-in generator (drawn on the fly); ``wide`` adds large regions, vessels
        and small lesions (``training_labels``) to its shapes."""
        self.weights[self.SYNTHETIC] = weight
        self.wide_shapes = wide

    def generate(self, rng: np.random.Generator) -> LabelSlice:
        return (training_labels if self.wide_shapes else synthetic_labels)(self.grid_px, rng)

    def __len__(self) -> int:
        """Number of loaded slices (the generator's are not counted: they are unlimited)."""
        return sum(len(v) for v in self.groups.values())

    def describe(self) -> str:
        return ", ".join(
            f"{k}: {len(self.groups[k])} slices (w={w:g})" if k in self.groups else f"{k}: generated (w={w:g})"
            for k, w in self.weights.items()
        )

    def draw(self, rng: np.random.Generator) -> LabelSlice:
        names = list(self.weights)
        if not names:  # nothing loaded: the built-in generator
            return self.generate(rng)
        p = np.array([self.weights[n] for n in names], float)
        name = names[int(rng.choice(len(names), p=p / p.sum()))]
        if name == self.SYNTHETIC:
            return self.generate(rng)
        group = self.groups[name]
        sl = group[int(rng.integers(len(group)))]
        if sl.hu is None and sl.body is None and self.context and rng.random() < self.context_p:
            sl = with_context(sl, self.context[int(rng.integers(len(self.context)))])
        return sl


def label_files(path: Path) -> list[Path]:
    """The label NIfTIs of ``path``: the file itself, or a folder's ``*.nii*`` (macOS ``._``
    sidecar files skipped), sorted."""
    p = Path(path)
    return sorted(f for f in p.glob("*.nii*") if not f.name.startswith("._")) if p.is_dir() else [p]


def load_label_volumes(paths: Sequence[Path], grid_px: int, target_ids: Sequence[int] = (), exclude: Sequence[str] = ()) -> list[LabelSlice]:
    """Label NIfTI files → grid slices (display orientation). Files whose name contains one of
    ``exclude`` (e.g. ``spleen_8``, the held-out check case) are skipped."""
    from .ct_io import load_ct

    out: list[LabelSlice] = []
    for p in paths:
        name = Path(p).name.split(".")[0]
        if name in exclude:
            continue
        vol = load_ct(p)
        out += slices_from_volume(np.rint(vol.hu).astype(np.int32), grid_px, None, target_ids, source=name, spacing_z_mm=vol.spacing_mm[0])
    return out


def load_image_label_pairs(
    pairs: Sequence[tuple[Path, Path]], grid_px: int, target_ids: Sequence[int] = (), exclude: Sequence[str] = (), min_area_px: int = 20
) -> list[LabelSlice]:
    """Real (image, label) NIfTI pairs → grid slices carrying their real HU."""
    from .ct_io import load_ct, read_nifti_mask

    out: list[LabelSlice] = []
    for img_p, lab_p in pairs:
        name = Path(img_p).name.split(".")[0]
        if name in exclude:
            continue
        vol = load_ct(img_p)
        lab = read_nifti_mask(lab_p, like=vol)
        out += slices_from_volume(lab.astype(np.int32), grid_px, vol.hu, target_ids, min_area_px, source=name, spacing_z_mm=vol.spacing_mm[0])
    return out


def msd_pairs(task_dir: Path) -> list[tuple[Path, Path]]:
    """(image, label) pairs of an MSD task folder (imagesTr/labelsTr; Task09/Task10 naming),
    skipping macOS ``._`` resource files."""
    task_dir = Path(task_dir)
    imgs = sorted(p for p in (task_dir / "imagesTr").glob("*.nii*") if not p.name.startswith("._"))
    pairs = [(p, task_dir / "labelsTr" / p.name) for p in imgs]
    return [(i, lab) for i, lab in pairs if lab.exists()]
