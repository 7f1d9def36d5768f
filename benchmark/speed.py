"""Speed: click-to-mask latency and batched throughput, ``python -m benchmark speed``.

For each device (CPU; CUDA when present) × dtype (fp32 / bf16) × memory format × runtime
(``torch``, or ``onnx``: the forward pass in ONNX Runtime, fp32 on the CPU only):

- **latency**: one click at a time on one 512² slice through a ``Session``, as a person clicks
  (the library's click loop, ``iunet.evaluation``, with the ``ritm`` robot and batch size 1; a
  fresh session every 20 clicks): the session's click-to-probability time, p50 / p95 in ms;
- **first click**: a slice's first click with ``ZoomOut`` (the app's and ``iunet-zoomout``'s),
  which predicts it a second time at the full view with its own mask as the previous mask
  (``refine``): a fresh ``Session`` per click, never zoomed out, p50 / p95 in ms;
- **first click, zoomed out**: a large structure's first click, which also predicts the slice
  shrunk: the same, the zoom-out forced (``min_area_fraction=0``), p50 / p95 in ms;
- an automatic U-Net (no clicks) has no session: its latency is one ``Predictor.predict`` per
  slice, no zoomed-out first click, and its benchmark loop is ``predict_batch`` per slice (as the
  run's ``unet-auto``);
- **throughput**: ``Predictor.predict_batch`` over B slices (B = 1, 8, 32): ms per slice;
- **forward**: the bare network on a ready (B, C, G, G) tensor: ms per slice, the floor;
- **benchmark**: the benchmark's own loop (``iunet.evaluation.click_step``: robot +
  ``step_sessions`` + Dice, as in ``run``) per click at the largest B, and its ratio to the bare
  forward (the target is ≤ 1.2×).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from iunet.clicks import Click
from iunet.data import choose_target, render_ct, synthetic_labels
from iunet.evaluation import Track, click_step, run_clicks
from iunet.inference import RUNTIMES, Predictor, Session, ZoomOut
from iunet.robot import deepest_point

from . import plain_help
from .download import int_at_least
from .runner import default_weights

SESSION_RESET_CLICKS = 20
DEVICES = ("auto", "cpu", "cuda")


def device_argument(text: str) -> str:
    """An argparse ``type`` for a device: auto, cpu, cuda or cuda:N (what
    ``iunet.inference.resolve_device`` takes); anything else is refused in one line. Whether a
    CUDA GPU is there is checked when the device is used."""
    t = text.strip().lower()
    if t == "auto":
        return t
    try:
        dev = torch.device(t)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in DEVICES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: give {', '.join(DEVICES)} or cuda:N (e.g. cuda:1)")
    if dev.type == "cuda" and dev.index is not None and torch.cuda.is_available() and dev.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: there is no GPU {dev.index} here ({torch.cuda.device_count()} found, cuda:0 …)")
    return t


def timing_slice(size_px: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A rendered (Y, X) HU slice and its bool target, for timing (content barely matters)."""
    rng = np.random.default_rng(seed)
    sl = synthetic_labels(size_px, rng)
    gt = choose_target(sl, rng)
    return render_ct(sl, rng), gt


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latency_ms(predictor: Predictor, hu: np.ndarray, gt: np.ndarray, n_clicks: int, warmup: int = 3) -> np.ndarray:
    """Milliseconds of ``n_clicks`` single clicks (robot time excluded), after ``warmup`` untimed ones.

    The library's click loop with the ``ritm`` robot, batch size 1, a fresh ``Session`` every
    ``SESSION_RESET_CLICKS`` clicks; a click's time is the session's ``last_latency_ms`` (its
    batched step: click maps, forward pass, resize back). ``hu``, ``gt``: (Y, X).
    """
    if not predictor.interactive:  # an automatic U-Net takes no clicks (and no Session): one prediction per slice
        times = []
        for _ in range(warmup + n_clicks):
            t0 = time.perf_counter()
            predictor.predict(hu)
            _sync(predictor.device)
            times.append(1000.0 * (time.perf_counter() - t0))
        return np.array(times[warmup:])
    times: list[float] = []
    while len(times) < warmup + n_clicks:
        t = Track(gt, "ritm", np.random.default_rng(0), Session(predictor, hu))
        run_clicks([t], min(SESSION_RESET_CLICKS, warmup + n_clicks - len(times)), batch_size=1)
        got = [r.ms for r in t.records if r.clicked]
        if not got:
            raise ValueError("the robot found nothing to correct on the timing slice (its target is empty?)")
        times += got
    return np.array(times[warmup : warmup + n_clicks])


def first_click_ms(predictor: Predictor, hu: np.ndarray, gt: np.ndarray, n_clicks: int, warmup: int = 3,
                   zoomed: bool = True) -> np.ndarray:
    """Milliseconds of ``n_clicks`` first clicks (at the target's deepest point, each in a fresh
    ``Session`` whose slice was prepared beforehand, as the app does on upload) with ``ZoomOut``'s
    passes: the full view and its refinement, and with ``zoomed`` the zoomed-out second
    prediction forced (what a large structure's first click costs; else never). After
    ``warmup`` untimed ones. ``hu``, ``gt``: (Y, X)."""
    y, x = deepest_point(gt)
    # always (or never) the zoom-out; never the centre zoom-in, the zoom-in or the view around fat
    zoom_out = ZoomOut(min_area_fraction=0.0 if zoomed else 1.0, centre_radius_px=0.0, zoom_in_fraction=0.0, fat_growth=0.0)
    times = []
    for _ in range(warmup + n_clicks):
        s = Session(predictor, hu, zoom_out=zoom_out)
        s.add_click(y, x, True)
        times.append(float(s.last_latency_ms))
    return np.array(times[warmup:])


def batch_ms(predictor: Predictor, hu: np.ndarray, gt: np.ndarray, batch: int, repeats: int) -> tuple[float, float]:
    """(predict_batch, bare forward) milliseconds per slice at batch size ``batch`` (best of ``repeats``)."""
    ys, xs = np.nonzero(gt)
    clicks = [[Click(int(ys[i]), int(xs[i]), True)] for i in np.linspace(0, len(ys) - 1, batch).astype(int)]
    best_pb, best_fw = np.inf, np.inf
    g, c = predictor.grid_px, predictor.config.in_channels
    x = torch.rand(batch, c, g, g, device=predictor.device)
    for r in range(repeats + 1):  # the first round warms up
        t0 = time.perf_counter()
        predictor.predict_batch([hu] * batch, clicks)
        pb = time.perf_counter() - t0
        _sync(predictor.device)
        t0 = time.perf_counter()
        predictor.forward_logits(x)
        _sync(predictor.device)
        fw = time.perf_counter() - t0
        if r:
            best_pb, best_fw = min(best_pb, pb), min(best_fw, fw)
    return 1000.0 * best_pb / batch, 1000.0 * best_fw / batch


def benchmark_click_ms(predictor: Predictor, hu: np.ndarray, gt: np.ndarray, batch: int, steps: int = 5) -> float:
    """Milliseconds per click of the benchmark's own loop (``click_step``: robot + ``step_sessions``
    + Dice) with ``batch`` slices in flight; the fastest of ``steps`` ritm steps, like the forward.
    An automatic U-Net's loop (the run's ``unet-auto``) is one ``predict_batch`` over the slices."""
    if not predictor.interactive:
        best = np.inf
        for k in range(steps + 1):  # the first round warms up
            t0 = time.perf_counter()
            predictor.predict_batch([hu] * batch, [[] for _ in range(batch)])
            _sync(predictor.device)
            if k:
                best = min(best, (time.perf_counter() - t0) / batch)
        return 1000.0 * best
    tracks = [Track(gt, "ritm", np.random.default_rng(z), Session(predictor, hu)) for z in range(batch)]
    best = np.inf
    for k in range(1, steps + 2):  # the first step warms up
        before = sum(t.n_clicks for t in tracks)
        t0 = time.perf_counter()
        click_step(tracks, k, batch)
        dt = (time.perf_counter() - t0) / max(sum(t.n_clicks for t in tracks) - before, 1)
        if k > 1:
            best = min(best, dt)
    return 1000.0 * best


def measure(weights: str, device: str, dtype: str, channels_last: bool, clicks: int, batch_sizes: list[int], repeats: int,
            runtime: str = "torch") -> dict:
    predictor = Predictor(weights, device=device, dtype=dtype, channels_last=channels_last, runtime=runtime)
    hu, gt = timing_slice()
    lat = latency_ms(predictor, hu, gt, clicks)
    rec = {
        "device": predictor.describe_device(), "dtype": dtype, "channels_last": channels_last, "runtime": runtime, "grid_px": predictor.grid_px,
        "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p95_ms": float(np.percentile(lat, 95)), "batches": {},
    }
    if predictor.interactive:
        for key, zoomed in (("first", False), ("zoomed_first", True)):
            first = first_click_ms(predictor, hu, gt, max(clicks // 2, 5), zoomed=zoomed)
            rec[f"{key}_p50_ms"], rec[f"{key}_p95_ms"] = float(np.percentile(first, 50)), float(np.percentile(first, 95))
    for b in batch_sizes:
        pb, fw = batch_ms(predictor, hu, gt, b, repeats)
        rec["batches"][b] = {"predict_batch_ms_per_slice": pb, "forward_ms_per_slice": fw, "slices_per_s": 1000.0 / pb}
    b = max(batch_sizes)
    bench = benchmark_click_ms(predictor, hu, gt, b)
    rec["benchmark_ms_per_click"] = bench
    rec["benchmark_batch"] = b
    rec["benchmark_vs_forward"] = bench / rec["batches"][b]["forward_ms_per_slice"]
    return rec


def markdown(records: list[dict]) -> str:
    lines = ["| device | runtime | dtype | channels_last | click p50 / p95 (ms) | first click p50 / p95 (ms) | first click zoomed out p50 / p95 (ms) | "
             + " | ".join(f"B={b} ms/slice (fwd)" for b in records[0]["batches"]) + " | benchmark ms/click (B) | vs forward |"]
    lines.append("|---|---|---|---|---:|---:|---:|" + "---:|" * len(records[0]["batches"]) + "---:|---:|")
    for r in records:
        cells = [f"{v['predict_batch_ms_per_slice']:.1f} ({v['forward_ms_per_slice']:.1f})" for v in r["batches"].values()]
        first, zoomed = (f"{r[k + '_p50_ms']:.1f} / {r[k + '_p95_ms']:.1f}" if k + "_p50_ms" in r else "–" for k in ("first", "zoomed_first"))
        lines.append(
            f"| {r['device']} | {r.get('runtime', 'torch')} | {r['dtype']} | {'on' if r['channels_last'] else 'off'} | {r['latency_p50_ms']:.1f} / {r['latency_p95_ms']:.1f} | {first} | {zoomed} | "
            + " | ".join(cells) + f" | {r['benchmark_ms_per_click']:.1f} ({r['benchmark_batch']}) | {r['benchmark_vs_forward']:.2f}× |"
        )
    return "\n".join(lines)


def add_parser(sub) -> None:
    p = sub.add_parser("speed", help="click latency and batched throughput", description=plain_help(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=default_weights("iunet_spleen.safetensors", "iunet_agnostic.safetensors"))
    p.add_argument("--devices", nargs="+", type=device_argument, default=None,
                   help="auto, cpu, cuda or cuda:N (default: cpu, and cuda when present)")
    p.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32"])
    p.add_argument("--channels-last", nargs="+", choices=["off", "on"], default=["off"], help="torch's memory format (ONNX Runtime picks its own)")
    p.add_argument("--runtimes", nargs="+", choices=list(RUNTIMES), default=["torch"],
                   help="what runs the forward pass: torch, onnx (ONNX Runtime; fp32 on the CPU only, other combinations are skipped)")
    p.add_argument("--clicks", type=int_at_least(1), default=50, help="clicks timed for the latency percentiles, >= 1 (default 50)")
    p.add_argument("--batch-sizes", type=int_at_least(1), nargs="+", default=[1, 8, 32], help="slices per forward pass, each >= 1 (default 1 8 32)")
    p.add_argument("--repeats", type=int_at_least(1), default=3, help="timed rounds per batch size, the best kept, >= 1 (default 3)")
    p.add_argument("--threads", type=int_at_least(1), default=None, help="torch CPU threads, >= 1 (default: torch's choice)")
    p.add_argument("--out", help="also write speed.json and speed.md here")
    p.set_defaults(func=_main)


def _main(a: argparse.Namespace) -> None:
    if not a.weights:
        raise SystemExit("no weights: pass --weights (weights/iunet_*.safetensors are not there yet)")
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    devices = a.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        raise SystemExit("error: --devices cuda was asked for but no CUDA GPU is available here; use --devices cpu")
    records = []
    for dev in devices:
        for dt in a.dtypes:
            for rt in a.runtimes:
                if rt == "onnx" and (dev != "cpu" or dt != "fp32"):
                    continue  # ONNX Runtime here runs fp32 on the CPU only
                for cl in a.channels_last if rt == "torch" else ["off"]:
                    rec = measure(a.weights, dev, dt, cl == "on", a.clicks, a.batch_sizes, a.repeats, rt)
                    records.append(rec)
                    print(json.dumps(rec), flush=True)
    if not records:
        raise SystemExit("nothing to measure: the onnx runtime runs fp32 on the CPU only")
    md = markdown(records)
    print(md)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.json").write_text(json.dumps({"weights": a.weights, "records": records}, indent=2))
        (out / "speed.md").write_text(md + "\n")
