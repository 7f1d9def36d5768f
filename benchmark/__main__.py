"""Command line: ``python -m benchmark {run,report,download,speed,ablation} …`` (``--help`` on each)."""
from __future__ import annotations

import argparse
import sys

from iunet.robot import PROTOCOLS

from .methods import METHODS


def parse_alpha(s: str) -> float:
    """``1/800`` or ``0.00125`` → float > 0."""
    try:
        a = 1.0 / float(s[2:]) if s.startswith("1/") else float(s)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"--alpha {s!r}: give a number such as 1/800 or 0.00125") from None
    if not a > 0:
        raise argparse.ArgumentTypeError(f"--alpha {s!r} must be > 0")
    return a


def _run_parser(sub) -> None:
    from .runner import RunConfig, default_weights

    d = RunConfig()
    p = sub.add_parser("run", help="robot users click; Dice vs clicks per method", description="Dice versus clicks for several methods, robot users, MSD layout (DESIGN.md §2).")
    p.add_argument("--data", help="MSD task folder (dataset.json, imagesTr/, labelsTr/); default: a built-in SYNTHETIC dataset")
    p.add_argument("--synthetic-task", choices=["colon", "spleen"], default=d.synthetic_task, help="file naming of the synthetic dataset")
    p.add_argument("--weights", default=default_weights("iunet_spleen.safetensors", "iunet_agnostic.safetensors"), help="IU-Net checkpoint (default: weights/iunet_spleen, else weights/iunet_agnostic)")
    p.add_argument("--unet-weights", default=default_weights("unet_spleen.safetensors"), help="automatic U-Net checkpoint (default: weights/unet_spleen; skipped when absent)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(d.methods))
    p.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(d.protocols))
    p.add_argument("--max-clicks", type=int, default=d.max_clicks, help="interactions per slice (default 20)")
    p.add_argument("--radius-px", type=float, default=d.radius_px, help="fixed click radius, and the first dynamic click's (default 5)")
    p.add_argument("--alpha", type=parse_alpha, default=d.alpha, help="dynamic click size radius = α · mask area (default 1/800)")
    p.add_argument("--slices", choices=["all", "largest"], default=d.slices, help="all foreground slices, or the largest per case")
    p.add_argument("--min-area-px", type=int, default=d.min_area_px, help="skip slices with fewer foreground pixels (default 1)")
    p.add_argument("--label-ids", type=int, nargs="+", default=[], help="target label ids (default: every label > 0)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cases", nargs="+", default=[], help="case names, e.g. spleen_8 colon_001 (default: all labelled cases)")
    g.add_argument("--split", help="split file: JSON list / {'test': [...]} or text, one case per line")
    p.add_argument("--rw-grid-px", type=int, default=d.rw_grid_px, help="working grid of the random walker (default 128)")
    p.add_argument("--device", default=d.device, help="auto (default), cpu, cuda")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--batch", type=int, default=d.batch, help="slices per forward pass (default 32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (on a busy machine 1 can be much faster)")
    p.add_argument("--out", default=d.out, help="results folder (default results/benchmark)")
    p.add_argument("--resume", action="store_true", help="demand resuming a partial run (automatic when the config matches)")
    p.add_argument("--overwrite", action="store_true", help="discard results of another configuration in --out")


def _run(a: argparse.Namespace) -> None:
    from .runner import RunConfig, run

    if a.max_clicks < 1 or a.batch < 1:
        sys.exit("--max-clicks and --batch must be >= 1")
    cfg = RunConfig(
        data=a.data, synthetic_task=a.synthetic_task, weights=a.weights, unet_weights=a.unet_weights,
        methods=tuple(a.methods), protocols=tuple(a.protocols), max_clicks=a.max_clicks, radius_px=a.radius_px,
        alpha=a.alpha, slices=a.slices, min_area_px=a.min_area_px, label_ids=tuple(a.label_ids), cases=tuple(a.cases),
        split=a.split, rw_grid_px=a.rw_grid_px, seed=a.seed, device=a.device, batch=a.batch, threads=a.threads, out=a.out,
        resume=a.resume, overwrite=a.overwrite,
    )
    out = run(cfg)
    print(f"results in {out}: results.csv, summary.md, dice_vs_clicks.png, run.json, split.json")
    print((out / "summary.md").read_text())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    r = sub.add_parser("report", help="rewrite summary.md and the plot of a run folder (also a partial one)")
    r.add_argument("out", help="run folder with results.csv and run.json")
    from . import ablation, download, speed

    download.add_parser(sub)
    speed.add_parser(sub)
    ablation.add_parser(sub)
    a = p.parse_args(argv)
    if a.command == "run":
        _run(a)
    elif a.command == "report":
        from .report import write_reports

        md, _ = write_reports(a.out)
        print(md.read_text())
    else:
        a.func(a)


if __name__ == "__main__":
    main()
