"""The robot click loop: simulated users click, a method segments, the result is recorded.

One loop serves the benchmark (``benchmark.runner``), the validation during training
(``iunet.train.validate``) and the speed test (``benchmark.speed``), in the spirit of RITM's
``isegm/inference/evaluation.py`` and MONAI deepgrow's ``Interaction``::

    for k in 1..K:                                   # click_step(tracks, k, batch_size)
        each track: its robot looks at the track's current mask and picks its next point(s)
        tracks on a Session: one batched forward pass per batch_size tracks (step_sessions)
        any other state: state.add_click(*point), timed
        each track records Dice, pixel counts, milliseconds and clicks so far (a StepRecord)

A *track* is one robot protocol clicking on one image (a 2D slice, or a 3D volume under the
``volume`` protocol) through one *state*: an :class:`iunet.inference.Session` (batched), or any
object with a ``mask`` and an ``add_click(*point)`` (a classical baseline, a volume session).
The robot remembers the points it clicked (``Track.points``) and never clicks a pixel twice.

**A step with no click.** When the robot finds nothing left to correct (no error, or every error
pixel clicked already) the track gets no click in that step; the step is still recorded, with
the current mask's Dice (unchanged, so the previous step's Dice is carried over; 1.0 when target
and mask are both empty), ``clicked=False`` and ``ms=None``. Every consumer reads the records,
so they all apply this one rule.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from .inference import Session, step_sessions
from .robot import next_clicks


@dataclass(frozen=True)
class StepRecord:
    """What one interaction of one track left behind.

    ``k``: the interaction (1-based); ``n_clicks``: clicks placed so far (2 per interaction under
    the paper's protocol); ``clicked``: whether the robot clicked in this step; ``ms``: the
    method's time for this interaction (None without a click); ``inter_px`` / ``pred_px`` /
    ``gt_px``: pixel (voxel) counts of mask ∧ target, mask and target, from which Dice (and a 3D
    Dice over stacked slices) is computed; ``z_extent_err_slices``: for a volume, see
    :func:`z_extent_error_slices` (None for a slice).
    """

    k: int
    n_clicks: int
    clicked: bool
    ms: float | None
    inter_px: int
    pred_px: int
    gt_px: int
    z_extent_err_slices: int | None = None

    @property
    def dice(self) -> float:
        """Dice of the mask after this step; 1.0 when mask and target are both empty."""
        denom = self.pred_px + self.gt_px
        return 1.0 if denom == 0 else 2.0 * self.inter_px / denom


def z_extent_error_slices(pred: np.ndarray, gt: np.ndarray) -> int:
    """How far the predicted z-extent is from the true one, in slices.

    ``pred``, ``gt``: (Z, Y, X) bool. The z-extent of a mask is its first and last slice with a
    pixel set; the error is the larger of the two end differences. An empty mask against a
    non-empty one counts the other's whole extent (every slice is missed or extra); both empty: 0.
    """
    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    if p.ndim != 3 or p.shape != g.shape:
        raise ValueError(f"z-extent needs two (Z, Y, X) masks of one shape, got {p.shape} and {g.shape}")
    zp = np.nonzero(p.reshape(p.shape[0], -1).any(1))[0]
    zg = np.nonzero(g.reshape(g.shape[0], -1).any(1))[0]
    if not len(zp) and not len(zg):
        return 0
    if not len(zp) or not len(zg):
        z = zp if len(zp) else zg
        return int(z[-1] - z[0] + 1)
    return int(max(abs(zp[0] - zg[0]), abs(zp[-1] - zg[-1])))


@dataclass
class Track:
    """One robot protocol clicking on one image through one state.

    ``gt``: (Y, X) bool target of a slice, or (Z, Y, X) bool of a volume (``volume`` protocol);
    ``protocol``: a robot of :mod:`iunet.robot`; ``rng``: the robot's generator (only ``paper``
    draws from it); ``state``: an :class:`~iunet.inference.Session`, any object with ``mask``
    (same shape as ``gt``) and ``add_click(*point)``, or a fixed mask array (a method without
    clicks); ``spacing_mm``: voxel size (z, y, x) for the ``volume`` robot's depth (None = isotropic).
    """

    gt: np.ndarray
    protocol: str
    rng: np.random.Generator
    state: Any = None
    spacing_mm: tuple[float, float, float] | None = None
    points: list[tuple] = field(default_factory=list)  # every point clicked so far: (y, x, positive) or (z, y, x, positive)
    records: list[StepRecord] = field(default_factory=list)
    ms: float = 0.0  # time of the current interaction

    @property
    def mask(self) -> np.ndarray:
        """The state's current mask, same shape as ``gt``; all False before the first prediction."""
        m = self.state if isinstance(self.state, np.ndarray) else getattr(self.state, "mask", None)
        return np.zeros(self.gt.shape, bool) if m is None else np.asarray(m, bool)

    @property
    def n_clicks(self) -> int:
        return len(self.points)

    def record(self, k: int, ms: float | None, clicked: bool | None = None) -> StepRecord:
        """Record the track's current mask as the result of interaction ``k``; ``clicked``
        defaults to whether there is a time (a method without clicks passes False)."""
        m, g = self.mask, self.gt
        if m.shape != g.shape:
            raise ValueError(f"mask {m.shape} and target {g.shape} differ in shape")
        rec = StepRecord(
            k, self.n_clicks, ms is not None if clicked is None else clicked, ms, int((m & g).sum()), int(m.sum()), int(g.sum()),
            z_extent_error_slices(m, g) if g.ndim == 3 else None,
        )
        self.records.append(rec)
        return rec

    @property
    def dice_curve(self) -> np.ndarray:
        """Dice after each recorded interaction, float64 (K,)."""
        return np.array([r.dice for r in self.records])


def _add_clicks(todo: Sequence[tuple[Track, tuple]], batch_size: int) -> None:
    """One click for each (track, point): tracks on a Session are batched per predictor and
    way of predicting (``batch_size`` slices per forward pass), any other state clicks on its
    own. Sessions that predict differently (ZoomIn, ZoomOut, without the mask so far) are not
    batched together: a batch's time is shared out evenly among its sessions, so a method with
    extra passes would otherwise lend its cost to another method's ms per click."""
    sessions: dict[tuple, list[tuple[Track, tuple]]] = {}
    for t, p in todo:
        t.points.append(tuple(p))
        if isinstance(t.state, Session):
            s = t.state
            key = (id(s.predictor), repr(s.zoom), repr(s.zoom_out), s.prev_mask)
            sessions.setdefault(key, []).append((t, p))
        else:
            t0 = time.perf_counter()
            t.state.add_click(*p)
            t.ms += (time.perf_counter() - t0) * 1000.0
    for group in sessions.values():
        for i in range(0, len(group), batch_size):
            chunk = group[i : i + batch_size]
            step_sessions([t.state for t, _ in chunk], [p for _, p in chunk])
            for t, _ in chunk:
                t.ms += t.state.last_latency_ms


def click_step(tracks: Sequence[Track], k: int, batch_size: int) -> None:
    """Interaction ``k`` of every track: each robot picks, the states segment, each track records.

    The paper's protocol gives up to two points per interaction; the second is clicked after the
    first has been segmented (its dynamic size follows the mask after the first).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    plans = [(t, next_clicks(t.protocol, t.gt, t.mask, t.rng, [p[:-1] for p in t.points], spacing_mm=t.spacing_mm)) for t in tracks]
    for t, _ in plans:
        t.ms = 0.0
    for j in range(max((len(p) for _, p in plans), default=0)):
        _add_clicks([(t, p[j]) for t, p in plans if len(p) > j], batch_size)
    for t, p in plans:
        t.record(k, t.ms if p else None)  # no point: nothing left to correct, Dice carried over


def run_clicks(tracks: Sequence[Track], n_steps: int, batch_size: int, progress: bool = False) -> None:
    """Run ``n_steps`` interactions (k = 1..n_steps) on ``tracks``, whose states are ready."""
    for k in tqdm(range(1, n_steps + 1), desc="clicks", leave=False, disable=not progress):
        click_step(tracks, k, batch_size)
