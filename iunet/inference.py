"""Inference: a shared, stateless ``Predictor`` and one user's ``Session``.

``Predictor`` loads a checkpoint once, picks the device (CUDA when available, else CPU, or
what the caller says), resizes any slice to the model's grid and the prediction back, and runs
one slice or a batch of slices in a single forward pass. ``Session`` holds one user's slice,
clicks and predictions (with undo); many sessions share one predictor and never share state.
The benchmark's robot clicks through the same ``Session`` as the app's users.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .clicks import Click, ClickSize, encode_clicks
from .model import Checkpoint, load_checkpoint
from .windowing import apply_window


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu")
    return dev


class Predictor:
    """A loaded model that maps (slice in HU, clicks) to a foreground probability map.

    ``dtype``: "fp32" or "bf16" (autocast); ``channels_last`` switches the memory format.
    """

    def __init__(
        self,
        checkpoint: str | Path | Checkpoint,
        device: str | torch.device = "auto",
        dtype: str = "fp32",
        channels_last: bool = False,
    ):
        self.device = resolve_device(device)
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, self.device)
        self.checkpoint = ckpt
        self.model = ckpt.model.to(self.device).eval()
        self.config = ckpt.model_config
        self.inputs = ckpt.input_config
        if dtype not in ("fp32", "bf16"):
            raise ValueError(f"dtype must be 'fp32' or 'bf16', got {dtype!r}")
        self.dtype = dtype
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @property
    def grid_px(self) -> int:
        return self.inputs.grid_px

    @property
    def interactive(self) -> bool:
        return self.config.interactive

    def describe_device(self) -> str:
        if self.device.type == "cuda":
            return f"GPU ({torch.cuda.get_device_name(self.device)})"
        n = torch.get_num_threads()
        return f"CPU ({n} thread{'s' if n != 1 else ''})"

    def prepare(self, image_hu: np.ndarray) -> torch.Tensor:
        """Window a (Y, X) HU slice with the model's window and resize it to the grid: (1, G, G) on the device."""
        img = np.asarray(image_hu, dtype=np.float32)
        if img.ndim != 2:
            raise ValueError(f"expected one 2D slice (Y, X), got shape {img.shape}")
        t = torch.from_numpy(apply_window(img, self.inputs.level_hu, self.inputs.width_hu)).to(self.device)
        g = self.grid_px
        t = F.interpolate(t[None, None], size=(g, g), mode="bilinear", align_corners=False, antialias=True)
        return t[0]

    def _guidance(self, clicks: Sequence[Click], shape_yx: tuple[int, int]) -> np.ndarray:
        g = self.grid_px
        sy, sx = g / shape_yx[0], g / shape_yx[1]
        return encode_clicks([c.scaled(sy, sx) for c in clicks], (g, g), self.inputs.click_encoding)

    def _mask_to_grid(self, mask: np.ndarray | None, shape_yx: tuple[int, int]) -> torch.Tensor:
        g = self.grid_px
        if mask is None:
            return torch.zeros((1, g, g), device=self.device)
        t = torch.from_numpy(np.asarray(mask, dtype=np.float32)).to(self.device)
        return F.interpolate(t[None, None], size=(g, g), mode="bilinear", align_corners=False)[0]

    @torch.inference_mode()
    def predict_prepared(
        self,
        images: Sequence[torch.Tensor],
        shapes_yx: Sequence[tuple[int, int]],
        clicks: Sequence[Sequence[Click]],
        prev_masks: Sequence[np.ndarray | None] | None = None,
    ) -> list[np.ndarray]:
        """One forward pass over a batch of prepared slices. Returns float32 probabilities (Y, X)
        at each slice's own size."""
        if prev_masks is None:
            prev_masks = [None] * len(images)
        chans = []
        for img, shape, cl, prev in zip(images, shapes_yx, clicks, prev_masks):
            parts = [img]
            if self.config.interactive:
                parts.append(torch.from_numpy(self._guidance(cl, shape)).to(self.device))
                if self.config.use_prev_mask:
                    parts.append(self._mask_to_grid(prev, shape))
            chans.append(torch.cat(parts, 0))
        x = torch.stack(chans, 0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bf16"):
            logits = self.model(x).float()
        out = []
        for i, shape in enumerate(shapes_yx):
            up = F.interpolate(logits[i : i + 1], size=tuple(shape), mode="bilinear", align_corners=False)
            out.append(torch.sigmoid(up)[0, 0].cpu().numpy())
        return out

    def predict(self, image_hu: np.ndarray, clicks: Sequence[Click] = (), prev_mask: np.ndarray | None = None) -> np.ndarray:
        """Probability map (Y, X) float32 for one HU slice and its clicks."""
        img = np.asarray(image_hu)
        return self.predict_prepared([self.prepare(img)], [img.shape], [list(clicks)], [prev_mask])[0]

    def predict_batch(
        self,
        images_hu: Sequence[np.ndarray],
        clicks: Sequence[Sequence[Click]],
        prev_masks: Sequence[np.ndarray | None] | None = None,
    ) -> list[np.ndarray]:
        """Probability maps for several slices (any sizes) in one forward pass."""
        return self.predict_prepared(
            [self.prepare(im) for im in images_hu], [np.asarray(im).shape for im in images_hu], clicks, prev_masks
        )


@dataclass(frozen=True)
class _State:
    clicks: tuple[Click, ...]
    probability: np.ndarray | None


class Session:
    """One user's interactive segmentation of one slice.

    ``image_hu``: (Y, X) float HU. Clicks are in that slice's pixels. Each click is drawn with
    the radius ``click_size.radius_for(area of the current mask)`` (dynamic α·area or fixed).
    """

    def __init__(
        self,
        predictor: Predictor,
        image_hu: np.ndarray,
        click_size: ClickSize | None = None,
        threshold: float = 0.5,
        initial_mask: np.ndarray | None = None,
    ):
        """``initial_mask`` (Y, X), optional: a mask to start from (e.g. the neighbouring slice's,
        when propagating); it sets the first click's dynamic size and the previous-mask channel."""
        img = np.asarray(image_hu, dtype=np.float32)
        if img.ndim != 2 or min(img.shape) < 2:
            raise ValueError(f"a session needs one 2D slice, got shape {img.shape}")
        self.predictor = predictor
        self.image_hu = img
        self.click_size = click_size or ClickSize(predictor.inputs.default_radius_px, predictor.inputs.alpha)
        self.threshold = threshold
        self._grid = predictor.prepare(img)
        if initial_mask is not None and np.asarray(initial_mask).shape != img.shape:
            raise ValueError(f"initial mask {np.asarray(initial_mask).shape} does not match the slice {img.shape}")
        start = None if initial_mask is None else np.asarray(initial_mask, dtype=np.float32)
        self._history: list[_State] = [_State((), start)]
        self.last_latency_ms: float | None = None

    # -- state -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self.image_hu.shape  # type: ignore[return-value]

    @property
    def clicks(self) -> tuple[Click, ...]:
        return self._history[-1].clicks

    @property
    def probability(self) -> np.ndarray | None:
        return self._history[-1].probability

    @property
    def mask(self) -> np.ndarray:
        """Current binary mask (Y, X) bool; all False before the first click."""
        p = self.probability
        return np.zeros(self.shape, bool) if p is None else p >= self.threshold

    @property
    def mask_area_px(self) -> int:
        return int(self.mask.sum())

    @property
    def next_radius_px(self) -> float:
        """Radius the next click will get (dynamic size follows the current mask's area)."""
        return self.click_size.radius_for(self.mask_area_px)

    # -- actions -----------------------------------------------------------------------
    def make_click(self, y: int, x: int, positive: bool) -> Click:
        """The click a user at (y, x) makes now, with its radius; raises ValueError outside the image."""
        h, w = self.shape
        if not (0 <= int(y) < h and 0 <= int(x) < w):
            raise ValueError(f"click at (y={y}, x={x}) is outside the image ({h}×{w} pixels)")
        return Click(int(y), int(x), bool(positive), self.next_radius_px)

    def add_prediction(self, click: Click, probability: np.ndarray, latency_ms: float) -> None:
        """Record a click whose prediction was computed elsewhere (e.g. in a ZeroGPU worker
        process, from ``make_click`` and ``Predictor.predict``). ``probability``: (Y, X) float."""
        probability = np.asarray(probability, dtype=np.float32)
        if probability.shape != self.shape:
            raise ValueError(f"prediction {probability.shape} does not match the slice {self.shape}")
        self._history.append(_State(self.clicks + (click,), probability))
        self.last_latency_ms = latency_ms

    def add_click(self, y: int, x: int, positive: bool = True) -> np.ndarray:
        """Add a click, predict, and return the new mask (Y, X) bool."""
        step_sessions([self], [(y, x, positive)])
        return self.mask

    def undo(self) -> bool:
        """Remove the last click, restoring the previous mask exactly. False when there is nothing to undo."""
        if len(self._history) == 1:
            return False
        self._history.pop()
        return True

    def reset(self) -> None:
        self._history = [self._history[0]]


def step_sessions(sessions: Sequence[Session], points: Sequence[tuple[int, int, bool]]) -> None:
    """Add one click to each session with a single batched forward pass over all of them.

    All sessions must share one predictor. ``points[i] = (y, x, positive)`` for ``sessions[i]``.
    """
    if not sessions:
        return
    predictor = sessions[0].predictor
    if any(s.predictor is not predictor for s in sessions):
        raise ValueError("step_sessions needs sessions that share one Predictor")
    new = [s.make_click(*p) for s, p in zip(sessions, points)]
    t0 = time.perf_counter()
    probs = predictor.predict_prepared(
        [s._grid for s in sessions],
        [s.shape for s in sessions],
        [s.clicks + (c,) for s, c in zip(sessions, new)],
        [s.probability for s in sessions],
    )
    ms = (time.perf_counter() - t0) * 1000.0 / len(sessions)
    for s, c, p in zip(sessions, new, probs):
        s.add_prediction(c, p, ms)


def propagate(
    predictor: Predictor,
    volume_hu: np.ndarray,
    start_index: int,
    start_mask: np.ndarray,
    click_size: ClickSize | None = None,
    min_area_px: int = 10,
    max_slices: int | None = None,
) -> np.ndarray:
    """Carry a mask from slice ``start_index`` through its neighbours, both directions.

    Each next slice is seeded from the previous slice's mask: a positive click at the deepest
    point of that mask (and the previous mask channel when the model has one). Propagation in a
    direction stops when the mask falls under ``min_area_px`` or after ``max_slices``.
    ``volume_hu``: (Z, Y, X); returns a (Z, Y, X) bool volume.
    """
    vol = np.asarray(volume_hu, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"propagation needs a volume (Z, Y, X), got shape {vol.shape}")
    if not 0 <= start_index < vol.shape[0]:
        raise ValueError(f"slice {start_index} is outside the volume of {vol.shape[0]} slices")
    out = np.zeros(vol.shape, bool)
    out[start_index] = np.asarray(start_mask, bool)
    cs = click_size or ClickSize(predictor.inputs.default_radius_px, predictor.inputs.alpha)
    for step in (1, -1):
        prev = out[start_index]
        z, n = start_index + step, 0
        while 0 <= z < vol.shape[0] and prev.sum() >= min_area_px and (max_slices is None or n < max_slices):
            depth = ndimage.distance_transform_edt(np.pad(prev, 1))[1:-1, 1:-1]
            y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
            sess = Session(predictor, vol[z], cs, initial_mask=prev)
            m = sess.add_click(int(y), int(x), True) & ndimage.binary_dilation(prev, iterations=max(3, int(depth.max())))
            if m.sum() < min_area_px:
                break
            out[z] = m
            prev, z, n = m, z + step, n + 1
    return out
