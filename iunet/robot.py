"""Simulated users ("robots") that click like an annotator would.

Each returns click *positions* ``(y, x, positive)``; the click radius is decided by whoever
draws the click (``Session`` with its ``ClickSize``), exactly as for a person's click.

- ``paper``: the paper's random interaction, one positive click anywhere inside the object and
  one negative click in a band around it (random, not error driven).
- ``ritm``: one click at the error pixel farthest from the error boundary (false negative →
  positive click, false positive → negative click), as in RITM / Xu et al.; never the same pixel twice.
- ``component``: one click at the deepest point of the largest connected error region.
- ``volume`` (3D): one click at the deepest point of the largest 3D connected error component of
  a volume, on that component's slice: ``(z, y, x, positive)``.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

PROTOCOLS = ("paper", "ritm", "component")  # robots on one slice
VOLUME_PROTOCOLS = ("volume",)  # robots on a whole volume
ALL_PROTOCOLS = PROTOCOLS + VOLUME_PROTOCOLS
PAPER_BAND_PX = 20  # width of the band around the object where the paper's negative click falls
Point = tuple[int, int, bool]  # (y, x, positive)
Point3 = tuple[int, int, int, bool]  # (z, y, x, positive)


def paper_pair(gt: np.ndarray, rng: np.random.Generator, band_px: int = PAPER_BAND_PX) -> list[Point]:
    """One interaction of the paper: a random positive click inside ``gt`` and a random negative
    click in the band of ``band_px`` pixels around it. ``gt``: (Y, X) bool. Empty gt → one
    negative click anywhere."""
    g = np.asarray(gt).astype(bool)
    if not g.any():
        y, x = rng.integers(0, g.shape[0]), rng.integers(0, g.shape[1])
        return [(int(y), int(x), False)]
    ys, xs = np.nonzero(g)
    i = rng.integers(len(ys))
    pos = (int(ys[i]), int(xs[i]), True)
    band = ndimage.binary_dilation(g, iterations=band_px) & ~g
    if not band.any():  # the object fills the image
        return [pos]
    ys, xs = np.nonzero(band)
    i = rng.integers(len(ys))
    return [pos, (int(ys[i]), int(xs[i]), False)]


def _depth(region: np.ndarray) -> np.ndarray:
    """Distance of each pixel of ``region`` to the nearest pixel outside it (image border counts as outside)."""
    padded = np.pad(region, 1, constant_values=False)
    return ndimage.distance_transform_edt(padded)[1:-1, 1:-1]


def deepest_point(region: np.ndarray) -> tuple[int, int]:
    """(y, x) of the pixel of ``region`` (Y, X) bool farthest from its outside (the first in raster
    order on ties): where a user, or the ritm robot, clicks first on an object."""
    d = _depth(np.asarray(region, bool))
    y, x = np.unravel_index(int(np.argmax(d)), d.shape)
    return int(y), int(x)


def _error_maps(gt: np.ndarray, pred: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(gt).astype(bool)
    p = np.zeros_like(g) if pred is None else np.asarray(pred).astype(bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    return g & ~p, p & ~g


def ritm_click(gt: np.ndarray, pred: np.ndarray | None, clicked: Iterable[tuple[int, int]] = ()) -> Point | None:
    """Deepest error pixel over all errors. Returns ``None`` when there is no error left
    (or every error pixel was clicked already)."""
    fn, fp = _error_maps(gt, pred)
    d_fn, d_fp = _depth(fn), _depth(fp)
    for y, x in clicked:
        d_fn[y, x] = d_fp[y, x] = 0.0
    best_fn, best_fp = d_fn.max(), d_fp.max()
    if max(best_fn, best_fp) <= 0:
        return None
    positive = best_fn >= best_fp
    d = d_fn if positive else d_fp
    y, x = np.unravel_index(int(np.argmax(d)), d.shape)
    return int(y), int(x), bool(positive)


def component_click(gt: np.ndarray, pred: np.ndarray | None, clicked: Iterable[tuple[int, int]] = ()) -> Point | None:
    """Deepest point of the largest connected error region (false negatives and false
    positives labelled separately). ``None`` when there is no error."""
    fn, fp = _error_maps(gt, pred)
    clicked = list(clicked)
    best: tuple[int, np.ndarray, bool] | None = None
    for err, positive in ((fn, True), (fp, False)):
        labels, n = ndimage.label(err)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        k = int(np.argmax(sizes)) + 1
        if best is None or sizes[k - 1] > best[0]:
            best = (int(sizes[k - 1]), labels == k, positive)
    if best is None:
        return None
    _, region, positive = best
    d = _depth(region)
    for y, x in clicked:
        d[y, x] = 0.0
    if d.max() <= 0:
        return None
    y, x = np.unravel_index(int(np.argmax(d)), d.shape)
    return int(y), int(x), positive


def _next_full(protocol: str, gt, pred, rng, clicked) -> list[Point]:
    if protocol == "paper":
        return paper_pair(gt, rng, PAPER_BAND_PX)
    if protocol == "ritm":
        c = ritm_click(gt, pred, clicked)
    elif protocol == "component":
        c = component_click(gt, pred, clicked)
    else:
        raise ValueError(f"unknown robot protocol {protocol!r}; use one of {PROTOCOLS}")
    return [] if c is None else [c]


def bounding_box(region: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The bounding box of ``region``'s True values, grown by ``margin`` and cut at the array's edges."""
    box = []
    for axis in range(region.ndim):
        idx = np.nonzero(region.any(axis=tuple(a for a in range(region.ndim) if a != axis)))[0]
        box.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + margin + 1, region.shape[axis])))
    return tuple(box)


def volume_click(
    gt: np.ndarray,
    pred: np.ndarray | None,
    clicked: Iterable[tuple[int, int, int]] = (),
    spacing_mm: Sequence[float] | None = None,
) -> Point3 | None:
    """The ``volume`` robot: the deepest point of the largest 3D connected error component.

    ``gt``, ``pred``: (Z, Y, X) bool (``pred`` None = nothing predicted). False negatives and
    false positives are labelled separately (6-connected); the largest component by voxel count
    wins (false negatives on a tie). Its depth is the Euclidean distance of each voxel to the
    nearest voxel outside the component (the volume's border counts as outside), in mm with
    ``spacing_mm`` = (dz, dy, dx), else in voxels. The click goes to the deepest voxel, so it lies
    on one of the component's slices; among equally deep voxels, the one deepest in its own slice
    (the middle of the component's cross-section), then the one nearest the component's centre,
    then the first in (z, y, x) order. Voxels in
    ``clicked`` are never chosen again; when every voxel of a component was clicked, the next
    largest component is used. Returns ``(z, y, x, positive)``, or None when there is no error.

    Runs on the box around the errors (and the component's own box), so the answer is the same as
    on the whole volume at a fraction of the cost.
    """
    g = np.asarray(gt).astype(bool)
    p = np.zeros_like(g) if pred is None else np.asarray(pred).astype(bool)
    if g.ndim != 3 or p.shape != g.shape:
        raise ValueError(f"the volume robot needs (Z, Y, X) target and prediction of one shape, got {g.shape} and {p.shape}")
    spacing = (1.0, 1.0, 1.0) if spacing_mm is None else tuple(float(s) for s in spacing_mm)
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise ValueError(f"spacing_mm must be three sizes > 0 (dz, dy, dx), got {spacing_mm}")
    if not (g ^ p).any():
        return None
    box = bounding_box(g ^ p, 1)
    off = [b.start for b in box]
    g, p = g[box], p[box]
    done = {tuple(int(v) - o for v, o in zip(c, off)) for c in clicked}
    components = []  # (size, order, labels, label, positive)
    for order, (err, positive) in enumerate(((g & ~p, True), (p & ~g, False))):
        labels, n = ndimage.label(err)
        if n:
            sizes = np.bincount(labels.ravel())[1:]
            components += [(int(sizes[i]), order, labels, i + 1, positive) for i in range(n)]
    components.sort(key=lambda c: (-c[0], c[1], c[3]))
    for _, _, labels, lab, positive in components:
        region = labels == lab
        cbox = bounding_box(region, 1)
        sub = np.pad(region[cbox], 1, constant_values=False)
        depth = ndimage.distance_transform_edt(sub, sampling=spacing)[1:-1, 1:-1, 1:-1]
        c0 = [b.start for b in cbox]
        for pt in done:
            q = tuple(v - o for v, o in zip(pt, c0))
            if all(0 <= v < s for v, s in zip(q, depth.shape)):
                depth[q] = 0.0
        best = depth.max()
        if best <= 0:
            continue
        cand = np.argwhere(depth >= best * (1 - 1e-9))  # (n, 3), in (z, y, x) order
        if len(cand) > 1:  # tie: the deepest in its own slice
            in_slice = {}
            for z in np.unique(cand[:, 0]):
                plane = np.pad(sub[1:-1, 1:-1, 1:-1][z], 1, constant_values=False)
                in_slice[int(z)] = ndimage.distance_transform_edt(plane, sampling=spacing[1:])[1:-1, 1:-1]
            d2 = np.array([in_slice[int(z)][y, x] for z, y, x in cand])
            cand = cand[d2 >= d2.max() * (1 - 1e-9)]
        if len(cand) > 1:  # still a tie (e.g. slices thicker than the structure is deep): the middle
            centre = np.argwhere(sub[1:-1, 1:-1, 1:-1]).mean(0)
            dist = (((cand - centre) * np.asarray(spacing)) ** 2).sum(1)
            cand = cand[[int(np.argmin(dist))]]
        z, y, x = (int(v) + c + o for v, c, o in zip(cand[0], c0, off))
        return z, y, x, bool(positive)
    return None


def next_clicks(
    protocol: str,
    gt: np.ndarray,
    pred: np.ndarray | None,
    rng: np.random.Generator,
    clicked: Iterable[tuple[int, ...]] = (),
    spacing_mm: Sequence[float] | None = None,
) -> list[tuple]:
    """The robot's next interaction under ``protocol``: a list of 1 (ritm, component, volume) or
    up to 2 (paper) points ``(y, x, positive)``, or ``(z, y, x, positive)`` under ``volume``
    (``gt``, ``pred`` (Z, Y, X) and ``spacing_mm`` for it, see :func:`volume_click`). An empty
    list means there is nothing left to correct. ``clicked``: the points clicked so far, as
    ``(y, x)`` (``(z, y, x)`` under ``volume``).

    The distance transforms only need the errors (``ritm``, ``component``) or the object and
    its band (``paper``), so they run on the smallest box around those: the same points (same
    pixels, same raster order, same random draws) as on the whole slice, at a fraction of the
    cost on a 512² slice.
    """
    if protocol not in ALL_PROTOCOLS:
        raise ValueError(f"unknown robot protocol {protocol!r}; use one of {ALL_PROTOCOLS}")
    if protocol in VOLUME_PROTOCOLS:
        c = volume_click(gt, pred, clicked, spacing_mm)
        return [] if c is None else [c]
    g = np.asarray(gt).astype(bool)
    p = np.zeros_like(g) if pred is None else np.asarray(pred).astype(bool)
    if g.ndim != 2:
        raise ValueError(f"the {protocol!r} robot clicks on one slice (Y, X), got shape {g.shape}; use 'volume' for volumes")
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    region = g if protocol == "paper" else g ^ p
    if not region.any():
        return _next_full(protocol, g, p, rng, list(clicked)) if protocol == "paper" else []
    margin = PAPER_BAND_PX + 1 if protocol == "paper" else 1
    ys, xs = np.nonzero(region.any(1))[0], np.nonzero(region.any(0))[0]
    y0, y1 = max(ys[0] - margin, 0), min(ys[-1] + margin + 1, g.shape[0])
    x0, x1 = max(xs[0] - margin, 0), min(xs[-1] + margin + 1, g.shape[1])
    inside = [(y - y0, x - x0) for y, x in clicked if y0 <= y < y1 and x0 <= x < x1]
    pts = _next_full(protocol, g[y0:y1, x0:x1], p[y0:y1, x0:x1], rng, inside)
    return [(y + y0, x + x0, pos) for y, x, pos in pts]
