"""Simulated users ("robots") that click like an annotator would.

Each returns click *positions* ``(y, x, positive)``; the click radius is decided by whoever
draws the click (``Session`` with its ``ClickSize``), exactly as for a person's click.

- ``paper``: the paper's random interaction, one positive click anywhere inside the object and
  one negative click in a band around it (random, not error driven).
- ``ritm``: one click at the error pixel farthest from the error boundary (false negative →
  positive click, false positive → negative click), as in RITM / Xu et al.; never the same pixel twice.
- ``component``: one click at the deepest point of the largest connected error region.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from scipy import ndimage

PROTOCOLS = ("paper", "ritm", "component")
PAPER_BAND_PX = 20  # width of the band around the object where the paper's negative click falls
Point = tuple[int, int, bool]  # (y, x, positive)


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


def next_clicks(
    protocol: str,
    gt: np.ndarray,
    pred: np.ndarray | None,
    rng: np.random.Generator,
    clicked: Iterable[tuple[int, int]] = (),
) -> list[Point]:
    """The robot's next interaction under ``protocol``: a list of 1 (ritm, component) or up to 2
    (paper) points ``(y, x, positive)``. An empty list means there is nothing left to correct.

    The distance transforms only need the errors (``ritm``, ``component``) or the object and
    its band (``paper``), so they run on the smallest box around those: the same points (same
    pixels, same raster order, same random draws) as on the whole slice, at a fraction of the
    cost on a 512² slice.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown robot protocol {protocol!r}; use one of {PROTOCOLS}")
    g = np.asarray(gt).astype(bool)
    p = np.zeros_like(g) if pred is None else np.asarray(pred).astype(bool)
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
