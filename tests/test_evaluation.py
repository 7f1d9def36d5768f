"""The library's robot click loop (iunet.evaluation): records, the no-click rule, batching, volumes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import iunet.evaluation as ev
from iunet.evaluation import StepRecord, Track, click_step, run_clicks, z_extent_error_slices
from iunet.inference import Predictor, Session
from iunet.metrics import dice


class Painter:
    """A stand-in method: each click paints (positive) or erases (negative) a disk of 6 px; a
    volume painter does the same on the click's slice."""

    def __init__(self, shape):
        self.mask = np.zeros(shape, bool)
        self.calls = 0

    def add_click(self, *point):
        *where, positive = point
        self.calls += 1
        yy, xx = np.ogrid[: self.mask.shape[-2], : self.mask.shape[-1]]
        disk = (yy - where[-2]) ** 2 + (xx - where[-1]) ** 2 <= 36
        plane = self.mask[where[0]] if len(where) == 3 else self.mask
        plane[disk] = positive
        return self.mask


def _disk(shape=(48, 48), cy=24, cx=24, r=5):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _spy_on_batches(monkeypatch, what) -> list:
    """Record ``what(sessions)`` of every batched step the click loop runs (the step still runs)."""
    seen, real = [], ev.step_sessions

    def spy(sessions, points):
        seen.append(what(sessions))
        return real(sessions, points)

    monkeypatch.setattr(ev, "step_sessions", spy)
    return seen


def test_step_without_click_carries_the_dice_over():
    gt = _disk(r=6)  # exactly what one painted click gives
    t = Track(gt, "ritm", np.random.default_rng(0), Painter(gt.shape))
    run_clicks([t], 4, batch_size=8)
    assert [r.k for r in t.records] == [1, 2, 3, 4]
    assert [r.clicked for r in t.records] == [True, False, False, False]  # nothing left after the first
    assert t.records[0].ms is not None and all(r.ms is None for r in t.records[1:])
    assert t.dice_curve.tolist() == [1.0] * 4 and t.n_clicks == 1 and t.state.calls == 1
    # an empty target and an empty mask: no click at all, Dice 1 by convention
    e = Track(np.zeros((16, 16), bool), "ritm", np.random.default_rng(0), Painter((16, 16)))
    run_clicks([e], 2, batch_size=1)
    assert [(r.clicked, r.dice, r.n_clicks) for r in e.records] == [(False, 1.0, 0)] * 2


def test_records_match_the_mask_and_points_are_never_repeated():
    gt = _disk(r=14) & ~_disk(cx=30, r=5)  # a crescent: several clicks needed
    t = Track(gt, "ritm", np.random.default_rng(0), Painter(gt.shape))
    run_clicks([t], 6, batch_size=8)
    r = t.records[-1]
    assert r.dice == pytest.approx(dice(t.mask, gt)) and (r.inter_px, r.pred_px, r.gt_px) == (
        int((t.mask & gt).sum()), int(t.mask.sum()), int(gt.sum()))
    assert len(set(t.points)) == len(t.points) == t.n_clicks == r.n_clicks
    assert StepRecord(1, 0, False, None, 0, 0, 0).dice == 1.0


def test_paper_protocol_clicks_pairs():
    gt = _disk(r=10)
    t = Track(gt, "paper", np.random.default_rng(3), Painter(gt.shape))
    run_clicks([t], 3, batch_size=2)
    assert [r.n_clicks for r in t.records] == [2, 4, 6]
    assert [p[2] for p in t.points] == [True, False] * 3


def test_sessions_are_batched_by_batch_size(tiny_checkpoint, monkeypatch):
    torch.set_num_threads(1)
    pred = Predictor(tiny_checkpoint, device="cpu")
    rng = np.random.default_rng(0)
    hus = [rng.normal(0, 50, (48, 48)).astype(np.float32) for _ in range(5)]
    chunks = _spy_on_batches(monkeypatch, len)
    gt = _disk(r=8)
    tracks = [Track(gt, "ritm", rng, Session(pred, hu)) for hu in hus]
    painter = Track(gt, "ritm", rng, Painter(gt.shape))  # a non-session state in the same step
    click_step(tracks + [painter], 1, batch_size=2)
    assert chunks == [2, 2, 1] and painter.state.calls == 1
    assert all(t.records[0].ms == t.state.last_latency_ms for t in tracks)
    with pytest.raises(ValueError, match="batch_size"):
        click_step(tracks, 2, batch_size=0)


def test_sessions_that_predict_differently_are_timed_apart(tiny_checkpoint, monkeypatch):
    """Sessions with and without ZoomOut on one predictor go through separate batches: a batch's
    time is shared evenly, so one method's extra passes must not show in another's ms per click."""
    from iunet.inference import ZoomOut

    torch.set_num_threads(1)
    pred = Predictor(tiny_checkpoint, device="cpu")
    rng = np.random.default_rng(0)
    hus = [rng.normal(0, 50, (48, 48)).astype(np.float32) for _ in range(4)]
    groups = _spy_on_batches(monkeypatch, lambda sessions: {s.zoom_out is None for s in sessions})
    gt = _disk(r=8)
    plain = [Track(gt, "ritm", rng, Session(pred, hu)) for hu in hus[:2]]
    zoomed = [Track(gt, "ritm", rng, Session(pred, hu, zoom_out=ZoomOut())) for hu in hus[2:]]
    click_step([plain[0], zoomed[0], plain[1], zoomed[1]], 1, batch_size=8)
    assert sorted(map(sorted, groups)) == [[False], [True]]  # two batches, each of one kind


def test_volume_track_records_3d_dice_and_z_extent():
    gt = np.zeros((6, 48, 48), bool)
    gt[1:5] = _disk(r=6)
    t = Track(gt, "volume", np.random.default_rng(0), Painter(gt.shape), spacing_mm=(3.0, 1.0, 1.0))
    run_clicks([t], 5, batch_size=1)
    assert all(len(p) == 4 for p in t.points)  # (z, y, x, positive)
    assert t.records[0].z_extent_err_slices == 2  # one slice painted of 1..4: the ends are 1 and 2 slices off
    assert t.records[-1].dice == 1.0 and t.records[-1].z_extent_err_slices == 0


def test_z_extent_error_hand_computed():
    g = np.zeros((10, 4, 4), bool)
    g[2:6, 1, 1] = True  # slices 2..5
    p = np.zeros_like(g)
    assert z_extent_error_slices(p, g) == 4  # nothing predicted: the whole extent
    p[3:9, 2, 2] = True  # slices 3..8: 1 off at the start, 3 at the end
    assert z_extent_error_slices(p, g) == 3
    assert z_extent_error_slices(g, g) == 0 and z_extent_error_slices(np.zeros_like(g), np.zeros_like(g)) == 0
    with pytest.raises(ValueError, match="Z, Y, X"):
        z_extent_error_slices(g[0], g[0])
