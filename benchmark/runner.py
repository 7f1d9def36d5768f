"""The benchmark run: robot users click on every selected slice (or volume), for every method and protocol.

One *track* is one (case, slice, method, protocol), or one (case, method) under the ``volume``
protocol. The tracks run through the library's click loop (:mod:`iunet.evaluation`, the loop
that training validation and the speed test use too)::

    for k in 1..max_clicks:
        for each track: the robot looks at the track's current mask and picks its next click(s)
        all IU-Net tracks get their click in one batched forward pass (step_sessions)
        each classical track re-segments with its clicks
        Dice of every track is recorded (a step without a click carries the Dice over)

The robot sees only its own method's mask, so every method gets its own click sequence; the
random parts (the ``paper`` protocol) are seeded per (seed, case, slice, protocol), so a run is
deterministic and every method gets the *same* random clicks under ``paper``.

Under ``volume`` each method clicks on the whole volume: the robot clicks at the deepest point of
the largest 3D error component, IU-Net re-propagates through
:class:`iunet.inference.VolumeSession` (the app's code) and the random walker re-segments the
volume; 3D Dice, the z-extent error and the seconds per click are recorded.

Rows go to ``results.csv`` one case group at a time (flushed and fsynced), and the finished
cases to ``cases_done.txt`` (:mod:`benchmark.results`); a run that is killed resumes where it
stopped, without losing or duplicating rows, when started again with the same configuration.
"""
from __future__ import annotations

import json
import tempfile
import time
import zlib
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from iunet.clicks import ClickSize
from iunet.evaluation import Track, run_clicks
from iunet.inference import Predictor
from iunet.io.volume import hu_range_note
from iunet.model import InputConfig, read_header
from iunet.robot import ALL_PROTOCOLS, PROTOCOLS, VOLUME_PROTOCOLS

from . import datasets, report
from .methods import DEFAULT_METHODS, METHODS, VOLUME_METHODS, Method, build_methods
from .results import FIELDS, REPO, SYNTHETIC_BANNER, append_rows, environment, prepare_out, read_rows, sha256

__all__ = ["RunConfig", "run", "SliceTrack", "evaluate_cases", "evaluate_volume", "FIELDS", "SYNTHETIC_BANNER", "read_rows", "METHODS", "DEFAULT_METHODS"]
CHECKPOINT = "checkpoint"  # --alpha / --radius-px default: the IU-Net checkpoint's own input settings


@dataclass(frozen=True)
class RunConfig:
    """Everything ``python -m benchmark run`` needs; flags map one to one onto these fields."""

    data: str | None = None  # MSD task folder or patient folder with structure masks; None = synthetic
    synthetic_task: str = "colon"  # file naming of the synthetic dataset (colon_001.nii.gz)
    weights: str | None = None  # IU-Net checkpoint
    unet_weights: str | None = None  # automatic U-Net checkpoint (None = method skipped)
    methods: tuple[str, ...] = DEFAULT_METHODS
    protocols: tuple[str, ...] = PROTOCOLS  # slice robots by default; "volume" adds the 3D protocol
    max_clicks: int = 20
    # click size: a number, or CHECKPOINT = the IU-Net checkpoint's (InputConfig.default_radius_px
    # and .alpha; the library's defaults without a checkpoint); alpha None = fixed-size clicks
    radius_px: float | str = CHECKPOINT  # fixed click radius, and the first click's radius when dynamic
    alpha: float | str | None = CHECKPOINT  # dynamic click size of iunet-dynamic and the classical methods
    slices: str = "all"  # all | largest
    min_area_px: int = 1
    label_ids: tuple[int, ...] = ()
    thick_slices: int = 1  # every N consecutive axial slices averaged into one (datasets.thicken; --thick-slices)
    thin_slices: int = 1  # N - 1 slices interpolated between neighbours (datasets.thin; --thin-slices)
    noise_hu: float = 0.0  # added noise, σ in HU (datasets.add_noise; --noise-hu); 0 = as stored
    fov_mm: float = 0.0  # slices padded with air to this field of view (datasets.widen_fov; --fov-mm); 0 = as stored
    cases: tuple[str, ...] = ()
    split: str | None = None
    rw_grid_px: int = 128
    rw_volume_grid_px: int = 96  # in-plane grid of the 3D random walker (volume protocol)
    small_carry: bool = True  # VolumeSession looks for small carried masks again (volume protocol; --no-small-carry)
    carry_negative_mm: float | None = None  # VolumeSession's reach of background clicks (None: its default; --carry-negative-mm)
    regrow_limit: float | None = None  # VolumeSession's limit on a re-propagated mask's growth into other tissue (None: its default; --regrow-limit)
    shrink_limit: float | None = None  # VolumeSession's limit on a foreground click's run cutting masks (None: its default; --shrink-limit)
    zoom_in: bool = True  # iunet-zoomout's first click may also zoom in (ZoomOut.zoom_in; --no-zoom-in)
    zoom_refine: bool = True  # iunet-zoomout's first mask predicted again at the full view, itself as the previous mask (--no-zoom-refine: not)
    fat_zoom: bool = True  # iunet-zoomout's first click on fat: the organ around it, zoomed out (--no-fat-zoom: never)
    centre_zoom: bool = True  # iunet-zoomout's large first mask not of the clicked centre's tissue: zoomed in (--no-centre-zoom)
    prev_mask: bool = True  # per slice, the IU-Nets are shown the mask so far (--no-prev-mask: the clicks alone)
    focus: bool = True  # iunet-zoomout's later clicks that take in other tissue go to a focus view (ZoomOut.focus; --no-focus)
    seed: int = 0
    # the geodesic click maps' edge weight λ for a geodesic IU-Net instead of its checkpoint's
    # (a diagnostic: the model was trained at its own λ; docs/design.md, "Geodesic click maps")
    geodesic_lambda: float | None = None
    geodesic_noise_ref: float | None = None  # a diagnostic: the maps' noise reference instead of the checkpoint's (0 = off)
    device: str = "auto"
    runtime: str = "torch"  # the networks' forward pass: torch, or onnx (ONNX Runtime, fp32 on the CPU)
    batch: int = 32
    threads: int | None = None  # torch CPU threads (None = torch's default)
    out: str = "results/benchmark"
    resume: bool = False  # demand a resume (automatic anyway when the config matches)
    overwrite: bool = False


def default_weights(name: str, fallback: str | None = None) -> str | None:
    """``weights/<name>`` when it exists, else ``weights/<fallback>`` when that exists, else None."""
    for n in (name, fallback):
        if n and (REPO / "weights" / n).is_file():
            return str(REPO / "weights" / n)
    return None


def resolve_click_size(cfg: RunConfig) -> RunConfig:
    """``cfg`` with ``radius_px`` / ``alpha`` set to numbers: where they are :data:`CHECKPOINT`, the
    IU-Net checkpoint's own input settings (a model trained at α = 1/500 is clicked at 1/500
    unless asked otherwise), or the library's defaults when no checkpoint is given."""
    inputs = InputConfig()
    if cfg.weights and (CHECKPOINT in (cfg.alpha, cfg.radius_px)):
        try:
            inputs = InputConfig(**read_header(cfg.weights)["input_config"])
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise SystemExit(f"--weights {cfg.weights}: {e}") from e
    return replace(
        cfg,
        alpha=inputs.alpha if cfg.alpha == CHECKPOINT else cfg.alpha,
        radius_px=float(inputs.default_radius_px if cfg.radius_px == CHECKPOINT else cfg.radius_px),
    )


# ---------------------------------------------------------------------------------------
# robot


def track_rng(seed: int, case: str, z: int | None, protocol: str) -> np.random.Generator:
    """The robot's generator for one slice (``z``; None = the whole volume) and protocol (the same
    for every method)."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(case.encode()), 0 if z is None else z, ALL_PROTOCOLS.index(protocol)]))


# ---------------------------------------------------------------------------------------
# tracks


@dataclass(kw_only=True)
class SliceTrack(Track):
    """A click-loop track (:class:`iunet.evaluation.Track`) with what the results CSV names:
    the case, the slice ``z`` (None under ``volume``: the whole volume), the method, and the image
    the method starts from ((Y, X) HU, or (Z, Y, X) under ``volume``)."""

    case: str
    z: int | None
    method: Method
    image_hu: np.ndarray

    @property
    def clicked(self) -> list[tuple[int, ...]]:
        """The clicked points' coordinates, ``(y, x)`` (or ``(z, y, x)``), in order."""
        return [p[:-1] for p in self.points]

    @property
    def rows(self) -> list[dict]:
        """One CSV row (:data:`FIELDS`) per recorded interaction."""
        return [{
            "case": self.case, "slice": "" if self.z is None else self.z, "method": self.method.name, "protocol": self.protocol,
            "click": r.k, "n_clicks": r.n_clicks, "dice": f"{r.dice:.6f}", "ms": "" if r.ms is None else f"{r.ms:.3f}",
            "inter_px": r.inter_px, "pred_px": r.pred_px, "gt_px": r.gt_px,
            "z_err_slices": "" if r.z_extent_err_slices is None else r.z_extent_err_slices,
        } for r in self.records]


def click_tracks(tracks: Sequence[SliceTrack], max_clicks: int, batch: int, progress: bool = False) -> None:
    """Start each interactive track's state and run the click loop for ``max_clicks`` interactions."""
    for t in tracks:
        t.state = t.method.start(t.image_hu)
    run_clicks(tracks, max_clicks, batch, progress)


def auto_tracks(tracks: Sequence[SliceTrack], max_clicks: int, batch: int) -> None:
    """Automatic U-Net: one batched prediction per slice, the same mask at every click count."""
    by_slice: dict[tuple[str, int], list[SliceTrack]] = {}
    for t in tracks:
        by_slice.setdefault((t.case, t.z), []).append(t)
    keys = list(by_slice)
    for i in range(0, len(keys), batch):
        chunk = [by_slice[k] for k in keys[i : i + batch]]
        predictor = chunk[0][0].method.predictor
        t0 = time.perf_counter()
        probs = predictor.predict_batch([ts[0].image_hu for ts in chunk], [[] for _ in chunk])
        ms = (time.perf_counter() - t0) * 1000.0 / len(chunk)
        for ts, p in zip(chunk, probs):
            for t in ts:
                t.state = p >= 0.5
                for k in range(1, max_clicks + 1):
                    t.record(k, ms if k == 1 else None, clicked=False)


def evaluate_cases(
    slices: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]],
    methods: Sequence[Method],
    protocols: Sequence[str],
    max_clicks: int,
    seed: int,
    batch: int,
    progress: bool = False,
) -> list[dict]:
    """All slice rows for a group of cases. ``slices[case][z] = (hu (Y, X) float32, gt (Y, X) bool)``;
    ``protocols``: slice robots (the ``volume`` protocol is :func:`evaluate_volume`)."""
    tracks = [
        SliceTrack(gt, p, track_rng(seed, name, z, p), case=name, z=z, method=m, image_hu=hu)
        for name, by_z in slices.items() for m in methods for p in protocols for z, (hu, gt) in by_z.items()
    ]
    auto_tracks([t for t in tracks if not t.method.interactive], max_clicks, batch)
    # IU-Net tracks first (they share one forward pass per click), then the classical ones; at
    # most `batch` at a time, because a Session keeps every click's probability map for undo
    # (1 MB per click on a 512² slice)
    interactive = sorted((t for t in tracks if t.method.interactive), key=lambda t: not t.method.uses_session)
    for i in range(0, len(interactive), batch):
        click_tracks(interactive[i : i + batch], max_clicks, batch, progress)
    return [row for t in tracks for row in t.rows]


def evaluate_volume(
    name: str,
    volume_hu: np.ndarray,
    gt: np.ndarray,
    spacing_mm: Sequence[float],
    methods: Sequence[Method],
    max_clicks: int,
    seed: int,
    rw_grid_px: int = 96,
    progress: bool = False,
) -> list[dict]:
    """The ``volume`` protocol's rows for one case: each 3D-capable method clicks ``max_clicks``
    times on the whole volume. ``volume_hu``: (Z, Y, X) float32 HU, ``gt``: (Z, Y, X) bool,
    ``spacing_mm``: (dz, dy, dx). One method at a time, so only one volume state is in memory."""
    rows = []
    for m in methods:
        if not m.volumetric:
            continue
        t = SliceTrack(gt, "volume", track_rng(seed, name, None, "volume"), spacing_mm=tuple(spacing_mm),
                       case=name, z=None, method=m, image_hu=volume_hu)
        t.state = m.start_volume(volume_hu, spacing_mm, rw_grid_px)
        run_clicks([t], max_clicks, 1, progress)
        rows += t.rows
        t.state = None
    return rows


# ---------------------------------------------------------------------------------------
# the run's identity (what a resumed run must match)


def _identity(cfg: RunConfig, cases: list[str]) -> dict:
    """What decides the numbers (not the device, batch or folder): a resumed run must match it."""
    skip = {"device", "runtime", "batch", "threads", "out", "resume", "overwrite", "split", "cases"}
    if not set(cfg.protocols) & set(VOLUME_PROTOCOLS):
        skip.add("rw_volume_grid_px")  # only the volume protocol uses it
    if cfg.geodesic_lambda is None:
        skip.add("geodesic_lambda")  # runs without the override keep the identity they had
    if cfg.geodesic_noise_ref is None:
        skip.add("geodesic_noise_ref")
    if cfg.small_carry:
        skip.add("small_carry")  # likewise: the default
    if cfg.zoom_in:
        skip.add("zoom_in")
    if cfg.focus:
        skip.add("focus")
    if cfg.centre_zoom:
        skip.add("centre_zoom")
    if cfg.zoom_refine:
        skip.add("zoom_refine")
    if cfg.fat_zoom:
        skip.add("fat_zoom")
    if cfg.prev_mask:
        skip.add("prev_mask")
    if cfg.carry_negative_mm is None:
        skip.add("carry_negative_mm")
    if cfg.regrow_limit is None:
        skip.add("regrow_limit")
    if cfg.shrink_limit is None:
        skip.add("shrink_limit")
    if cfg.thick_slices == 1:
        skip.add("thick_slices")
    if cfg.thin_slices == 1:
        skip.add("thin_slices")
    if cfg.noise_hu == 0:
        skip.add("noise_hu")
    if cfg.fov_mm == 0:
        skip.add("fov_mm")
    ident = {k: v for k, v in asdict(cfg).items() if k not in skip}
    ident["data"] = str(Path(cfg.data).resolve()) if cfg.data else f"synthetic:{cfg.synthetic_task}"
    ident["cases"] = cases
    for key in ("weights", "unet_weights"):
        ident[key] = {"path": ident[key], "sha256": sha256(ident[key])} if ident[key] else None
    return json.loads(json.dumps(ident))  # tuples → lists, as read back from run.json


# ---------------------------------------------------------------------------------------
# the command


def set_geodesic_input(predictor: Predictor, field: str, value: float, flag: str) -> None:
    """Draw ``predictor``'s geodesic click maps with ``InputConfig.<field>`` = ``value`` instead of
    its checkpoint's: ``geodesic_lambda`` (the edge weight) or ``geodesic_noise_ref`` (above which
    pixel noise the edge cost comes from a smoother image, ``iunet.clicks.geodesic_sigma_px``; 0 =
    a 1 px blur whatever the noise, as before 2026-11-28). SystemExit for a model without
    geodesic maps or a value that is not a finite number >= 0."""
    if not predictor.config.geodesic:
        raise SystemExit(f"{flag}: the IU-Net checkpoint has no geodesic click maps")
    if not 0 <= value < float("inf"):
        raise SystemExit(f"{flag} must be a finite number >= 0, got {value}")
    predictor.inputs = replace(predictor.inputs, **{field: float(value)})


def _load_predictor(path: str | None, device: str, interactive: bool, flag: str, runtime: str = "torch") -> Predictor | None:
    if path is None:
        return None
    if not Path(path).is_file():
        raise SystemExit(f"{flag} {path}: file not found")
    try:
        p = Predictor(path, device=device, runtime=runtime)
    except (ValueError, ImportError) as e:
        raise SystemExit(f"{flag} {path}: {e}") from e
    if p.interactive != interactive:
        kind = "an interactive IU-Net" if interactive else "an automatic U-Net (trained with --model unet)"
        raise SystemExit(f"{flag} {path}: expected {kind} checkpoint")
    return p


def zoom_out_options(meths: list, cfg: RunConfig) -> list:
    """The methods with ZoomOut (``iunet-zoomout``) as the run's ZoomOut flags set them
    (``--no-zoom-in``, ``--no-focus``, ``--no-centre-zoom``, ``--no-fat-zoom``, ``--no-zoom-refine``); the others as they are."""
    changes = {}
    if not cfg.zoom_in:
        changes["zoom_in_fraction"] = 0.0
    if not cfg.focus:
        changes["focus_growth"] = 0.0
    if not cfg.centre_zoom:
        changes["centre_radius_px"] = 0.0
    if not cfg.fat_zoom:
        changes["fat_growth"] = 0.0
    if not cfg.zoom_refine:
        changes["refine"] = False
    return [replace(m, zoom_out=replace(m.zoom_out, **changes)) if changes and m.zoom_out is not None else m for m in meths]


def run(cfg: RunConfig) -> Path:
    """Run the benchmark; writes results.csv, summary.md, dice_vs_clicks.png, run.json and split.json
    into ``cfg.out`` and returns that folder."""
    t_start = time.time()
    out = Path(cfg.out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    unknown = [p for p in cfg.protocols if p not in ALL_PROTOCOLS]
    if unknown or not cfg.protocols:
        raise SystemExit(f"unknown protocol(s) {unknown}; use some of {', '.join(ALL_PROTOCOLS)}")
    if cfg.thick_slices > 1 and cfg.thin_slices > 1:
        raise SystemExit("thicker and thinner slices at once: give --thick-slices or --thin-slices, not both")
    slice_protocols = tuple(p for p in cfg.protocols if p in PROTOCOLS)
    volume = any(p in VOLUME_PROTOCOLS for p in cfg.protocols)
    with ExitStack() as stack:
        if cfg.data is None:
            print(f"\n{'!' * 100}\n!!! {SYNTHETIC_BANNER}\n{'!' * 100}\n", flush=True)
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="benchmark_synthetic_"))
            data = datasets.make_synthetic_msd(tmp, cfg.synthetic_task, seed=cfg.seed)
        else:
            data = Path(cfg.data)
        try:
            names = datasets.read_split(cfg.split) if cfg.split else list(cfg.cases)
        except (ValueError, OSError) as e:  # (json.JSONDecodeError is a ValueError)
            raise SystemExit(f"--split {cfg.split}: {e}") from e
        try:
            all_cases = datasets.find_cases(data)
            cases = datasets.select_cases(all_cases, names)
        except (ValueError, OSError) as e:
            raise SystemExit(str(e)) from e
        if not cfg.weights and any(m.startswith("iunet") for m in cfg.methods):
            raise SystemExit("no IU-Net weights: pass --weights (weights/iunet_*.safetensors are not there yet)")
        methods = tuple(cfg.methods)
        if not slice_protocols and not any(m in VOLUME_METHODS for m in methods):
            raise SystemExit(f"--protocols {' '.join(cfg.protocols)} needs a method with a 3D form ({', '.join(VOLUME_METHODS)}); "
                             f"--methods {' '.join(methods)} has none, so nothing would run")
        if "unet-auto" in methods and not cfg.unet_weights:
            print("note: no automatic U-Net weights (weights/unet_spleen.safetensors or --unet-weights); skipping unet-auto", flush=True)
            methods = tuple(m for m in methods if m != "unet-auto")
        cfg = resolve_click_size(replace(cfg, methods=methods))
        ident = _identity(cfg, [c.name for c in cases])
        done = prepare_out(out, ident, cfg.resume, cfg.overwrite)
        need_net = any(m.startswith("iunet") for m in methods)
        predictor = _load_predictor(cfg.weights, cfg.device, True, "--weights", cfg.runtime) if need_net else None
        for field in ("geodesic_lambda", "geodesic_noise_ref"):
            if getattr(cfg, field) is not None and predictor is not None:
                set_geodesic_input(predictor, field, getattr(cfg, field), "--" + field.replace("_", "-"))
        unet = _load_predictor(cfg.unet_weights, cfg.device, False, "--unet-weights", cfg.runtime) if "unet-auto" in methods else None
        click_size = ClickSize(cfg.radius_px, cfg.alpha)
        meths = build_methods(methods, predictor, unet, click_size, cfg.radius_px, cfg.rw_grid_px)
        if not cfg.small_carry:
            meths = [replace(m, small_carry=False) for m in meths]
        if not cfg.prev_mask:
            meths = [replace(m, prev_mask=False) for m in meths]
        if cfg.carry_negative_mm is not None:
            meths = [replace(m, carry_negative_mm=cfg.carry_negative_mm) for m in meths]
        if cfg.regrow_limit is not None:
            meths = [replace(m, regrow_limit=cfg.regrow_limit) for m in meths]
        if cfg.shrink_limit is not None:
            meths = [replace(m, shrink_limit=cfg.shrink_limit) for m in meths]
        meths = zoom_out_options(meths, cfg)
        if volume:
            flat = [m.name for m in meths if not m.volumetric]
            if flat:
                print(f"note: {', '.join(flat)} ha{'s' if len(flat) == 1 else 've'} no 3D form; left out of the volume protocol", flush=True)
        device = (predictor or unet).describe_device() if (predictor or unet) else "CPU"
        env = environment()
        old_meta = json.loads((out / "run.json").read_text()) if done and (out / "run.json").is_file() else {}
        if done:
            _check_resume(out, old_meta, {"device": device, "runtime": cfg.runtime, "batch": cfg.batch}, env)
        if done and all(c.name in done for c in cases):  # nothing left to run: the reports only
            print(f"{out}: all {len(cases)} cases already done; reports rewritten", flush=True)
            report.write_reports(out)
            return out
        meta = {
            "config": ident, "synthetic": cfg.data is None, "task": datasets.task_name(data),
            "methods": {m.name: m.label for m in meths}, "options": {"device": device, "runtime": cfg.runtime, "batch": cfg.batch, "out": str(out)},
            "volume_methods": {m.name: m.volume_label(cfg.rw_volume_grid_px) for m in meths if volume and m.volumetric},
            "environment": env, "checkpoints": {k: _header_summary(v) for k, v in (("weights", cfg.weights), ("unet_weights", cfg.unet_weights)) if v},
            "resumed_cases": len(done), "status": "running",
            "started": old_meta.get("started") or time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if old_meta.get("data_notes"):  # the notes on the cases already done (see datasets.upsampling_note)
            meta["data_notes"] = {k: v for k, v in old_meta["data_notes"].items() if k in done}
        (out / "run.json").write_text(json.dumps(meta, indent=2))
        (out / "split.json").write_text(json.dumps({"test": [c.name for c in cases], "source": cfg.split or ("--cases" if cfg.cases else "all labelled cases"), "data": ident["data"]}, indent=2))
        if done:
            print(f"resuming {out}: {len(done)} of {len(cases)} cases already done", flush=True)
        # group cases so that one group fills a batch (one slice per case in `largest` mode)
        per_group = max(1, cfg.batch // max(len(slice_protocols), 1)) if cfg.slices == "largest" else 1
        groups = [cases[i : i + per_group] for i in range(0, len(cases), per_group)]
        bar = tqdm(total=len(cases), initial=len(done), desc="cases", unit="case")
        try:
            _run_groups(groups, done, cfg, meths, slice_protocols, volume, meta, out, bar)
        except KeyboardInterrupt:
            bar.close()
            meta["status"] = "interrupted"
            (out / "run.json").write_text(json.dumps(meta, indent=2))
            n = len(set((out / "cases_done.txt").read_text().split())) if (out / "cases_done.txt").is_file() else 0
            raise SystemExit(f"interrupted: {n} of {len(cases)} cases done in {out}; run the same command again to resume") from None
        except BaseException:
            meta["status"] = "failed"
            (out / "run.json").write_text(json.dumps(meta, indent=2))
            raise
        bar.close()
    meta.update(status="complete", finished=time.strftime("%Y-%m-%d %H:%M:%S"), wall_s=round(time.time() - t_start, 1))
    (out / "run.json").write_text(json.dumps(meta, indent=2))
    if not (out / "results.csv").is_file() or not read_rows(out / "results.csv"):
        what = f"--min-area-px {cfg.min_area_px}" + (f", --label-ids {' '.join(map(str, cfg.label_ids))}" if cfg.label_ids else "")
        raise SystemExit(f"nothing to score: no slice of the {len(cases)} case(s) holds the structure ({what}); "
                         "lower --min-area-px or check --label-ids")
    report.write_reports(out)
    return out


def _check_resume(out: Path, old_meta: dict, options: dict, env: dict) -> None:
    """Refuse to resume ``out`` on another device, runtime, batch size or commit: the rows of the
    cases already done keep their timings (and, for another commit, possibly other numbers), so
    the run's ms per click would mix two set-ups under one label."""
    before = {k: (old_meta.get("options") or {}).get(k) for k in options}
    before["git_commit"] = (old_meta.get("environment") or {}).get("git_commit")
    now = dict(options, git_commit=env.get("git_commit"))
    diff = [f"{k} {before[k]!r} → {now[k]!r}" for k in now if before.get(k) is not None and before[k] != now[k]]
    if diff:
        raise SystemExit(f"{out} was started with another set-up ({'; '.join(diff)}): resuming would mix its "
                         "timings; resume with the same --device, --threads, --runtime and --batch at the same commit, "
                         "or use --overwrite or a new --out")


def load_scored_volume(case, cfg: RunConfig) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], str | None]:
    """(hu, gt, spacing_mm, note) of ``case`` as the run scores it: thicker slices
    (``--thick-slices``) or thinner ones (``--thin-slices``), then a wider field of view (``--fov-mm``), then added noise
    (``--noise-hu``; after the slab average, as a thick-slice scan's own noise is). ``note``:
    ``datasets.upsampling_note`` of the scan before the noise (which would hide repeated slices)
    and ``iunet.io.volume.hu_range_note`` (values that cannot be HU), or None."""
    hu, gt, spacing_mm = datasets.thicken(*datasets.load_volume(case, cfg.label_ids), cfg.thick_slices)
    hu, gt, spacing_mm = datasets.thin(hu, gt, spacing_mm, cfg.thin_slices)
    values = hu_range_note(hu)  # before the air of a wider field of view
    hu, gt = datasets.widen_fov(hu, gt, spacing_mm, cfg.fov_mm)
    note = "; ".join(n for n in (datasets.upsampling_note(hu, spacing_mm), values) if n) or None
    return datasets.add_noise(hu, cfg.noise_hu, cfg.seed, case.name), gt, spacing_mm, note


def _run_groups(groups, done, cfg, meths, slice_protocols, volume, meta, out, bar) -> None:
    """The cases of ``groups`` not in ``done``, a group at a time, each group's rows appended to
    ``out`` when it is complete (so that a killed run resumes after its last complete group)."""
    for group in groups:
        todo = [c for c in group if c.name not in done]
        if not todo:
            continue
        slices, volume_rows = {}, []
        for c in todo:
            try:
                hu, gt, spacing_mm, note = load_scored_volume(c, cfg)
            except (ValueError, OSError) as e:
                raise SystemExit(f"case {c.name}: {e}") from e
            if note:
                meta.setdefault("data_notes", {})[c.name] = note
                (out / "run.json").write_text(json.dumps(meta, indent=2))
                print(f"note: {c.name}: {note}", flush=True)
            if slice_protocols:
                slices[c.name] = datasets.slices_of(hu, gt, cfg.slices, cfg.min_area_px)
            if volume:
                volume_rows += evaluate_volume(c.name, hu, gt, spacing_mm, meths, cfg.max_clicks, cfg.seed, cfg.rw_volume_grid_px, progress=True)
            del hu, gt
        rows = evaluate_cases(slices, meths, slice_protocols, cfg.max_clicks, cfg.seed, cfg.batch, progress=True) if slices else []
        append_rows(out, rows + volume_rows, [c.name for c in todo])
        bar.update(len(todo))


def _header_summary(path: str) -> dict:
    """Name, input settings and training data of a checkpoint (for the record; no weights loaded)."""
    h = read_header(path)
    tc = h.get("train_config", {})
    return {
        "path": path, "name": h.get("name"), "input_config": h.get("input_config"), "metrics": h.get("metrics"),
        "trained_on": {k: tc.get(k) for k in ("labels", "msd", "totalseg", "synthetic_weight", "epochs", "steps") if k in tc},
    }

