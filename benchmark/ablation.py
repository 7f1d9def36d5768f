"""Table I of the paper: train the nine variants with ``iunet.train`` and evaluate them,
``python -m benchmark ablation``.

Each variant changes the model, the loss, the click weights or the click size (paper §III):
U-Net with Dice; IU-Net with Dice; + Gaussian boundary weight map; + Gaussian (G) or equal-weight
(EW) foreground clicks; EW with 2 px / 10 px clicks; EW with dynamic size α = 1/500 and 1/800.
Every variant is scored like the paper's Table I: Dice (%) after one interaction of the
``paper`` robot (a random positive + negative click), mean over the scored slices, and printed
next to the paper's numbers. ``--steps 30 --epochs 1`` gives a quick plumbing run; the paper
trained 100 epochs, so numbers from a small budget say little about the variants.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from iunet.clicks import ClickSize
from iunet.inference import Predictor
from iunet.model import InputConfig, read_header

from . import datasets, plain_help
from .methods import Method
from .results import SYNTHETIC_BANNER
from .runner import evaluate_cases

def _clicks(radius_px: float = 5.0, alpha: float | None = None) -> dict:
    """A variant's click size: the fields of its InputConfig (``TrainConfig.inputs``)."""
    return dict(default_radius_px=radius_px, alpha=alpha)


EW = dict(interactive=True, loss="wdice", boundary_weights=True, click_weights="equal", inputs=_clicks())
# (model, weight, click size, TrainConfig overrides, paper's (spleen, colon) DSC %), Table I order;
# ``inputs`` in the overrides sets fields of the base config's InputConfig (variant_config).
VARIANTS = (
    ("U-Net", "-", "5 px", dict(interactive=False, loss="dice", boundary_weights=False, click_weights="none", inputs=dict(alpha=None)), (70.23, 63.91)),
    ("IU-Net [3]", "-", "5 px", dict(interactive=True, loss="dice", boundary_weights=False, click_weights="none", inputs=dict(alpha=None)), (70.97, 65.71)),
    ("IU-Net", "(G) Weight Map", "5 px", dict(EW, click_weights="none"), (71.26, 67.63)),
    ("IU-Net", "(G) Weight Map + (G) FG Click", "5 px", dict(EW, click_weights="gaussian"), (71.89, 69.62)),
    ("IU-Net", "(G) Weight Map + (EW) FG Click", "5 px", dict(EW), (73.53, 72.35)),
    ("IU-Net", "(G) Weight Map + (EW) FG Click", "2 px", dict(EW, inputs=_clicks(2.0)), (73.19, 72.58)),
    ("IU-Net", "(G) Weight Map + (EW) FG Click", "10 px", dict(EW, inputs=_clicks(10.0)), (73.41, 73.02)),
    ("IU-Net", "(G) Weight Map + (EW) FG Click", "α = 1/500", dict(EW, inputs=_clicks(alpha=1 / 500)), (75.05, 74.06)),
    ("IU-Net", "(G) Weight Map + (EW) FG Click", "α = 1/800", dict(EW, inputs=_clicks(alpha=1 / 800)), (75.83, 74.30)),
)


def variant_config(base, overrides: dict, **fields):
    """``base`` (a TrainConfig) with a variant's ``overrides`` and ``fields``; the overrides'
    ``inputs`` (a dict) replaces fields of ``base.inputs``."""
    over = dict(overrides)
    inputs = replace(base.inputs, **over.pop("inputs", {}))
    return replace(base, inputs=inputs, **over, **fields)


def _same_training(path: Path, cfg) -> bool:
    """Whether ``path`` is a checkpoint trained with exactly ``cfg`` (so it can be reused); a
    checkpoint written before the input settings were nested (``upgrade_train_config``) counts."""
    from iunet.train import upgrade_train_config

    if not path.is_file():
        return False
    tc = upgrade_train_config(read_header(path).get("train_config", {}))
    want = json.loads(json.dumps(asdict(cfg)))
    return all(tc.get(k) == v for k, v in want.items() if k != "resume")


def run_ablation(a: argparse.Namespace) -> list[dict]:
    from iunet.train import TrainConfig, train

    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with ExitStack() as stack:
        if a.data is None:
            print(f"!!! {SYNTHETIC_BANNER}", flush=True)
            data = datasets.make_synthetic_msd(stack.enter_context(tempfile.TemporaryDirectory()), "colon", n_cases=a.synthetic_cases, seed=a.seed)
        else:
            data = Path(a.data)
        cases = datasets.select_cases(datasets.msd_cases(data), a.cases)
        slices = {c.name: datasets.scored_slices(c, tuple(a.label_ids), a.slices) for c in cases}
        base = TrainConfig(
            epochs=a.epochs, steps=a.steps, batch_size=a.batch_size, inputs=InputConfig(grid_px=a.grid_px), base_channels=a.base_channels,
            val_slices=a.val_slices, seed=a.seed, device=a.device, workers=a.workers,
            labels=tuple(a.train_labels), msd=tuple(a.train_msd), label_ids=tuple(a.label_ids),
        )
        for i, (model, weight, size, overrides, paper) in enumerate(VARIANTS, start=1):
            cfg = variant_config(base, overrides, out=str(out / f"exp{i}"), name=f"table1-exp{i}")
            ckpt = Path(cfg.out) / "best.safetensors"
            t0 = time.time()
            if _same_training(ckpt, cfg) and not a.retrain:
                print(f"exp {i}: reusing {ckpt}", flush=True)
            else:
                print(f"exp {i}: training {model} {weight} {size}", flush=True)
                ckpt = train(cfg)
            minutes = (time.time() - t0) / 60
            pred = Predictor(ckpt, device=a.device)
            if pred.interactive:
                clicks = ClickSize(pred.inputs.default_radius_px, pred.inputs.alpha)  # the checkpoint's own (= cfg.inputs)
                method = Method("iunet-dynamic" if clicks.alpha else "iunet-fixed", "", pred, clicks)
            else:
                method = Method("unet-auto", "", pred)
            rows = evaluate_cases(slices, [method], ["paper"], 1, a.seed, a.batch)
            dice = float(np.mean([float(r["dice"]) for r in rows]))
            results.append({"exp": i, "model": model, "weight": weight, "click_size": size, "dice": dice, "n_slices": len(rows),
                            "paper_spleen": paper[0], "paper_colon": paper[1], "train_minutes": round(minutes, 2), "checkpoint": str(ckpt)})
        meta = {"data": str(data) if a.data else "synthetic", "synthetic": a.data is None, "task": datasets.task_name(data), "budget": {"epochs": a.epochs, "steps": a.steps, "batch_size": a.batch_size, "grid_px": a.grid_px, "base_channels": a.base_channels}}
    (out / "table1.json").write_text(json.dumps({**meta, "results": results}, indent=2))
    md = table1_markdown(results, meta)
    (out / "table1.md").write_text(md)
    print(md)
    return results


def table1_markdown(results: list[dict], meta: dict) -> str:
    lines = ["# Table I: ablation (Dice % after one `paper` interaction)", ""]
    if meta["synthetic"]:
        lines += [f"> **{SYNTHETIC_BANNER}**", ""]
    b = meta["budget"]
    lines += [
        f"Data: {meta['task']} ({meta['data']}); training budget: {b['epochs']} epoch(s) × {b['steps']} steps × batch {b['batch_size']}, "
        f"grid {b['grid_px']} px, {b['base_channels']} base channels (the paper: 100 epochs).",
        "",
        "| # | Model | Weight | Click Size | Ours DSC | Paper Spleen DSC | Paper Colon DSC | training (min) |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['exp']} | {r['model']} | {r['weight']} | {r['click_size']} | {100 * r['dice']:.2f} | {r['paper_spleen']:.2f} | {r['paper_colon']:.2f} | {r['train_minutes']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def add_parser(sub) -> None:
    p = sub.add_parser("ablation", help="train + evaluate the paper's Table I variants", description=plain_help(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="MSD task folder to evaluate on (default: built-in SYNTHETIC data)")
    p.add_argument("--cases", nargs="+", default=[], help="cases to evaluate on (default: all)")
    p.add_argument("--slices", choices=["all", "largest"], default="all")
    p.add_argument("--label-ids", type=int, nargs="+", default=[])
    p.add_argument("--train-labels", action="append", default=[], help="label NIfTI folder to render training CT from (iunet.train --labels)")
    p.add_argument("--train-msd", action="append", default=[], help="MSD folder with real training images (iunet.train --msd); keep it apart from --data")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grid-px", type=int, default=128)
    p.add_argument("--base-channels", type=int, default=8)
    p.add_argument("--val-slices", type=int, default=8)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--synthetic-cases", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (on a busy machine 1 can be much faster)")
    p.add_argument("--batch", type=int, default=32, help="slices per forward pass in the evaluation")
    p.add_argument("--retrain", action="store_true", help="train again even when a matching checkpoint exists")
    p.add_argument("--out", default="results/ablation")
    p.set_defaults(func=run_ablation)
