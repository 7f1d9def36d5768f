"""Checkpoints and the shared predictors: discovery, loading once, precision, ZeroGPU tasks.

:func:`configure` is the one place that decides the device and the numeric precision and loads
every interactive checkpoint of the weights folder; :func:`get_predictor` returns the shared,
read-only :class:`iunet.inference.Predictor` of a checkpoint (many users, one model).

Precision: with ``precision="auto"`` the model runs in bfloat16 with channels-last memory only on
a CPU with native bf16 arithmetic (AVX512-BF16 or AMX, read from ``/proc/cpuinfo``), where it is
about twice as fast as fp32 for the same Dice (see docs/app.md); on other CPUs in fp32 in ONNX
Runtime (the same probabilities up to float rounding, faster than torch there; fp32 with
channels-last memory in torch where onnxruntime is not installed), on GPUs in fp32.

On a Hugging Face ZeroGPU Space every forward pass runs in :func:`infer_prepared`, wrapped in
``spaces.GPU``, which runs it in a GPU worker process: it takes and returns arrays only
(arguments and results are pickled, so it must not mutate the caller's objects).
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from iunet.clicks import Click
from iunet.inference import Predictor, cpu_has_native_bf16, onnx_available
from iunet.io.volume import without_paths
from iunet.model import read_header

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint file in the weights folder and the name its header gives it."""

    path: str
    name: str
    interactive: bool = True

    @property
    def file_name(self) -> str:
        """What the model menu sends: the file name (server paths stay on the server)."""
        return Path(self.path).name

    @property
    def label(self) -> str:
        return f"{self.name} ({Path(self.path).name})" if self.name else Path(self.path).name


def find_checkpoints(weights_dir: str | Path) -> tuple[list[CheckpointInfo], list[str]]:
    """The interactive ``*.safetensors`` checkpoints in ``weights_dir``: models with the
    previous-mask channel first (only they know where a structure ends when a mask is carried
    through a volume, so they are the better default for the volume workflow), then by file name.

    Returns (checkpoints, problems): files that are not iunet checkpoints (e.g. optimiser
    state) and automatic models that take no clicks are left out and described in
    ``problems``, one line each.
    """
    found, problems = [], []
    propagates: dict[str, bool] = {}
    folder = Path(weights_dir)
    for p in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            header = read_header(p)
        except (ValueError, OSError) as e:
            problems.append(f"{p.name}: {without_paths(str(e))}")
            continue
        interactive = bool((header.get("model_config") or {}).get("interactive", True))
        name = str(header.get("name") or "")
        if not interactive:
            problems.append(f"{p.name}: an automatic model (it takes no clicks), not offered for clicking")
            continue
        found.append(CheckpointInfo(str(p.resolve()), name, interactive))
        propagates[found[-1].path] = bool((header.get("model_config") or {}).get("use_prev_mask", False))
    found.sort(key=lambda c: not propagates[c.path])  # stable: file-name order within each group
    return found, problems


# --------------------------------------------------------------------------- precision

def choose_precision(device_type: str, requested: str = "auto", flags: set[str] | None = None,
                     onnx: bool | None = None) -> tuple[str, bool, str, str]:
    """(dtype "fp32"/"bf16", channels_last, reason, runtime "torch"/"onnx") for a device type
    ("cpu"/"cuda").

    ``requested`` "fp32" or "bf16" is obeyed (in torch); "auto" picks bf16 + channels-last on a
    CPU with native bf16, on other CPUs fp32 in ONNX Runtime where it is installed (``onnx``;
    None: look) and else fp32 + channels-last (channels-last alone makes an fp32 click 10-30 %
    faster; ONNX Runtime more; README "Speed"), and plain fp32 on GPUs (fast enough for one slice).
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "fp32":
        return "fp32", False, "fp32 (asked for)", "torch"
    if requested == "bf16":
        return "bf16", True, "bf16 + channels-last (asked for)", "torch"
    if device_type == "cpu" and cpu_has_native_bf16(flags):
        return "bf16", True, "bf16 + channels-last: this CPU has native bf16", "torch"
    if device_type == "cpu" and (onnx_available() if onnx is None else onnx):
        return "fp32", False, "fp32 in ONNX Runtime: this CPU has no native bf16", "onnx"
    if device_type == "cpu":
        return "fp32", True, "fp32 + channels-last: this CPU has no native bf16 (and onnxruntime is not installed)", "torch"
    return "fp32", False, "fp32", "torch"


# --------------------------------------------------------------------------- shared predictors

class PredictorCache:
    """One shared :class:`Predictor` per checkpoint path, loaded on first use (thread-safe).

    The device and precision are set with :meth:`configure` (which empties the cache when they
    change); every predictor in the cache uses them.
    """

    def __init__(self) -> None:
        self._device = "auto"
        self._precision = "auto"
        self._predictors: dict[str, Predictor] = {}
        self._reasons: dict[str, str] = {}
        self._lock = threading.Lock()

    def configure(self, device: str = "auto", precision: str = "auto") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        with self._lock:
            if (device, precision) != (self._device, self._precision):
                self._predictors.clear()
                self._reasons.clear()
            self._device, self._precision = device, precision

    def get(self, path: str) -> Predictor:
        with self._lock:
            if path not in self._predictors:
                probe = Predictor(path, device=self._device)
                dtype, channels_last, reason, runtime = choose_precision(probe.device.type, self._precision)
                try:
                    self._predictors[path] = (
                        probe if dtype == "fp32" and not channels_last and runtime == "torch"
                        else Predictor(probe.checkpoint, device=probe.device, dtype=dtype, channels_last=channels_last, runtime=runtime)
                    )
                except Exception as e:  # noqa: BLE001 - an export ONNX Runtime cannot load: torch serves
                    if runtime != "onnx":
                        raise
                    dtype, channels_last, _, _ = choose_precision(probe.device.type, self._precision, onnx=False)
                    self._predictors[path] = Predictor(probe.checkpoint, device=probe.device, dtype=dtype, channels_last=channels_last)
                    reason = f"{dtype}{' + channels-last' if channels_last else ''}: ONNX Runtime failed ({type(e).__name__}: {e})"
                self._reasons[path] = reason
            return self._predictors[path]

    def reason(self, path: str) -> str:
        """Why the checkpoint runs in its precision (after :meth:`get`)."""
        return self._reasons.get(path, "")


_CACHE = PredictorCache()


def configure_predictors(device: str = "auto", precision: str = "auto") -> None:
    """Set the device ("auto", "cpu", "cuda") and precision ("auto", "fp32", "bf16") of every
    shared predictor; predictors loaded under other settings are dropped."""
    _CACHE.configure(device, precision)


def get_predictor(path: str) -> Predictor:
    """The shared predictor of the checkpoint at ``path`` (loaded on first use)."""
    return _CACHE.get(path)


def precision_reason(path: str) -> str:
    return _CACHE.reason(path)


def describe_device(predictor: Predictor) -> str:
    """``GPU (name)`` or ``CPU (n threads)`` and the precision; never fails (ZeroGPU's main
    process has no real GPU)."""
    try:
        where = predictor.describe_device()
    except Exception:  # noqa: BLE001 - only a label; the device itself works
        where = f"GPU ({predictor.device})" if predictor.device.type == "cuda" else "CPU"
    return f"{where}, {predictor.dtype}{' + channels-last' if predictor.channels_last else ''}"


@dataclass(frozen=True)
class ModelSet:
    """The checkpoints offered in the model menu, and what was skipped (one line each)."""

    weights_dir: str = ""
    checkpoints: tuple[CheckpointInfo, ...] = ()
    problems: tuple[str, ...] = field(default_factory=tuple)


def configure(weights_dir: str | Path, device: str = "auto", precision: str = "auto") -> ModelSet:
    """Find the interactive checkpoints in ``weights_dir``, set device and precision, and load
    each checkpoint once (shared by all users). Checkpoints that fail to load are skipped."""
    found, problems = find_checkpoints(weights_dir)
    configure_predictors(device, precision)
    usable = []
    for info in found:
        try:
            get_predictor(info.path)
            usable.append(info)
        except Exception as e:  # noqa: BLE001 - a broken file must not stop the app
            problems.append(f"{Path(info.path).name}: could not be loaded ({e})")
    return ModelSet(str(weights_dir), tuple(usable), tuple(problems))


# --------------------------------------------------------------------------- inference (GPU tasks)

@functools.lru_cache(maxsize=1)
def on_zerogpu() -> bool:
    """True on a Hugging Face ZeroGPU Space (the ``spaces`` package is importable)."""
    try:
        import spaces  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def gpu_task(duration_s: int) -> Callable:
    """``spaces.GPU(duration=...)`` on a ZeroGPU Space (package ``spaces`` importable), else nothing."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration_s)


@gpu_task(duration_s=30)
def infer_prepared(
    checkpoint: str,
    images: Sequence,
    shapes_yx: Sequence[tuple[int, int]],
    clicks: Sequence[Sequence[Click]],
    prev_masks: Sequence[np.ndarray | None] | None,
    boxes: Sequence | None = None,
    prev_images: Sequence | None = None,
) -> list[np.ndarray]:
    """``Predictor.predict_prepared`` of the shared predictor, for the ZeroGPU worker process:
    prepared slices (1, G, G) as CPU tensors in, float32 probabilities (Y, X) out."""
    predictor = get_predictor(checkpoint)
    pis = None if prev_images is None else [None if t is None else t.to(predictor.device) for t in prev_images]
    return predictor.predict_prepared([t.to(predictor.device) for t in images], shapes_yx, clicks, prev_masks, boxes, pis)
