"""Command line: ``python -m benchmark {run,report,download,speed,ablation,probes,compare} …`` (``--help`` on each)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from iunet.clicks import alpha_argument
from iunet.robot import ALL_PROTOCOLS, PROTOCOLS

from .download import int_at_least
from .methods import METHODS

DESCRIPTION = """Benchmark of interactive CT segmentation. Commands:
  run       robot users click on CT slices (or volumes); Dice versus clicks for IU-Net, the
            automatic U-Net and training-free baselines, side by side
  report    rewrite summary.md and the plot of a (possibly partial) run folder
  download  fetch an MSD task archive (resume, MD5 check, safe extraction)
  speed     click-to-mask latency and batched throughput
  ablation  train and evaluate the paper's Table I variants on a small budget
  probes    diagnostic one-click probes on rendered samples (renal sinus, vessel, lesion)
  compare   two runs (or two methods of one run) slice by slice: the Dice difference after k
            clicks with a paired bootstrap interval
Protocol, outputs and results: docs/benchmark.md; design: docs/design.md."""


def _alpha_or_checkpoint(text: str):
    return "checkpoint" if text.strip().lower() == "checkpoint" else alpha_argument(text)


def _radius_or_checkpoint(text: str):
    if text.strip().lower() == "checkpoint":
        return "checkpoint"
    try:
        r = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a radius in pixels such as 5, or 'checkpoint'") from None
    if not r > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return r


def _non_negative(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number such as 25") from None
    if not 0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return v


# The random walker's working grid: below this a slice (or a volume's in-plane grid) keeps too
# few pixels for its seed disks and its border to mean anything.
MIN_RW_GRID_PX = 8


def _run_parser(sub) -> None:
    from iunet.inference import RUNTIMES

    from .runner import RunConfig, default_weights
    from .speed import device_argument

    d = RunConfig()
    p = sub.add_parser(
        "run", help="robot users click; Dice vs clicks per method",
        description="Dice versus clicks for several methods and robot users, on an MSD task folder, one patient with "
                    "structure masks (3D-IRCADb layout), or built-in synthetic data; protocol in docs/design.md and docs/benchmark.md.",
    )
    p.add_argument("--data", help="MSD task folder (dataset.json, imagesTr/, labelsTr/), or one patient with one mask per structure "
                                  "(PATIENT_DICOM/ or ct.nii.gz + MASKS_DICOM.zip, masks/ or segmentations/; a case per structure, "
                                  "named <folder>:<structure>); default: a built-in SYNTHETIC dataset")
    p.add_argument("--synthetic-task", choices=["colon", "spleen"], default=d.synthetic_task, help="file naming of the synthetic dataset")
    p.add_argument("--weights", default=default_weights("iunet_spleen.safetensors", "iunet_agnostic.safetensors"), help="IU-Net checkpoint (default: weights/iunet_spleen, else weights/iunet_agnostic)")
    p.add_argument("--unet-weights", default=default_weights("unet_spleen.safetensors"), help="automatic U-Net checkpoint (default: weights/unet_spleen; skipped when absent)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(d.methods), help="methods side by side (default: all but iunet-zoom and iunet-zoomout)")
    p.add_argument("--protocols", nargs="+", choices=ALL_PROTOCOLS, default=list(d.protocols),
                   help=f"robot users: {', '.join(PROTOCOLS)} click on slices (default: these three); volume clicks on whole "
                        "volumes (3D Dice; IU-Net and the random walker)")
    p.add_argument("--max-clicks", type=int, default=d.max_clicks, help="interactions per slice or volume (default 20)")
    p.add_argument("--radius-px", type=_radius_or_checkpoint, default=d.radius_px,
                   help="fixed click radius, and the first dynamic click's (default: the checkpoint's, 5 px for the shipped weights)")
    p.add_argument("--alpha", type=_alpha_or_checkpoint, default=d.alpha,
                   help="dynamic click size, radius = α · mask area: e.g. 1/800, or 'none' for fixed clicks "
                        "(default: the checkpoint's α, 1/800 for the shipped weights)")
    p.add_argument("--slices", choices=["all", "largest"], default=d.slices, help="all foreground slices, or the largest per case")
    p.add_argument("--min-area-px", type=int, default=d.min_area_px, help="skip slices with fewer foreground pixels (default 1)")
    z = p.add_mutually_exclusive_group()
    z.add_argument("--thick-slices", type=int_at_least(1), default=d.thick_slices, metavar="N",
                   help="average every N consecutive axial slices into one before scoring: the same patient as a scan "
                        "with N-times thicker slices (e.g. 3 on a 1.6 mm series = 4.8 mm); default 1 = as stored")
    z.add_argument("--thin-slices", type=int_at_least(1), default=d.thin_slices, metavar="N",
                   help="insert N-1 interpolated slices between neighbours before scoring (HU linearly, masks by shape): a "
                        "proxy for a scan with N-times thinner slices (e.g. 2 on a 1.6 mm series = 0.8 mm), more and more "
                        "alike propagation steps; default 1 = as stored")
    p.add_argument("--noise-hu", type=_non_negative, default=d.noise_hu, metavar="SIGMA",
                   help="add Gaussian noise of SIGMA HU (correlated over about a pixel, as CT noise) before scoring: the same "
                        "patient as a lower-dose scan; default 0 = as stored")
    p.add_argument("--fov-mm", type=_non_negative, default=d.fov_mm, metavar="MM",
                   help="pad every slice with air to a field of view of MM mm at the same pixel size before scoring: the "
                        "same patient from a scanner with a larger field of view (organs smaller in the slice); default 0 = as stored")
    p.add_argument("--label-ids", type=int, nargs="+", default=[], help="target label ids (default: every label > 0)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cases", nargs="+", default=[], help="case names, e.g. spleen_8 colon_001 (default: all labelled cases)")
    g.add_argument("--split", help="split file: JSON list / {'test': [...]} or text, one case per line")
    p.add_argument("--rw-grid-px", type=int_at_least(MIN_RW_GRID_PX), default=d.rw_grid_px,
                   help=f"working grid of the random walker, >= {MIN_RW_GRID_PX} (default 128)")
    p.add_argument("--rw-volume-grid-px", type=int_at_least(MIN_RW_GRID_PX), default=d.rw_volume_grid_px,
                   help=f"in-plane grid of the 3D random walker under volume, >= {MIN_RW_GRID_PX} (default 96)")
    p.add_argument("--geodesic-lambda", type=float, default=None,
                   help="a diagnostic: draw a geodesic IU-Net's click maps with this edge weight instead of its checkpoint's")
    p.add_argument("--geodesic-noise-ref", type=float, default=None, metavar="NOISE",
                   help="a diagnostic: a geodesic IU-Net's maps take their edge cost from a smoother image above this pixel "
                        "noise (windowed units) instead of the checkpoint's level (iunet.clicks.geodesic_sigma_px; 0 = never)")
    p.add_argument("--no-small-carry", dest="small_carry", action="store_false",
                   help="a diagnostic for --protocols volume: propagation does not look for a small carried mask again "
                        "when the model predicts it empty (iunet.inference.VolumeSession(small_carry=False))")
    p.add_argument("--carry-negative-mm", type=float, default=None, metavar="MM",
                   help="a diagnostic for --protocols volume: how far (mm) a propagation carries background clicks to the "
                        "slices it reaches (default: iunet.inference.CARRY_NEGATIVE_MM; 0 = not at all)")
    p.add_argument("--regrow-limit", type=float, default=None, metavar="X",
                   help="a diagnostic for --protocols volume: a re-propagation keeps a slice's mask (and stops there) where "
                        "its new mask is over X times larger with other tissue added (default: iunet.inference.REGROW_LIMIT; 0 = off)")
    p.add_argument("--shrink-limit", type=float, default=None, metavar="F",
                   help="a diagnostic for --protocols volume: a foreground click's re-propagation keeps a slice's mask (and stops "
                        "there) where its new mask lies inside it with under F of its area (default: iunet.inference.SHRINK_LIMIT; 0 = off)")
    p.add_argument("--no-zoom-in", dest="zoom_in", action="store_false",
                   help="a diagnostic for iunet-zoomout: its first click is never predicted again zoomed in "
                        "(iunet.inference.ZoomOut(zoom_in_fraction=0))")
    p.add_argument("--no-focus", dest="focus", action="store_false",
                   help="a diagnostic for iunet-zoomout: a later click that takes in other tissue is never predicted again "
                        "on a focus view around it (iunet.inference.ZoomOut(focus_growth=0))")
    p.add_argument("--no-centre-zoom", dest="centre_zoom", action="store_false",
                   help="a diagnostic for iunet-zoomout: a large first mask that is not the clicked centre's tissue is zoomed out "
                        "as any large first mask, never zoomed in (iunet.inference.ZoomOut(centre_radius_px=0))")
    p.add_argument("--no-fat-zoom", dest="fat_zoom", action="store_false",
                   help="a diagnostic for iunet-zoomout: a first click on fat keeps the full view's mask, never the organ around "
                        "it seen zoomed out (iunet.inference.ZoomOut(fat_growth=0))")
    p.add_argument("--no-zoom-refine", dest="zoom_refine", action="store_false",
                   help="a diagnostic for iunet-zoomout: a slice's first mask is kept as one pass gives it, not predicted again "
                        "at the full view with itself as the previous mask (iunet.inference.ZoomOut(refine=False))")
    p.add_argument("--no-prev-mask", dest="prev_mask", action="store_false",
                   help="a diagnostic for the per-slice robots: the IU-Nets are not shown the mask so far, each click is predicted "
                        "from the clicks alone, as the paper's IU-Net (iunet.inference.Session(prev_mask=False))")
    p.add_argument("--device", type=device_argument, default=d.device, help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--runtime", choices=list(RUNTIMES), default=d.runtime,
                   help="the networks' forward pass: torch (default), or onnx = ONNX Runtime (fp32 on the CPU; the same "
                        "probabilities up to float rounding, faster on CPUs without native bf16)")
    p.add_argument("--seed", type=int_at_least(0), default=d.seed,
                   help="seed of the robots' random clicks (the paper protocol; the same clicks for every method) and of the synthetic data (default 0)")
    p.add_argument("--batch", type=int, default=d.batch, help="slices per forward pass (default 32)")
    p.add_argument("--threads", type=int_at_least(1), default=None,
                   help="torch CPU threads, >= 1 (default: torch's choice; on a busy machine 1 can be much faster)")
    p.add_argument("--out", default=d.out, help="results folder (default results/benchmark)")
    p.add_argument("--resume", action="store_true", help="demand resuming a partial run (automatic when the config matches)")
    p.add_argument("--overwrite", action="store_true", help="discard results of another configuration in --out")


def _run(a: argparse.Namespace) -> None:
    from .runner import RunConfig, run

    if a.max_clicks < 1 or a.batch < 1:
        sys.exit("--max-clicks and --batch must be >= 1")
    if a.shrink_limit is not None and not 0 <= a.shrink_limit < 1:
        sys.exit(f"--shrink-limit must be a fraction in [0, 1) (0 = off), got {a.shrink_limit:g}")
    cfg = RunConfig(
        data=a.data, synthetic_task=a.synthetic_task, weights=a.weights, unet_weights=a.unet_weights,
        methods=tuple(a.methods), protocols=tuple(a.protocols), max_clicks=a.max_clicks,
        radius_px=a.radius_px, alpha=a.alpha,
        slices=a.slices, min_area_px=a.min_area_px, label_ids=tuple(a.label_ids), thick_slices=a.thick_slices, thin_slices=a.thin_slices, noise_hu=a.noise_hu, fov_mm=a.fov_mm, cases=tuple(a.cases),
        split=a.split, rw_grid_px=a.rw_grid_px, rw_volume_grid_px=a.rw_volume_grid_px, seed=a.seed,
        geodesic_lambda=a.geodesic_lambda, geodesic_noise_ref=a.geodesic_noise_ref, small_carry=a.small_carry, carry_negative_mm=a.carry_negative_mm, regrow_limit=a.regrow_limit, shrink_limit=a.shrink_limit, zoom_in=a.zoom_in, focus=a.focus, centre_zoom=a.centre_zoom, zoom_refine=a.zoom_refine, fat_zoom=a.fat_zoom, prev_mask=a.prev_mask, device=a.device, runtime=a.runtime,
        batch=a.batch, threads=a.threads, out=a.out, resume=a.resume, overwrite=a.overwrite,
    )
    out = run(cfg)
    print(f"results in {out}: results.csv, summary.md, dice_vs_clicks.png, run.json, split.json")
    print((out / "summary.md").read_text())


def _report(folder: str) -> None:
    """``report``: refuse, in one line, a folder that is not a run folder (yet)."""
    from .report import write_reports

    from .results import require_run_folder

    out = Path(folder)
    require_run_folder(out)
    try:
        md, _ = write_reports(out)
    except json.JSONDecodeError as e:
        sys.exit(f"error: {out / 'run.json'} is unreadable ({e}); rerun `python -m benchmark run --out {out}` to rewrite it")
    print(md.read_text())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmark", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    r = sub.add_parser("report", help="rewrite summary.md and the plot of a run folder (also a partial one)")
    r.add_argument("out", help="run folder with results.csv and run.json")
    from . import ablation, compare, download, probes, speed

    download.add_parser(sub)
    speed.add_parser(sub)
    ablation.add_parser(sub)
    probes.add_parser(sub)
    compare.add_parser(sub)
    a = p.parse_args(argv)
    if a.command == "run":
        _run(a)
    elif a.command == "report":
        _report(a.out)
    else:
        a.func(a)


if __name__ == "__main__":
    main()
