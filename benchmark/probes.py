"""Diagnostic probes: one click on rendered samples of a kind the benchmark's real cases
show the model failing on, and the Dice of its mask against the sample's target.

Kinds (each drawn by the training sample code, ``iunet.data.make_sample``, with that option
at 1 and the first click at the target's deepest point, as the ``ritm`` robot clicks):

- ``organ``: a plain first click at a structure's deepest point (no sinus, vessel or lesion
  painted in; half of the targets among the largest structures); the target is the structure.
  The everyday case, beside which the others are read.
- ``sinus``: an organ whose core holds a renal sinus (a small fat core with thin branches,
  ``--sinus-p``), clicked there; the target is the whole organ. On 3D-IRCADb the kidneys'
  first clicks land in such sinuses on a quarter of their slices.
- ``wide-sinus``: the same with a wide sinus and an open hilum, the parenchyma a C
  (``--sinus-wide-p``), as a kidney's middle slices show it; clicked at the core or, half the
  time, anywhere in the organ (on 3D-IRCADb a first click beside the sinus takes one side).
- ``vessel``: a vessel drawn inside an organ (``--vessel-p``), clicked on; the target is the
  vessel (the portal vein's small slices inside the liver).
- ``lesion``: a faint lesion painted into an organ (``--lesion-p``), clicked in; the target is
  the lesion (the liver tumour).
- ``leak``: no click; a propagation sample whose previous mask (the structure on the
  neighbouring slice) spilt into a part of a touching structure (``--prop-spill-p``); the
  target is the structure alone on this slice (on ``spleen_8`` the spleen's mask carried on
  into the left kidney). Needs label volumes (``--labels``).
- ``carry``: no click; a propagation sample whose previous mask is the structure on the
  neighbouring slice (as drawn in training: slightly grown, shrunk or shifted), the structure
  still there; the target is the structure on this slice. Needs label volumes.
- ``end``: the same where the structure has just ended: the target is empty, and the Dice is 1
  only when the model predicts nothing (the share of such samples where propagation stops by
  itself). Needs label volumes.
- ``undo``: a previous mask that ran from the structure into one to three structures, each
  touching the mask so far (``--spill-p`` with ``--spill-parts 3``), a background click at the
  leak's deepest point, after a click on the structure half the time; the target is the
  structure alone (the 3D-IRCADb liver's mask carried into the kidney and the bowel, then
  corrected by the ``volume`` robot's background clicks, docs/design.md "Volumes").

In ``leak``, ``carry`` and ``end`` a 2.5D model (``ModelConfig.prev_image``) also gets the
neighbour's image (``iunet.data.neighbour_hu``); the samples are the same for every model.

These are *not* a benchmark: the samples come from the training distribution (rendered from
the label maps given, or from the built-in generator), so they show whether a model learnt a
kind of sample, not how it does on real CT. Every weights file sees the same samples and
clicks (one seed). ``--geodesic-lambda`` shows a geodesic model the same samples with its
click maps drawn at other edge weights (a diagnostic; the model was trained at its own).
Example::

    python -m benchmark probes --weights weights/iunet_agnostic3d.safetensors \\
        --labels ../shared/data/amos_label --samples 30
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from . import plain_help

KINDS = {
    "organ": dict(large_target_p=0.5),
    "sinus": dict(sinus_p=1.0, large_target_p=1.0),
    "wide-sinus": dict(sinus_p=1.0, sinus_wide_p=1.0, large_target_p=1.0),
    "vessel": dict(vessel_p=1.0, vessel_target_p=1.0),
    "lesion": dict(lesion_p=1.0, lesion_target_p=1.0),
    "leak": dict(propagate_p=1.0, prop_spill_p=1.0),
    "undo": dict(spill_p=1.0, spill_parts=3),
    "carry": dict(propagate_p=1.0),
    "end": dict(propagate_p=1.0),
}
LEAK_MARGIN_PX = 4  # a leak probe's previous mask reaches at least ...
MIN_LEAK_PX = 20  # ... this many grid px beyond the target grown by this margin (not only a perturbed outline)
GRID_PX = 256  # the probes' rendered slices: the model's grid, standing for a 512² slice
MIN_SINUS_ORGAN_PX = 400  # grid px: a sinus probe's organ is at least this large
SINUS_KINDS = ("sinus", "wide-sinus")  # the target is the whole organ around the clicked sinus
WHOLE_KINDS = ("organ",) + SINUS_KINDS  # the target is a whole labelled structure
LEAK_KINDS = ("leak", "undo")  # the previous mask holds the target and a leak beyond it
CARRIED_KINDS = ("leak", "carry", "end")  # no click: a neighbour's mask carried onto the slice (needs label volumes)
MAX_INNER_FRACTION = 0.4  # a vessel or lesion probe whose target is larger than this share of the labels drew none


def probe_samples(kind: str, slices, n: int, seed: int, grid_px: int = GRID_PX):
    """``n`` samples (``iunet.data.Sample``) of ``kind`` from the label slices ``slices`` (a list
    of ``LabelSlice``; None: the built-in generator), drawn with one seed: (HU slice (G, G),
    first click (None for ``leak``; for ``undo`` its clicks, a tuple of ``Click``), previous
    mask (G, G) bool or None, target (G, G) bool, HU slice (G, G) the previous mask lies on
    for the carried kinds (its neighbour), else None)."""
    from scipy import ndimage

    from iunet.data import SampleConfig, make_sample, training_labels
    from iunet.model import InputConfig

    cfg = SampleConfig(inputs=InputConfig(grid_px=grid_px), single_click_p=1.0, centre_click_p=1.0, geometry=False,
                       real_fraction=0.0, prev_image=kind in CARRIED_KINDS, **{"propagate_p": 0.0, **KINDS[kind]})
    if kind in CARRIED_KINDS and (slices is None or all(sl.volume is None for sl in slices)):
        raise ValueError(f"the {kind} probe needs label volumes (--labels): a neighbouring slice to carry a mask from")
    rng = np.random.default_rng(seed)
    out, tries = [], 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n:
            raise RuntimeError(f"could not draw {n} {kind} samples from these labels (organs too small?)")
        sl = training_labels(grid_px, rng) if slices is None else slices[int(rng.integers(len(slices)))]
        s = make_sample(sl, rng, cfg)
        target = s.target[0] > 0.5
        if kind in ("carry", "end"):
            if s.clicks or not s.prev.any() or (kind == "end") == bool(target.any()) or 0 < target.sum() < 6:
                continue  # not a carried mask (no neighbour), or the other kind
            out.append((s.hu, None, s.prev[0] > 0.5, target, s.prev_hu))
            continue
        if kind in LEAK_KINDS:  # a previous mask that reaches well beyond the target
            prev = s.prev[0] > 0.5
            clicked = kind == "undo"  # a leak is carried without a click, undone with clicks
            beyond_px = (prev & ~ndimage.binary_dilation(target, iterations=LEAK_MARGIN_PX)).sum()
            if bool(s.clicks) != clicked or target.sum() < 6 or beyond_px < MIN_LEAK_PX:
                continue  # not that kind of sample (no neighbour, nothing touching), or the leak is only an outline
            out.append((s.hu, tuple(s.clicks) if clicked else None, prev, target, None if clicked else s.prev_hu))
            continue
        if not s.clicks or target.sum() < 6:
            continue
        if kind in SINUS_KINDS and target.sum() < MIN_SINUS_ORGAN_PX:
            continue
        if kind not in WHOLE_KINDS and target.sum() > MAX_INNER_FRACTION * (sl.labels > 0).sum():
            continue  # no vessel or lesion could be drawn: the target is the organ
        out.append((s.hu, s.clicks[0], None, target, None))
    return out


def _probe_clicks(c, first_radius_px: float) -> list:
    """The clicks a probe sample is predicted with: none (``leak``), an ``undo`` sample's own
    (their radii drawn from the previous mask's area, as the robot draws them from the current
    mask's), or the first click, positive, at ``first_radius_px``."""
    from iunet.clicks import Click

    if c is None:
        return []
    if isinstance(c, tuple):
        return list(c)
    return [Click(c.y, c.x, True, first_radius_px)]


def probe(weights: list[str], kinds: list[str], labels: list[str] | None, n: int, seed: int,
          geodesic_lambdas: list[float] | None = None, runtime: str = "torch") -> list[dict]:
    """Mean Dice of one click (``leak``, ``carry``, ``end``: of the propagated mask; ``undo``: of its clicks) per
    (weights, kind) and, with ``geodesic_lambdas``, per edge weight of the click maps; rows for
    ``probes.csv``. ``runtime``: the forward pass in torch or ONNX Runtime ("onnx", CPU)."""
    from iunet.data import label_files, load_label_volumes
    from iunet.inference import Predictor
    from iunet.metrics import dice
    from iunet.model import load_checkpoint
    from iunet.train import HELD_OUT

    slices = None
    if labels:
        slices = load_label_volumes([f for p in labels for f in label_files(Path(p))], GRID_PX, exclude=HELD_OUT)
    from .runner import set_geodesic_input

    preds = []  # (weights, λ or None = the checkpoint's, predictor)
    for w in weights:
        ckpt = load_checkpoint(w)
        for lam in geodesic_lambdas or [None]:
            try:
                p = Predictor(ckpt, device="cpu" if runtime == "onnx" else "auto", runtime=runtime)
            except (ValueError, ImportError) as e:
                raise SystemExit(f"--runtime {runtime}: {e}") from e
            if lam is not None:
                set_geodesic_input(p, "geodesic_lambda", lam, f"--geodesic-lambda ({w})")
            preds.append((w, lam, p))
    rows = []
    for kind in kinds:
        samples = probe_samples(kind, slices, n, seed)
        for w, lam, p in preds:
            # the first click has the default radius of a 512² slice's first click, on that grid
            r = p.inputs.default_radius_px * GRID_PX / 512
            d = [dice(p.predict(hu, _probe_clicks(c, r), prev_mask=prev, prev_image_hu=ph) >= 0.5, t) for hu, c, prev, t, ph in samples]
            rows.append({"weights": w, "geodesic_lambda": p.inputs.geodesic_lambda if p.config.geodesic else "",
                         "kind": kind, "samples": n, "seed": seed, "dice_mean": round(float(np.mean(d)), 4),
                         "dice_median": round(float(np.median(d)), 4)})
            at = "" if lam is None else f" at λ = {lam:g}"
            print(f"{kind:7s} {w}{at}: mean Dice {np.mean(d):.3f} (median {np.median(d):.3f}, {n} samples)", flush=True)
    return rows


def add_parser(sub) -> None:
    from iunet.inference import RUNTIMES

    p = sub.add_parser("probes", help="diagnostic one-click probes on rendered samples (not a benchmark)",
                       description=plain_help(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", nargs="+", required=True, help="weights files, all shown the same samples")
    p.add_argument("--kinds", nargs="+", choices=sorted(KINDS), default=None,
                   help="default: all; without --labels all but leak, carry and end")
    p.add_argument("--labels", action="append", default=None,
                   help="folder or file of label NIfTIs to render (repeatable; default: the built-in generator)")
    p.add_argument("--samples", type=int, default=30, help="samples per kind (default 30)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--geodesic-lambda", type=float, nargs="+", default=None,
                   help="a diagnostic: each geodesic model also at these edge weights of its click maps (default: its own)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--runtime", choices=list(RUNTIMES), default="torch",
                   help="the forward pass: torch (default) or onnx = ONNX Runtime (fp32, CPU; the same Dice up to float rounding)")
    p.add_argument("--out", help="also write probes.csv here")
    p.set_defaults(func=_main)


def _main(a: argparse.Namespace) -> None:
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    for w in a.weights:
        if not Path(w).is_file():
            raise SystemExit(f"no weights file {w}")
    if a.kinds is None:
        a.kinds = [k for k in KINDS if a.labels or k not in CARRIED_KINDS]
    need = [k for k in a.kinds if k in CARRIED_KINDS]
    if need and not a.labels:
        raise SystemExit(f"the {' and '.join(need)} probe{'s need' if len(need) > 1 else ' needs'} label volumes: give --labels (e.g. ../shared/data/amos_label)")
    rows = probe(a.weights, a.kinds, a.labels, a.samples, a.seed, a.geodesic_lambda, a.runtime)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "probes.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {out / 'probes.csv'}")
