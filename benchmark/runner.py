"""The benchmark run: robot users click on every selected slice, for every method and protocol.

One *track* is one (case, slice, method, protocol). The loop, in the spirit of RITM's
evaluation::

    for k in 1..max_clicks:
        for each track: the robot looks at the track's current mask and picks its next click(s)
        all IU-Net tracks get their click in one batched forward pass (step_sessions)
        each classical track re-segments with its clicks
        Dice of every track is recorded

The robot sees only its own method's mask, so every method gets its own click sequence; the
random parts (the ``paper`` protocol) are seeded per (seed, case, slice, protocol), so a run is
deterministic and every method gets the *same* random clicks under ``paper``.

Rows go to ``results.csv`` one case group at a time (flushed and fsynced), and the finished
cases to ``cases_done.txt``; a run that is killed resumes where it stopped, without losing or
duplicating rows, when started again with the same configuration.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
import time
import zlib
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from iunet.clicks import ClickSize
from iunet.inference import Predictor, Session, step_sessions
from iunet.model import read_header
from iunet.robot import PROTOCOLS, next_clicks

from . import datasets, report
from .methods import METHODS, Method, build_methods

REPO = Path(__file__).resolve().parent.parent
FIELDS = ("case", "slice", "method", "protocol", "click", "n_clicks", "dice", "ms", "inter_px", "pred_px", "gt_px")
SYNTHETIC_BANNER = "SYNTHETIC DATA: no --data given, so this runs on rendered toy slices, not on CT of patients; its numbers only check that the benchmark works"


@dataclass(frozen=True)
class RunConfig:
    """Everything ``python -m benchmark run`` needs; flags map one to one onto these fields."""

    data: str | None = None  # MSD task folder; None = built-in synthetic dataset
    synthetic_task: str = "colon"  # file naming of the synthetic dataset (colon_001.nii.gz)
    weights: str | None = None  # IU-Net checkpoint
    unet_weights: str | None = None  # automatic U-Net checkpoint (None = method skipped)
    methods: tuple[str, ...] = METHODS
    protocols: tuple[str, ...] = PROTOCOLS
    max_clicks: int = 20
    radius_px: float = 5.0  # fixed click radius, and the first click's radius when dynamic
    alpha: float = 1 / 800  # dynamic click size of iunet-dynamic and the classical methods
    slices: str = "all"  # all | largest
    min_area_px: int = 1
    label_ids: tuple[int, ...] = ()
    cases: tuple[str, ...] = ()
    split: str | None = None
    rw_grid_px: int = 128
    seed: int = 0
    device: str = "auto"
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


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# robot


def track_rng(seed: int, case: str, z: int, protocol: str) -> np.random.Generator:
    """The robot's generator for one slice and protocol (the same for every method)."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(case.encode()), z, PROTOCOLS.index(protocol)]))


# ---------------------------------------------------------------------------------------
# tracks


@dataclass
class Track:
    """One method clicking on one slice under one robot protocol."""

    case: str
    z: int
    method: Method
    protocol: str
    image_hu: np.ndarray
    gt: np.ndarray
    rng: np.random.Generator
    state: object = None  # Session (IU-Net), SeededState (classical) or a fixed mask (automatic)
    n_clicks: int = 0
    ms: float = 0.0  # spent on the current interaction
    rows: list[dict] = field(default_factory=list)

    @property
    def mask(self) -> np.ndarray:
        m = self.state if isinstance(self.state, np.ndarray) else getattr(self.state, "mask", None)
        return np.zeros(self.gt.shape, bool) if m is None else m

    @property
    def clicked(self) -> list[tuple[int, int]]:
        return [(c.y, c.x) for c in getattr(self.state, "clicks", ())]

    def record(self, k: int, ms: float | None) -> None:
        m, g = self.mask, self.gt
        inter, pred, true = int((m & g).sum()), int(m.sum()), int(g.sum())
        d = 1.0 if pred + true == 0 else 2.0 * inter / (pred + true)
        self.rows.append({
            "case": self.case, "slice": self.z, "method": self.method.name, "protocol": self.protocol,
            "click": k, "n_clicks": self.n_clicks, "dice": f"{d:.6f}", "ms": "" if ms is None else f"{ms:.3f}",
            "inter_px": inter, "pred_px": pred, "gt_px": true,
        })


def _add_clicks(todo: Sequence[tuple[Track, tuple]], batch: int) -> None:
    """One click for each (track, point): IU-Net tracks batched per predictor, the rest one by one."""
    sessions: dict[int, list] = {}
    for t, p in todo:
        t.n_clicks += 1
        if isinstance(t.state, Session):
            sessions.setdefault(id(t.state.predictor), []).append((t, p))
        else:
            t.ms += t.method.click(t.state, p)
    for group in sessions.values():
        for i in range(0, len(group), batch):
            chunk = group[i : i + batch]
            step_sessions([t.state for t, _ in chunk], [p for _, p in chunk])
            for t, _ in chunk:
                t.ms += t.state.last_latency_ms


def click_step(tracks: Sequence[Track], k: int, batch: int) -> None:
    """Interaction ``k`` of every (started) track: the robot picks, the methods segment, Dice is recorded."""
    plans = [(t, next_clicks(t.protocol, t.gt, t.mask, t.rng, t.clicked)) for t in tracks]
    for t, _ in plans:
        t.ms = 0.0
    for j in range(max((len(p) for _, p in plans), default=0)):  # the paper's pairs: 2 sub-steps
        _add_clicks([(t, p[j]) for t, p in plans if len(p) > j], batch)
    for t, p in plans:
        t.record(k, t.ms if p else None)  # no point: nothing left to correct, Dice carried over


def click_tracks(tracks: Sequence[Track], max_clicks: int, batch: int, progress: bool = False) -> None:
    """Run the robot on interactive tracks for ``max_clicks`` interactions (the loop above)."""
    for t in tracks:
        t.state = t.method.start(t.image_hu)
    for k in tqdm(range(1, max_clicks + 1), desc="clicks", leave=False, disable=not progress):
        click_step(tracks, k, batch)


def auto_tracks(tracks: Sequence[Track], max_clicks: int, batch: int) -> None:
    """Automatic U-Net: one batched prediction per slice, the same mask at every click count."""
    by_slice: dict[tuple[str, int], list[Track]] = {}
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
                    t.record(k, ms if k == 1 else None)


def evaluate_cases(
    slices: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]],
    methods: Sequence[Method],
    protocols: Sequence[str],
    max_clicks: int,
    seed: int,
    batch: int,
    progress: bool = False,
) -> list[dict]:
    """All rows for a group of cases. ``slices[case][z] = (hu (Y, X) float32, gt (Y, X) bool)``."""
    tracks = [
        Track(name, z, m, p, hu, gt, track_rng(seed, name, z, p))
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


# ---------------------------------------------------------------------------------------
# results folder: CSV + resume


def _identity(cfg: RunConfig, cases: list[str]) -> dict:
    """What decides the numbers (not the device, batch or folder): a resumed run must match it."""
    ident = {k: v for k, v in asdict(cfg).items() if k not in ("device", "batch", "threads", "out", "resume", "overwrite", "split", "cases")}
    ident["data"] = str(Path(cfg.data).resolve()) if cfg.data else f"synthetic:{cfg.synthetic_task}"
    ident["cases"] = cases
    for key in ("weights", "unet_weights"):
        ident[key] = {"path": ident[key], "sha256": _sha256(ident[key])} if ident[key] else None
    return json.loads(json.dumps(ident))  # tuples → lists, as read back from run.json


def _prepare_out(out: Path, ident: dict, cfg: RunConfig) -> set[str]:
    """Make ``out`` ready and return the cases already done (resume). Refuses to mix configurations."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, done_path, meta_path = out / "results.csv", out / "cases_done.txt", out / "run.json"
    has_rows = csv_path.exists() or done_path.exists()
    if has_rows and cfg.overwrite:
        for p in (csv_path, done_path):
            p.unlink(missing_ok=True)
        has_rows = False
    if not has_rows:
        if cfg.resume:
            raise SystemExit(f"--resume: {out} holds no results to resume")
        return set()
    prev = json.loads(meta_path.read_text()).get("config") if meta_path.exists() else None
    if prev != ident:
        diff = sorted(k for k in set(ident) | set(prev or {}) if (prev or {}).get(k) != ident.get(k))
        raise SystemExit(
            f"{out} holds results of another configuration (differs in: {', '.join(diff) or 'run.json missing'}); "
            "use a new --out, or --overwrite to discard them"
        )
    done = set(done_path.read_text().split()) if done_path.exists() else set()
    rows = read_rows(csv_path) if csv_path.exists() else []
    # rewrite without the rows of an interrupted group (and any line a kill cut short)
    tmp = csv_path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(r for r in rows if r["case"] in done)
    tmp.replace(csv_path)
    return done


def read_rows(csv_path: Path) -> list[dict]:
    """Complete rows of a results CSV (a line cut short by a kill has missing fields and is skipped)."""
    with open(csv_path, newline="") as f:
        return [r for r in csv.DictReader(f) if None not in r.values() and r.get("gt_px") not in (None, "")]


def _append(out: Path, rows: list[dict], cases: list[str]) -> None:
    """Append a group's rows, then mark its cases done; both flushed to disk in that order."""
    csv_path = out / "results.csv"
    new = not csv_path.exists()
    with open(csv_path, "a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    with open(out / "cases_done.txt", "a") as f:
        f.write("".join(c + "\n" for c in cases))
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------
# the command


def _load_predictor(path: str | None, device: str, interactive: bool, flag: str) -> Predictor | None:
    if path is None:
        return None
    if not Path(path).is_file():
        raise SystemExit(f"{flag} {path}: file not found")
    p = Predictor(path, device=device)
    if p.interactive != interactive:
        kind = "an interactive IU-Net" if interactive else "an automatic U-Net (trained with --model unet)"
        raise SystemExit(f"{flag} {path}: expected {kind} checkpoint")
    return p


def run(cfg: RunConfig) -> Path:
    """Run the benchmark; writes results.csv, summary.md, dice_vs_clicks.png, run.json and split.json
    into ``cfg.out`` and returns that folder."""
    t_start = time.time()
    out = Path(cfg.out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with ExitStack() as stack:
        if cfg.data is None:
            print(f"\n{'!' * 100}\n!!! {SYNTHETIC_BANNER}\n{'!' * 100}\n", flush=True)
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="benchmark_synthetic_"))
            data = datasets.make_synthetic_msd(tmp, cfg.synthetic_task, seed=cfg.seed)
        else:
            data = Path(cfg.data)
        try:
            all_cases = datasets.msd_cases(data)
            names = datasets.read_split(cfg.split) if cfg.split else list(cfg.cases)
            cases = datasets.select_cases(all_cases, names)
        except (ValueError, OSError) as e:
            raise SystemExit(str(e)) from e
        if not cfg.weights and any(m.startswith("iunet") for m in cfg.methods):
            raise SystemExit("no IU-Net weights: pass --weights (weights/iunet_*.safetensors are not there yet)")
        methods = tuple(cfg.methods)
        if "unet-auto" in methods and not cfg.unet_weights:
            print("note: no automatic U-Net weights (weights/unet_spleen.safetensors or --unet-weights); skipping unet-auto", flush=True)
            methods = tuple(m for m in methods if m != "unet-auto")
        cfg = replace(cfg, methods=methods)
        ident = _identity(cfg, [c.name for c in cases])
        done = _prepare_out(out, ident, cfg)
        need_net = any(m.startswith("iunet") for m in methods)
        predictor = _load_predictor(cfg.weights, cfg.device, True, "--weights") if need_net else None
        unet = _load_predictor(cfg.unet_weights, cfg.device, False, "--unet-weights") if "unet-auto" in methods else None
        click_size = ClickSize(cfg.radius_px, cfg.alpha)
        meths = build_methods(methods, predictor, unet, click_size, cfg.radius_px, cfg.rw_grid_px)
        device = (predictor or unet).describe_device() if (predictor or unet) else "CPU"
        meta = {
            "config": ident, "synthetic": cfg.data is None, "task": datasets.task_name(data),
            "methods": {m.name: m.label for m in meths}, "options": {"device": device, "batch": cfg.batch, "out": str(out)},
            "environment": report.environment(), "checkpoints": {k: _header_summary(v) for k, v in (("weights", cfg.weights), ("unet_weights", cfg.unet_weights)) if v},
            "resumed_cases": len(done), "status": "running", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        (out / "run.json").write_text(json.dumps(meta, indent=2))
        (out / "split.json").write_text(json.dumps({"test": [c.name for c in cases], "source": cfg.split or ("--cases" if cfg.cases else "all labelled cases"), "data": ident["data"]}, indent=2))
        if done:
            print(f"resuming {out}: {len(done)} of {len(cases)} cases already done", flush=True)
        # group cases so that one group fills a batch (one slice per case in `largest` mode)
        per_group = max(1, cfg.batch // len(cfg.protocols)) if cfg.slices == "largest" else 1
        groups = [cases[i : i + per_group] for i in range(0, len(cases), per_group)]
        bar = tqdm(total=len(cases), initial=len(done), desc="cases", unit="case")
        for group in groups:
            todo = [c for c in group if c.name not in done]
            if not todo:
                continue
            slices = {c.name: datasets.scored_slices(c, cfg.label_ids, cfg.slices, cfg.min_area_px) for c in todo}
            rows = evaluate_cases(slices, meths, cfg.protocols, cfg.max_clicks, cfg.seed, cfg.batch, progress=True)
            _append(out, rows, [c.name for c in todo])
            bar.update(len(todo))
        bar.close()
    meta.update(status="complete", finished=time.strftime("%Y-%m-%d %H:%M:%S"), wall_s=round(time.time() - t_start, 1))
    (out / "run.json").write_text(json.dumps(meta, indent=2))
    report.write_reports(out)
    return out


def _header_summary(path: str) -> dict:
    """Name, input settings and training data of a checkpoint (for the record; no weights loaded)."""
    h = read_header(path)
    tc = h.get("train_config", {})
    return {
        "path": path, "name": h.get("name"), "input_config": h.get("input_config"), "metrics": h.get("metrics"),
        "trained_on": {k: tc.get(k) for k in ("labels", "msd", "totalseg", "synthetic_weight", "epochs", "steps") if k in tc},
    }

