"""Inference: a shared, stateless ``Predictor`` and one user's ``Session``.

``Predictor`` loads a checkpoint once, picks the device (CUDA when available, else CPU, or
what the caller says), resizes any slice to the model's grid and the prediction back, and runs
one slice or a batch of slices in a single forward pass. ``Session`` holds one user's slice,
clicks and predictions (with undo); many sessions share one predictor and never share state.
The benchmark's robot clicks through the same ``Session`` as the app's users.
"""
from __future__ import annotations

import io
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.morphology import convex_hull_image

from .clicks import Click, ClickSize, agreeing_radius_px, encode_clicks, geodesic_cost, geodesic_distance
from .io.masks import binary_mask
from .metrics import dice
from .model import Checkpoint, load_checkpoint
from .robot import deepest_point
from .windowing import HU_AIR, apply_window

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1): the part of a prepared grid that a slice fills

RUNTIMES = ("torch", "onnx")  # what runs the network's forward pass (Predictor(runtime=...))
# ONNX Runtime's worker threads sleep between calls instead of spinning: a click's own work
# (click maps, geodesic distances, resizing) runs between forward passes on the same cores
ONNX_SPIN = False


def onnx_available() -> bool:
    """Whether ``Predictor(runtime="onnx")`` can run here (onnxruntime and onnx installed)."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export writes through it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def onnx_session(model: torch.nn.Module, in_channels: int, threads: int | None = None):
    """The network exported to ONNX (in memory, fp32, any batch size and grid size) and loaded
    into an ONNX Runtime CPU session with ``threads`` intra-op threads (default: torch's
    number). Same logits as the torch forward pass up to float rounding (about 1e-5); on an
    AVX-512 CPU without native bf16, 1.0–1.25 × faster per click and 1.2–1.5 × per slice in
    batches than torch's fp32 with channels-last (README, "Speed")."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError("runtime='onnx' needs onnxruntime and onnx: pip install onnxruntime onnx") from e
    buf = io.BytesIO()
    x = torch.zeros(1, in_channels, 64, 64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices
        torch.onnx.export(
            model.float().eval(), (x,), buf, dynamo=False, input_names=["x"], output_names=["logits"], opset_version=17,
            dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}},
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if ONNX_SPIN else "0")
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])


def cpu_flags() -> set[str]:
    """The CPU feature flags of this (Linux) machine; empty where /proc/cpuinfo is unavailable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu")
    return dev


class Predictor:
    """A loaded model that maps (slice in HU, clicks) to a foreground probability map.

    ``dtype``: "fp32" or "bf16" (autocast); ``channels_last`` switches the memory format.
    ``runtime``: "torch", or "onnx": the forward pass in ONNX Runtime (fp32 on the CPU only; the
    network is exported once, here), the same probabilities up to float rounding and faster on
    CPUs without native bf16; everything else (click maps, resizing) stays the same.
    """

    def __init__(
        self,
        checkpoint: str | Path | Checkpoint,
        device: str | torch.device = "auto",
        dtype: str = "fp32",
        channels_last: bool = False,
        runtime: str = "torch",
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
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if runtime == "onnx" and (self.device.type != "cpu" or dtype != "fp32"):
            raise ValueError(f"runtime 'onnx' runs fp32 on the CPU, not {dtype} on {self.device.type}")
        self.runtime = runtime
        self.channels_last = channels_last and runtime == "torch"  # ONNX Runtime picks its own layout
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._onnx = onnx_session(self.model, self.config.in_channels) if runtime == "onnx" else None
        # geodesic models: per prepared slice (held, so its identity cannot be reused), its cost
        # map and the distances from the last clicks, so a new click costs one Dijkstra run
        self._geo_cache: OrderedDict[int, tuple[torch.Tensor, np.ndarray, dict]] = OrderedDict()
        self._geo_lock = threading.Lock()

    @property
    def grid_px(self) -> int:
        return self.inputs.grid_px

    @property
    def interactive(self) -> bool:
        return self.config.interactive

    def describe_device(self) -> str:
        if self.device.type == "cuda":
            return f"GPU ({torch.cuda.get_device_name(self.device)})"
        n = torch.get_num_threads() if self._onnx is None else self._onnx.get_session_options().intra_op_num_threads
        return f"CPU ({n} thread{'s' if n != 1 else ''}{', ONNX Runtime' if self._onnx is not None else ''})"

    def prepare(self, image_hu: np.ndarray) -> torch.Tensor:
        """Window a (Y, X) HU slice with the model's window and resize it to the grid: (1, G, G) on the device."""
        img = np.asarray(image_hu, dtype=np.float32)
        if img.ndim != 2:
            raise ValueError(f"expected one 2D slice (Y, X), got shape {img.shape}")
        t = torch.from_numpy(apply_window(img, self.inputs.level_hu, self.inputs.width_hu)).to(self.device)
        g = self.grid_px
        t = F.interpolate(t[None, None], size=(g, g), mode="bilinear", align_corners=False, antialias=True)
        return t[0]

    def prepare_zoomed_out(self, image: torch.Tensor, factor: float, margin_px: int) -> tuple[torch.Tensor, Box]:
        """A prepared slice (1, G, G) shown ``factor`` times smaller, as a field of view ``factor``
        times wider shows it: the grid shrunk to (G / factor)² in the middle of air, at least
        ``margin_px`` grid pixels of it on each side (more where needed so that the network's
        poolings divide the size). Returns the view (1, H, W) and the box ``(y0, y1, x0, x1)``
        the slice fills in it, for ``predict_prepared(..., boxes=)``. Costs about
        ``((G / factor + 2 · margin) / G)²`` of a full-grid forward pass."""
        if factor <= 0 or margin_px < 0:
            raise ValueError(f"factor must be > 0 and margin_px >= 0, got {factor} and {margin_px}")
        gh, gw = image.shape[-2:]
        h, w = max(1, int(round(gh / factor))), max(1, int(round(gw / factor)))
        stride = 2 ** int(self.config.depth)
        big_h, big_w = (-(-(n + 2 * margin_px) // stride) * stride for n in (h, w))
        y0, x0 = (big_h - h) // 2, (big_w - w) // 2
        air = float(apply_window(np.float32(HU_AIR), self.inputs.level_hu, self.inputs.width_hu))
        view = torch.full((image.shape[0], big_h, big_w), air, dtype=image.dtype, device=image.device)
        view[:, y0 : y0 + h, x0 : x0 + w] = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
        return view, (y0, y0 + h, x0, x0 + w)

    @staticmethod
    def _box(image: torch.Tensor, box: Box | None) -> Box:
        return (0, int(image.shape[-2]), 0, int(image.shape[-1])) if box is None else tuple(int(v) for v in box)  # type: ignore[return-value]

    @staticmethod
    def _to_grid(clicks: Sequence[Click], shape_yx: tuple[int, int], box: Box) -> list[Click]:
        """Clicks in a (Y, X) slice's pixels → the same clicks on a prepared grid, where the slice
        fills ``box`` (y0, y1, x0, x1) of it."""
        y0, y1, x0, x1 = box
        out = []
        for c in clicks:
            k = c.scaled((y1 - y0) / shape_yx[0], (x1 - x0) / shape_yx[1])
            out.append(Click(k.y + y0, k.x + x0, k.positive, k.radius_px))
        return out

    GEO_CACHE_SLICES = 16  # prepared slices whose geodesic distances are kept (LRU): ≤ 16 × 768 KB at 256²

    def _geodesic(self, image: torch.Tensor, grid_clicks: Sequence[Click]) -> torch.Tensor:
        """(2, G, G) geodesic click maps on the prepared (1, G, G) image for clicks on the grid
        (models with ``geodesic``; ``build_inputs`` has checked that the clicks are inside), the
        same maps as ``iunet.clicks.geodesic_maps``; (4, G, G) for models with ``geodesic_soft``
        (the second pair at ``inputs.geodesic_soft_lambda``). Per slice, its cost map per edge
        weight and, per weight and polarity, the distance from the clicks of the last call are
        cached: a call whose clicks include those only adds the new clicks' distance (the
        minimum over clicks is the distance from the nearest), so a click costs one Dijkstra run
        per map pair whatever the number of clicks before it; any other set (after an undo) is
        computed afresh."""
        lams = self.inputs.geodesic_lambdas(self.config.geodesic_soft)
        maps = np.zeros((2 * len(lams), *image.shape[-2:]), np.float32)
        if not grid_clicks:
            return torch.from_numpy(maps).to(self.device)
        with self._geo_lock:  # an entry holds its image, so no other tensor can have its id
            entry = self._geo_cache.get(id(image))
            if entry is not None:
                self._geo_cache.move_to_end(id(image))
            else:
                entry = (image, {}, {})  # the image, cost map per λ, (λ, polarity) → (clicks, distance)
                self._geo_cache[id(image)] = entry
                while len(self._geo_cache) > self.GEO_CACHE_SLICES:
                    self._geo_cache.popitem(last=False)
        _, costs, done = entry
        by_polarity = [(ch, positive, frozenset((c.y, c.x) for c in grid_clicks if c.positive == positive))
                       for ch, positive in ((0, True), (1, False))]
        for i, lam in enumerate(lams):
            with self._geo_lock:
                cost = costs.get(lam)
            if cost is None:
                cost = geodesic_cost(image[0].float().cpu().numpy(), lam, noise_ref=self.inputs.geodesic_noise_ref)
                with self._geo_lock:
                    costs[lam] = cost
            for ch, positive, pts in by_polarity:
                if not pts:
                    continue
                with self._geo_lock:
                    before = done.get((lam, positive))
                if before is not None and before[0] <= pts:
                    new = sorted(pts - before[0])
                    d = before[1] if not new else np.minimum(before[1], geodesic_distance(cost, new))
                else:
                    d = geodesic_distance(cost, sorted(pts))
                with self._geo_lock:
                    done[(lam, positive)] = (pts, d)
                maps[2 * i + ch] = np.exp(-d / self.inputs.geodesic_tau_px)
        return torch.from_numpy(maps).to(self.device)

    def _mask_to_grid(self, mask: np.ndarray | None, grid_yx: tuple[int, int], box: Box) -> torch.Tensor:
        out = torch.zeros((1, *grid_yx), device=self.device)
        if mask is None:
            return out
        y0, y1, x0, x1 = box
        t = torch.from_numpy(np.asarray(mask, dtype=np.float32)).to(self.device)
        # binary on the grid, as the model saw it in training (iunet.data, iunet.train)
        out[:, y0:y1, x0:x1] = (F.interpolate(t[None, None], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[0] >= 0.5).float()
        return out

    @torch.inference_mode()
    def build_inputs(
        self,
        images: Sequence[torch.Tensor],
        shapes_yx: Sequence[tuple[int, int]],
        clicks: Sequence[Sequence[Click]],
        prev_masks: Sequence[np.ndarray | None] | None = None,
        boxes: Sequence[Box | None] | None = None,
        prev_images: Sequence[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """The network's input (B, C, G, G) for prepared slices (1, G, G), each slice's own
        (Y, X), its clicks (in its own pixels) and previous mask (Y, X) or None: the image, the
        click disks, the previous mask and the geodesic maps, as the model was trained.
        ``boxes``: per slice, the part (y0, y1, x0, x1) of its prepared image that the slice
        fills (a zoomed-out view, ``prepare_zoomed_out``); None, the whole of it. All prepared
        images of one call have one size. ``prev_images`` (models with ``prev_image``): per
        slice, the prepared slice (same size and view) that its previous mask was drawn on, a
        neighbour when propagating; None (the default), the slice itself, whose own mask it is.
        Models without that channel ignore them."""
        if prev_masks is None:
            prev_masks = [None] * len(images)
        if boxes is None:
            boxes = [None] * len(images)
        if prev_images is None:
            prev_images = [None] * len(images)
        chans = []
        for img, shape, cl, prev, box, prev_img in zip(images, shapes_yx, clicks, prev_masks, boxes, prev_images):
            parts = [img]
            if self.config.interactive:
                box = self._box(img, box)
                grid_clicks = self._to_grid(cl, shape, box)
                grid_yx = tuple(img.shape[-2:])  # encode_clicks refuses clicks outside the grid
                parts.append(torch.from_numpy(encode_clicks(grid_clicks, grid_yx, self.inputs.click_encoding)).to(self.device))
                if self.config.use_prev_mask:
                    parts.append(self._mask_to_grid(prev, grid_yx, box))
                if self.config.geodesic:
                    parts.append(self._geodesic(img, grid_clicks))
                if self.config.prev_image:
                    if prev_img is not None and tuple(prev_img.shape) != tuple(img.shape):
                        raise ValueError(f"the previous mask's slice {tuple(prev_img.shape)} must be prepared as the slice {tuple(img.shape)}")
                    parts.append(img if prev_img is None else prev_img.to(img.device))
            chans.append(torch.cat(parts, 0))
        return torch.stack(chans, 0)

    @torch.inference_mode()
    def forward_inputs(self, x: torch.Tensor, shapes_yx: Sequence[tuple[int, int]],
                       boxes: Sequence[Box | None] | None = None) -> list[np.ndarray]:
        """One forward pass over inputs from :meth:`build_inputs` (concatenated as they may be).
        Returns float32 probabilities (Y, X) at each slice's own size, from the part ``boxes``
        of the grid that each slice fills (None: all of it)."""
        logits = self.forward_logits(x)
        out = []
        for i, shape in enumerate(shapes_yx):
            y0, y1, x0, x1 = self._box(logits, None if boxes is None else boxes[i])
            up = F.interpolate(logits[i : i + 1, :, y0:y1, x0:x1], size=tuple(shape), mode="bilinear", align_corners=False)
            out.append(torch.sigmoid(up)[0, 0].cpu().numpy())
        return out

    @torch.inference_mode()
    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The bare network: logits (B, 1, H, W) float32 for inputs (B, C, H, W), in the
        predictor's runtime, dtype and memory format."""
        if self._onnx is not None:
            return torch.from_numpy(self._onnx.run(None, {"x": np.ascontiguousarray(x.float().cpu().numpy())})[0])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bf16"):
            return self.model(x).float()

    def predict_prepared(
        self,
        images: Sequence[torch.Tensor],
        shapes_yx: Sequence[tuple[int, int]],
        clicks: Sequence[Sequence[Click]],
        prev_masks: Sequence[np.ndarray | None] | None = None,
        boxes: Sequence[Box | None] | None = None,
        prev_images: Sequence[torch.Tensor | None] | None = None,
    ) -> list[np.ndarray]:
        """One forward pass over a batch of prepared slices (of one size). Returns float32
        probabilities (Y, X) at each slice's own size. ``boxes``, ``prev_images``: as in
        :meth:`build_inputs`."""
        return self.forward_inputs(self.build_inputs(images, shapes_yx, clicks, prev_masks, boxes, prev_images), shapes_yx, boxes)

    def predict(self, image_hu: np.ndarray, clicks: Sequence[Click] = (), prev_mask: np.ndarray | None = None,
                prev_image_hu: np.ndarray | None = None) -> np.ndarray:
        """Probability map (Y, X) float32 for one HU slice and its clicks; ``prev_image_hu``: the
        HU slice (same size) the previous mask was drawn on, for models with ``prev_image``;
        ``prev_mask`` (Y, X) like the slice."""
        if np.ndim(image_hu) != 2:
            raise ValueError(f"expected one 2D slice (Y, X), got shape {np.shape(image_hu)}")
        img = check_hu(image_hu, "the slice")
        _check_prev_mask(prev_mask, img.shape)
        pi = None if prev_image_hu is None else [self._prepare_like(prev_image_hu, img.shape)]
        return self.predict_prepared([self.prepare(img)], [img.shape], [list(clicks)], [prev_mask], None, pi)[0]

    def predict_batch(
        self,
        images_hu: Sequence[np.ndarray],
        clicks: Sequence[Sequence[Click]],
        prev_masks: Sequence[np.ndarray | None] | None = None,
        prev_images_hu: Sequence[np.ndarray | None] | None = None,
    ) -> list[np.ndarray]:
        """Probability maps for several slices (any sizes) in one forward pass; ``prev_images_hu``
        as ``predict``'s ``prev_image_hu``, per slice. ``clicks`` (and ``prev_masks``,
        ``prev_images_hu`` when given): one entry per slice."""
        n = len(images_hu)
        for name, seq in (("clicks", clicks), ("prev_masks", prev_masks), ("prev_images_hu", prev_images_hu)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"predict_batch: {n} slices but {len(seq)} entries in {name} (one per slice)")
        images_hu = [check_hu(im, f"slice {i}") for i, im in enumerate(images_hu)]
        shapes = [np.asarray(im).shape for im in images_hu]
        for pm, sh in zip(prev_masks or [], shapes):
            _check_prev_mask(pm, sh)
        pis = None if prev_images_hu is None else [
            None if p is None else self._prepare_like(p, sh) for p, sh in zip(prev_images_hu, shapes)]
        return self.predict_prepared([self.prepare(im) for im in images_hu], shapes, clicks, prev_masks, None, pis)

    def _prepare_like(self, image_hu: np.ndarray, shape_yx: tuple[int, ...]) -> torch.Tensor:
        if np.shape(image_hu) != tuple(shape_yx):
            raise ValueError(f"the previous mask's slice {np.shape(image_hu)} must have the slice's shape {tuple(shape_yx)}")
        return self.prepare(image_hu)


def _check_prev_mask(prev_mask: np.ndarray | None, shape_yx: tuple[int, ...]) -> None:
    """A previous mask must lie on its slice's pixels (it would otherwise be stretched to fit)."""
    if prev_mask is not None and np.shape(prev_mask) != tuple(shape_yx):
        raise ValueError(f"the previous mask {np.shape(prev_mask)} must have the slice's shape {tuple(shape_yx)}")


@dataclass(frozen=True)
class ZoomIn:
    """RITM's ZoomIn: from click ``skip_clicks + 1`` on, predict on a square crop around the
    current object instead of the whole slice, so that a small structure or a thin vessel fills
    the model's grid (docs/design.md, "Zoom-in"). The crop holds the current mask's box, every
    positive click and the new click, grown by ``expansion``; its side is at least the slice's
    longer side / ``max_zoom`` (the closest zoom the model was trained on, ``--zoom-p``); no
    zoom when it would cover more than ``max_side_fraction`` of the slice anyway. Outside the
    crop the new mask is empty. Only for models trained with zoomed samples: others get worse."""

    skip_clicks: int = 1
    expansion: float = 1.4
    max_zoom: float = 3.0  # iunet.data.ZOOM_MAX
    max_side_fraction: float = 0.85

    def crop(self, mask: np.ndarray, clicks: Sequence[Click], shape_yx: tuple[int, int]) -> tuple[int, int, int] | None:
        """``(y0, x0, side)`` of the crop for a slice of ``shape_yx`` whose current mask (Y, X)
        bool is ``mask`` and whose clicks (the new one last) are ``clicks``; None: no zoom."""
        if len(clicks) <= self.skip_clicks or not mask.any():
            return None
        h, w = shape_yx
        ys, xs = np.nonzero(mask)
        pts = [(c.y, c.x) for c in clicks if c.positive] + [(clicks[-1].y, clicks[-1].x)]
        y_lo, y_hi = min(ys.min(), *(p[0] for p in pts)), max(ys.max(), *(p[0] for p in pts))
        x_lo, x_hi = min(xs.min(), *(p[1] for p in pts)), max(xs.max(), *(p[1] for p in pts))
        side = int(np.ceil(max(y_hi - y_lo + 1, x_hi - x_lo + 1) * self.expansion))
        side = max(side, int(np.ceil(max(h, w) / self.max_zoom)))
        if side > self.max_side_fraction * min(h, w):
            return None
        y0 = int(np.clip(round((y_lo + y_hi) / 2 - side / 2), 0, h - side))
        x0 = int(np.clip(round((x_lo + x_hi) / 2 - side / 2), 0, w - side))
        return y0, x0, side


Crop = tuple[int, int, int]  # (y0, x0, side): a square part of a slice


def crop_inputs(image_hu: np.ndarray, crop: Crop, clicks: Sequence[Click], prev: np.ndarray | None
                ) -> tuple[np.ndarray, tuple[Click, ...], np.ndarray | None]:
    """A slice's inputs on the square ``crop``: the HU (side, side), the clicks in its pixels
    (radii stay in slice pixels; clicks outside it, background clicks far away, are dropped:
    there the mask is empty anyway) and the previous mask's part (None stays None)."""
    y0, x0, side = crop
    inside = tuple(Click(k.y - y0, k.x - x0, k.positive, k.radius_px) for k in clicks
                   if 0 <= k.y - y0 < side and 0 <= k.x - x0 < side)
    return image_hu[y0 : y0 + side, x0 : x0 + side], inside, None if prev is None else prev[y0 : y0 + side, x0 : x0 + side]


def paste_crop(probability: np.ndarray, crop: Crop, shape_yx: tuple[int, int]) -> np.ndarray:
    """A crop's probability (side, side) back into a slice of ``shape_yx``; outside it, nothing."""
    y0, x0, side = crop
    out = np.zeros(shape_yx, np.float32)
    out[y0 : y0 + side, x0 : x0 + side] = probability
    return out


def click_disk_hu(image_hu: np.ndarray, click: Click, min_radius_px: float = 3.0) -> np.ndarray:
    """HU values of the click's disk (at least ``min_radius_px`` radius) on ``image_hu`` (Y, X), 1D."""
    r = max(min_radius_px, float(click.radius_px))
    y0, y1 = max(int(click.y - r), 0), min(int(click.y + r) + 1, image_hu.shape[0])
    x0, x1 = max(int(click.x - r), 0), min(int(click.x + r) + 1, image_hu.shape[1])
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return np.asarray(image_hu[y0:y1, x0:x1])[(yy - click.y) ** 2 + (xx - click.x) ** 2 <= r * r]


def grew_into_other_tissue(image_hu: np.ndarray, old: np.ndarray, new: np.ndarray, factor: float) -> bool:
    """Whether mask ``new`` is over ``factor`` times the area of ``old`` (not empty) with an added
    part whose median HU lies more than HU_SHIFT_MIN from ``old``'s: it took in another tissue.
    ``image_hu`` (Y, X) HU, the masks (Y, X) bool. (``ZoomOut.focus``, ``VolumeSession._regrown``.)"""
    if new.sum() <= factor * old.sum():
        return False
    return abs(float(np.median(image_hu[new & ~old])) - float(np.median(image_hu[old]))) > HU_SHIFT_MIN


@dataclass(frozen=True)
class ZoomOut:
    """The first click on a slice, for large structures: when the model's mask covers more
    than ``min_area_fraction`` of the slice, predict again on the slice shown ``factor`` times
    smaller (surrounded by air, as a wider field of view shows it) and keep that. The model's
    reach from a click is limited in grid pixels (its receptive field; the geodesic maps' decay
    length): from one click in a liver it segments about half of it, and shown the slice at half
    the scale, nearly all of it (docs/design.md, "Zoom-out"). The shrunk slice is predicted on a
    grid only ``margin_px`` of air wider than it (``Predictor.prepare_zoomed_out``: 160² for a
    256² model at factor 2), so the second pass costs about 40 % of the first. Small structures
    stay at the full view, where they are seen best; later clicks (with the previous mask) are
    predicted as before.

    The other way (``zoom_in_fraction`` > 0): when a first click's mask clearly does not have
    the clicked spot's intensity (its median HU ``zoom_in_margin_hu`` beyond the stop rule's
    tolerance of the click disk's, ``intensity_jump_hu``: a faint lesion whose click took in the
    organ around it, not a bright vessel at an organ's hilum), the
    slice is predicted again on a square ``zoom_in_fraction`` of its longer side centred on the
    click, where the lesion is seen larger, and that mask is kept if its median HU is nearer the
    click's (docs/design.md, "Zoom-out"). Not for clicks on fat or air (``zoom_in_min_hu``): a
    click in a renal sinus's fat means the kidney around it, as the model was trained. A large
    first mask is tested the same way first, against the clicked *centre* (a
    ``centre_radius_px`` disk; 0: never): a click on a small bright vessel whose mask took the
    liver around it is zoomed in, not out. A first click whose centre is fat and whose mask is
    small is predicted zoomed out too, and the organ seen around it kept (``around_fat``,
    ``fat_growth``; 0: never): a click in a renal sinus means the kidney."""

    min_area_fraction: float = 0.045
    factor: float = 2.0
    margin_px: int = 16  # grid px of air around the shrunk slice
    follow_up: ZoomIn = ZoomIn()  # later clicks on a slice whose first click was zoomed in: on a crop (ZoomIn)
    zoom_in_min_hu: float = -30.0  # clicks on fat or air (a renal sinus: the organ is meant) are not zoomed in
    zoom_in_margin_hu: float = 15.0  # how far (HU) beyond the stop rule's tolerance the mask's median must lie
    zoom_in_fraction: float = 1 / 3  # side of the zoomed-in view, a share of the slice's longer side (0: never); 1/3: ZoomIn.max_zoom
    focus_growth: float = 4.0  # a later foreground click that grows the mask more than this many times into other tissue: focus (0: never)
    # a first click's mask (full view, zoomed out, or the organ around a click on fat; not a zoomed-in
    # one) predicted again at the full view with itself as the previous mask (refined): a slice's first
    # click then costs about two clicks (docs/design.md, "Refining a first click"); False: one pass
    refine: bool = True
    centre_radius_px: float = 1.5  # a large first mask not of the clicked centre's intensity (this disk's): zoomed in, not out (0: never)
    fat_growth: float = 2.0  # a first click on fat whose zoomed-out mask is this many times larger, around it, in other tissue: kept (0: never)
    fat_min_hu: float = -190.0  # fat's HU range for that: [fat_min_hu, zoom_in_min_hu) (below it: air)

    def applies(self, probability: np.ndarray, clicks: Sequence[Click], threshold: float = 0.5) -> bool:
        """Whether the prediction ``probability`` (Y, X) of a slice's first clicks ``clicks`` (no
        previous mask) should be made again zoomed out."""
        if not clicks or not all(k.positive for k in clicks):
            return False
        return float((probability >= threshold).mean()) > self.min_area_fraction

    def _spot_hu(self, image_hu: np.ndarray, click: Click, centre: bool) -> np.ndarray:
        """HU values (1D) of the clicked spot on ``image_hu`` (Y, X): the click's centre, a
        ``centre_radius_px`` disk, with ``centre``; else its whole disk (at least 3 px)."""
        return click_disk_hu(image_hu, replace(click, radius_px=self.centre_radius_px), 0.0) if centre \
            else click_disk_hu(image_hu, click)

    def _view(self, click: Click, shape_yx: tuple[int, int]) -> Crop:
        """The square ``zoom_in_fraction`` of the slice's longer side centred on ``click`` (moved
        inside the slice): the view of ``zoom_in`` and ``focus``."""
        h, w = shape_yx
        side = min(h, w, max(16, int(round(self.zoom_in_fraction * max(h, w)))))
        return int(np.clip(click.y - side // 2, 0, h - side)), int(np.clip(click.x - side // 2, 0, w - side)), side

    def zoom_in(self, predictor: "Predictor", image_hu: np.ndarray, probability: np.ndarray, clicks: Sequence[Click],
                threshold: float = 0.5, centre: bool = False) -> np.ndarray | None:
        """For a slice's first click (one positive click, no previous mask) whose mask
        ``probability >= threshold`` is not of the clicked spot's intensity: the probability
        (Y, X) predicted again on the zoomed-in view (zero outside it), if its mask is nearer the
        click's median HU; else None (keep the full view). ``centre``: the clicked spot is the
        click's centre (a ``centre_radius_px`` disk), not its whole disk (at least 3 px): for a
        large first mask, before it is zoomed out (None when ``centre_radius_px`` is 0)."""
        if self.zoom_in_fraction <= 0 or len(clicks) != 1 or not clicks[0].positive:
            return None
        m = probability >= threshold
        if not m.any():
            return None
        click = clicks[0]
        if centre and self.centre_radius_px <= 0:
            return None
        disk = self._spot_hu(image_hu, click, centre)
        med = float(np.median(disk))
        if med < self.zoom_in_min_hu or intensity_jump_hu(image_hu[m], disk) <= self.zoom_in_margin_hu:
            return None
        p = self.view(predictor, image_hu, clicks, "in")
        mc = p >= threshold  # inside the zoomed-in view only
        if not mc.any() or abs(float(np.median(image_hu[mc])) - med) >= abs(float(np.median(image_hu[m])) - med):
            return None
        return p

    def focus(self, predictor: "Predictor", image_hu: np.ndarray, prev: np.ndarray, probability: np.ndarray,
              clicks: Sequence[Click], threshold: float = 0.5) -> np.ndarray | None:
        """For a later foreground click (the last of ``clicks``; ``prev`` (Y, X) bool, the mask
        before it, not empty) whose mask ``probability >= threshold`` grew more than
        ``focus_growth`` times into tissue that is not the mask's (the added part's median HU
        more than HU_SHIFT_MIN from ``prev``'s, ``prev`` not on fat: a click on a vessel branch
        that took in the liver around it) or not the clicked spot's (beyond ``intensity_jump_hu``'s
        tolerance of the click's disk: a mask that already held some of the liver, or a click on a
        vessel that took in the pancreas beside it): the slice predicted again on a focus view, a square
        ``zoom_in_fraction`` of the slice's longer side centred on the click, with the previous
        mask and the clicks inside it (FocalClick's local refinement); outside the view the
        previous mask stays.
        Returned (Y, X) only if the focus view's mask did not grow that much itself and, unless
        the full view's addition is not the clicked tissue, what it adds is nearer the mask's
        median HU than what the full view added (a kidney whose sinus was the first mask, or a
        liver after a click on its tumour, clicked on the liver, is then kept whole as predicted);
        else None (keep the prediction)."""
        click = clicks[-1]
        if self.focus_growth <= 0 or self.zoom_in_fraction <= 0 or not click.positive or not prev.any():
            return None
        m = probability >= threshold
        med = float(np.median(image_hu[prev]))
        added = m & ~prev
        limit = self.focus_growth * prev.sum()
        if m.sum() <= limit or med < self.zoom_in_min_hu:
            return None  # not grown much, or a mask on fat (a renal sinus: the organ is meant)
        foreign = intensity_jump_hu(image_hu[added], click_disk_hu(image_hu, click)) > 0  # not the tissue clicked on
        if not foreign and not grew_into_other_tissue(image_hu, prev, m, self.focus_growth):
            return None  # the mask's own tissue, and the clicked one
        h, w = image_hu.shape
        crop = self._view(click, (h, w))
        sub, inside, sub_prev = crop_inputs(np.asarray(image_hu), crop, clicks, prev)
        p = predictor.predict_prepared([predictor.prepare(sub)], [sub.shape], [inside], [sub_prev])[0]
        y0, x0, side = crop
        out = prev.astype(np.float32)
        out[y0 : y0 + side, x0 : x0 + side] = p
        mf = out >= threshold
        if not (mf & ~prev).any() or mf.sum() > limit:
            return None
        if not foreign and abs(float(np.median(image_hu[mf & ~prev])) - med) >= abs(float(np.median(image_hu[added])) - med):
            return None  # what the focus view adds is no nearer the mask's tissue (and the full view's is the clicked one)
        return out

    def around_fat(self, predictor: "Predictor", image_hu: np.ndarray, probability: np.ndarray, clicks: Sequence[Click],
                   grid: torch.Tensor | None = None, threshold: float = 0.5) -> np.ndarray | None:
        """For a slice's first click (one positive click, no previous mask) on fat (the median HU
        of its centre, a ``centre_radius_px`` disk, or of its disk where that is 0, in
        [``fat_min_hu``, ``zoom_in_min_hu``), CT's fat window, not air) whose full-view mask
        is not large enough to be zoomed out (tried before ``zoom_in``): the probability (Y, X)
        predicted zoomed out, if that mask surrounds the click (its convex hull holds it; a
        kidney seen zoomed out may leave its sinus out), is over ``fat_growth`` times the full
        view's mask, and what it adds is not fat: the organ around a click in its renal sinus,
        which the full view (its geodesic click maps stopping at the fat's edge) takes as the
        sinus alone; else None (keep the full view, e.g. a fatty lesion in fat, or fat beside an
        organ). ``grid``: the slice prepared (``predictor.prepare``). It costs the zoomed-out
        pass on such clicks only (docs/design.md, "A first click on fat")."""
        if self.fat_growth <= 0 or len(clicks) != 1 or not clicks[0].positive:
            return None
        click = clicks[0]
        spot = self._spot_hu(image_hu, click, self.centre_radius_px > 0)  # the centre: a small sinus's disk is partly the organ
        if not self.fat_min_hu <= float(np.median(spot)) < self.zoom_in_min_hu:
            return None  # not fat (air, a lung, is not a sinus)
        m = probability >= threshold
        wide = self.predict(predictor, [image_hu], [clicks], None if grid is None else [grid])[0]
        mw = wide >= threshold
        added = mw & ~m
        if mw.sum() <= self.fat_growth * m.sum() or not convex_hull_image(mw)[click.y, click.x]:
            return None  # not larger, or not around the click
        return wide if float(np.median(image_hu[added])) >= self.zoom_in_min_hu else None

    def first_view(self, predictor: "Predictor", image_hu: np.ndarray, probability: np.ndarray, clicks: Sequence[Click],
                   grid: torch.Tensor | None = None, threshold: float = 0.5) -> tuple[str | None, np.ndarray | None]:
        """Which view a slice's first click ``clicks`` (no previous mask), predicted at the full
        view as ``probability`` (Y, X), is kept in, in this order: ("fat", p) the organ around a
        click on fat (``around_fat``, for a mask not large); ("in", p) zoomed in, a mask that is
        not the clicked spot's tissue (``zoom_in``; for a large mask, its centre's); ("out",
        None) a large mask, to be predicted zoomed out (``predict``, left to the caller, which
        may batch it); (None, None) the full view, or with ``refine`` (None, p), p ``refined``
        (the zoomed-out views are refined in ``predict``). ``Session`` and ``VolumeSession``
        both decide here."""
        wide = self.applies(probability, clicks, threshold)
        if not wide:
            p = self.around_fat(predictor, image_hu, probability, clicks, grid, threshold)
            if p is not None:
                return "fat", p  # zoomed out by predict, so refined there with refine
        p = self.zoom_in(predictor, image_hu, probability, clicks, threshold, centre=wide)
        if p is not None:
            return "in", p
        if wide:
            return "out", None
        return None, (self.refined(predictor, image_hu, probability, clicks, grid, threshold) if self.refine else None)

    def refined(self, predictor: "Predictor", image_hu: np.ndarray, probability: np.ndarray, clicks: Sequence[Click],
                grid: torch.Tensor | None = None, threshold: float = 0.5) -> np.ndarray:
        """With ``refine``: a first click's prediction ``probability`` (Y, X) predicted again at the
        full view with the same ``clicks`` and its own mask as the previous mask. The model,
        trained to complete partial previous masks (``--partial-prev-p``), adds what one pass
        left out (the other side of a kidney's C, a zoomed-out liver's border). Kept only if
        what it adds has the first mask's tissue (median HU within HU_SHIFT_MIN,
        ``grew_into_other_tissue``): completing a lesion's mask would take in the organ around
        it, a spleen's the kidney it touches. Without ``refine``, for a model without the
        previous-mask channel, an empty mask or a refinement into other tissue, ``probability``
        itself. ``grid``: the slice prepared, if at hand."""
        m = probability >= threshold
        if not self.refine or not predictor.config.use_prev_mask or not m.any():
            return probability
        image_hu = np.asarray(image_hu)
        g = predictor.prepare(image_hu) if grid is None else grid
        p = predictor.predict_prepared([g], [image_hu.shape], [list(clicks)], [m])[0]
        return self._kept(image_hu, probability, m, p, threshold)

    @staticmethod
    def _kept(image_hu: np.ndarray, first: np.ndarray, mask: np.ndarray, again: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """The refinement ``again`` of a first prediction ``first`` (its mask ``mask``), or
        ``first`` where ``again`` adds another tissue (``grew_into_other_tissue``); for
        ``refined`` and ``predict`` alike."""
        return first if mask.any() and grew_into_other_tissue(np.asarray(image_hu), mask, again >= threshold, 1.0) else again

    VIEWS = ("full", "out", "in")

    def view(self, predictor: "Predictor", image_hu: np.ndarray, clicks: Sequence[Click], view: str,
             grid: torch.Tensor | None = None) -> np.ndarray:
        """A slice's first clicks ``clicks`` (no previous mask) predicted in the view the user
        asks for, whatever the rules would choose: ``"out"`` the slice zoomed out (``predict``),
        ``"in"`` the square ``_view`` around the last click (zero outside it), ``"full"`` the
        slice as it is (``"out"`` and ``"full"`` ``refined`` with ``refine``, as a first click
        is). Probability (Y, X); ``grid``: the slice prepared, if at hand. (The sessions'
        ``view_first_click``; docs/design.md, "Another view of a first click".)"""
        if view not in self.VIEWS:
            raise ValueError(f"unknown view {view!r}; one of {', '.join(self.VIEWS)}")
        image_hu = np.asarray(image_hu)
        if view == "out":
            return self.predict(predictor, [image_hu], [clicks], None if grid is None else [grid])[0]
        if view == "in":
            crop = self._view(clicks[-1], image_hu.shape)
            sub, inside, _ = crop_inputs(image_hu, crop, clicks, None)
            p = predictor.predict_prepared([predictor.prepare(sub)], [sub.shape], [list(inside)], [None])[0]
            return paste_crop(p, crop, image_hu.shape)
        g = predictor.prepare(image_hu) if grid is None else grid
        p = predictor.predict_prepared([g], [image_hu.shape], [list(clicks)], [None])[0]
        return self.refined(predictor, image_hu, p, clicks, g)

    def predict(self, predictor: "Predictor", images_hu: Sequence[np.ndarray], clicks: Sequence[Sequence[Click]],
                grids: Sequence[torch.Tensor] | None = None) -> list[np.ndarray]:
        """Probabilities (Y, X) for slices ``images_hu`` and their clicks (in the slices' pixels),
        predicted zoomed out in one batch; ``grids``: the slices already prepared
        (``predictor.prepare``), else they are prepared here. With ``refine``, each zoomed-out
        mask is then predicted again at the full view, with the same clicks and that mask as the
        previous mask (a second batch; kept where ``refined`` would keep it): the model, trained
        to complete partial previous masks, draws its border at the full resolution and adds
        what the coarse view missed."""
        grids = [predictor.prepare(im) for im in images_hu] if grids is None else list(grids)
        views = [predictor.prepare_zoomed_out(g, self.factor, self.margin_px) for g in grids]
        shapes = [np.asarray(im).shape for im in images_hu]
        out = predictor.predict_prepared([v for v, _ in views], shapes, [list(c) for c in clicks], None, [b for _, b in views])
        if not self.refine or not predictor.config.use_prev_mask:
            return out
        masks = [p >= 0.5 for p in out]
        again = predictor.predict_prepared(grids, shapes, [list(c) for c in clicks], masks)
        return [self._kept(im, p, m, r) for im, p, m, r in zip(images_hu, out, masks, again)]


def clicked_piece(prev: np.ndarray, clicks: Sequence[Click], last_only: bool = True) -> np.ndarray | None:
    """The part of the previous mask that background clicks remove whole, or None.

    ``prev`` (Y, X) bool, the mask the model was given; ``clicks``: the slice's clicks, the new
    one last. A background click inside a *separate piece* of ``prev`` (a connected component
    that holds no positive click of the slice, none within a click radius of it either) says
    that piece is not the structure: all of it goes, not only the disk the model removes around
    the click (a model trained on rendered CT does not remove a whole wrongly included organ;
    docs/design.md, "Background clicks on a separate piece"). ``last_only``: only the new
    click counts (a click being added); else every background click (a slice predicted again
    from a new previous mask). Without a positive click on the slice nothing says where the
    structure is, and nothing is removed beyond what the model predicts (None)."""
    positives = [k for k in clicks if k.positive]
    negatives = [k for k in (clicks[-1:] if last_only else clicks) if not k.positive]
    h, w = prev.shape
    negatives = [k for k in negatives if 0 <= k.y < h and 0 <= k.x < w and prev[k.y, k.x]]
    if not positives or not negatives:
        return None
    cc, _ = ndimage.label(prev)
    near_positive = set()
    for k in positives:
        r = int(np.ceil(k.radius_px))
        near_positive.update(np.unique(cc[max(k.y - r, 0) : k.y + r + 1, max(k.x - r, 0) : k.x + r + 1]).tolist())
    drop = {int(cc[k.y, k.x]) for k in negatives} - near_positive
    return np.isin(cc, sorted(drop)) if drop else None


def _check_first_click(clicks: Sequence[Click], where: str) -> None:
    """ValueError unless ``clicks`` (those of a slice, ``where`` names it) are one foreground
    click: what ``view_first_click`` can see again (``ZoomOut.view`` checks the view's name)."""
    if len(clicks) != 1 or not clicks[0].positive:
        raise ValueError("only a slice with one click, a foreground click, can be seen in another view "
                         f"({where} has {len(clicks)} click{'' if len(clicks) == 1 else 's'}"
                         f"{'' if not clicks or clicks[0].positive else ', a background click'})")


@dataclass(frozen=True)
class _State:
    clicks: tuple[Click, ...]
    probability: np.ndarray | None
    zoomed_in: bool = False  # this prediction was made on ZoomOut's zoomed-in view (a first click)


def pixel_index(value, name: str) -> int:
    """``value`` as a pixel or slice index: a Python or NumPy integer, or a float that is a whole
    number (``60.0``); ValueError for anything else (``60.7``, NaN, a string, a bool, an array),
    which ``int()`` would truncate or turn into a less helpful error."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise ValueError(f"{name} must be an integer pixel index, got {value!r} ({type(value).__name__})")
    if isinstance(value, (float, np.floating)) and not (np.isfinite(value) and float(value).is_integer()):
        raise ValueError(f"{name} must be a whole pixel index, got {value!r}; round sub-pixel coordinates first")
    return int(value)


def click_polarity(positive) -> bool:
    """``positive`` as a click's polarity: True / False (Python or NumPy bools, or 1 / 0);
    ValueError for anything else (``"no"`` would otherwise count as a foreground click)."""
    if isinstance(positive, (bool, np.bool_)):
        return bool(positive)
    if isinstance(positive, (int, np.integer)) and positive in (0, 1):
        return bool(positive)
    raise ValueError(f"positive must be True (foreground) or False (background), got {positive!r}")


def check_hu(image_hu: np.ndarray, what: str) -> np.ndarray:
    """``image_hu`` as float32, after checking that it holds real, finite numbers: NaN or infinite
    HU would give an empty or meaningless mask without a word, a boolean or complex array is
    not a CT (a mask passed as the image?)."""
    arr = np.asarray(image_hu)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{what} must hold Hounsfield units as real numbers, got dtype {arr.dtype}")
    img = arr.astype(np.float32, copy=False)
    if not np.isfinite(img.sum(dtype=np.float64)):  # one pass without a temporary: NaN / inf make the sum so
        n_bad = int(img.size - np.count_nonzero(np.isfinite(img)))
        raise ValueError(f"{what} holds {n_bad} value(s) that are NaN or infinite (or too large for float32); "
                         "a CT must hold finite Hounsfield units everywhere")
    return img


def check_threshold(threshold: float) -> float:
    """The probability threshold of a mask, strictly between 0 and 1."""
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
            or not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be a probability strictly between 0 and 1 (e.g. 0.5), got {threshold!r}")
    return float(threshold)


def _require_interactive(predictor: Predictor, what: str) -> None:
    """Sessions are for models that take clicks; an automatic U-Net (``interactive`` False) would
    ignore every click and give the same mask whatever the user does."""
    if not getattr(predictor, "interactive", True):  # (stand-ins in tests may not say)
        raise ValueError(f"{what} needs an interactive model (an IU-Net that takes clicks); this checkpoint is an automatic "
                         "U-Net that ignores clicks: use Predictor.predict(image_hu) for its mask")


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
        zoom: ZoomIn | None = None,
        zoom_out: ZoomOut | None = None,
        prev_mask: bool = True,
    ):
        """``initial_mask`` (Y, X), optional: a mask to start from (e.g. the neighbouring slice's,
        when propagating); it sets the first click's dynamic size and the previous-mask channel.
        ``zoom``: predict later clicks on a crop around the object (:class:`ZoomIn`).
        ``zoom_out``: predict a first click that gives a large mask again zoomed out (:class:`ZoomOut`).
        ``prev_mask``: show a model with the previous-mask channel the mask so far (RITM's way,
        the default); False: every click is predicted from the clicks alone, as the paper's
        IU-Net is, and ``zoom_out``'s focus view (a refinement of the previous mask) is not used
        (a diagnostic, docs/design.md, "The previous mask and random clicks")."""
        _require_interactive(predictor, "Session")
        if np.ndim(image_hu) != 2 or min(np.shape(image_hu)) < 2:
            raise ValueError(f"a session needs one 2D slice (Y, X) of at least 2×2 pixels, got shape {np.shape(image_hu)}"
                             + (" (for a volume (Z, Y, X) use VolumeSession)" if np.ndim(image_hu) == 3 else ""))
        img = check_hu(image_hu, "the slice")
        if click_size is not None and not isinstance(click_size, ClickSize):
            raise ValueError(f"click_size must be a ClickSize (e.g. ClickSize(5.0) or ClickSize(alpha=1/800)), got {click_size!r}")
        self.predictor = predictor
        self.image_hu = img
        self.click_size = click_size or ClickSize(predictor.inputs.default_radius_px, predictor.inputs.alpha)
        self.threshold = check_threshold(threshold)
        self.zoom = zoom
        self.zoom_out = zoom_out
        self.prev_mask = prev_mask
        self._grid = predictor.prepare(img)
        if initial_mask is not None and np.asarray(initial_mask).shape != img.shape:
            raise ValueError(f"initial mask {np.asarray(initial_mask).shape} does not match the slice {img.shape}")
        start = None if initial_mask is None else np.asarray(initial_mask, dtype=np.float32)
        if start is not None and not (np.isfinite(start).all() and start.min() >= 0.0 and start.max() <= 1.0):
            raise ValueError("initial mask must be a mask (bool) or probabilities in 0…1, without NaN")
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
        """The click a user at (y, x) makes now, with its radius (a click that agrees with the
        mask so far no larger than its distance to the mask's border: ``agreeing_radius_px``);
        raises ValueError outside the image, for coordinates that are not whole pixel indices
        (``pixel_index``) and for a ``positive`` that is not a bool."""
        h, w = self.shape
        y, x, positive = pixel_index(y, "y"), pixel_index(x, "x"), click_polarity(positive)
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"click at (y={y}, x={x}) is outside the image ({h}×{w} pixels)")
        return Click(y, x, positive, agreeing_radius_px(self.mask, y, x, positive, self.next_radius_px, self.click_size.min_radius_px))

    @property
    def zoomed_in(self) -> bool:
        """Whether the slice's first click was predicted zoomed in (``ZoomOut.zoom_in``, or
        ``view_first_click("in")``, the latest view of it counting): its later clicks are then
        predicted on a crop around the object (``ZoomOut.follow_up``)."""
        firsts = [st for st in self._history[1:] if len(st.clicks) == 1]
        return bool(firsts) and firsts[-1].zoomed_in

    def add_prediction(self, click: Click, probability: np.ndarray, latency_ms: float, zoomed_in: bool = False) -> None:
        """Record a click whose prediction was computed elsewhere (e.g. in a ZeroGPU worker
        process, from ``make_click`` and ``Predictor.predict``). ``probability``: (Y, X) float;
        ``zoomed_in``: it was predicted on ZoomOut's zoomed-in view."""
        probability = np.asarray(probability, dtype=np.float32)
        if probability.shape != self.shape:
            raise ValueError(f"prediction {probability.shape} does not match the slice {self.shape}")
        self._history.append(_State(self.clicks + (click,), probability, zoomed_in))
        self.last_latency_ms = latency_ms

    def add_click(self, y: int, x: int, positive: bool = True) -> np.ndarray:
        """Add a click, predict, and return the new mask (Y, X) bool."""
        step_sessions([self], [(y, x, positive)])
        return self.mask

    def view_first_click(self, view: str) -> np.ndarray:
        """Predict the slice's only click, a foreground one, again in ``view`` (``ZoomOut.view``:
        ``"out"`` zoomed out, the structure around it; ``"in"`` zoomed in around it, the spot
        itself, after which later clicks are predicted on a crop; ``"full"`` the plain view) and
        make that the current mask, as one more undoable step (the click is not repeated).
        Returns the mask (Y, X) bool. ValueError for another view, or unless the session's
        clicks are one foreground click (docs/design.md, "Another view of a first click")."""
        _check_first_click(self.clicks, "the slice")
        t0 = time.perf_counter()
        zo = self.zoom_out if self.zoom_out is not None else ZoomOut()
        p = np.asarray(zo.view(self.predictor, self.image_hu, self.clicks, view, self._grid), np.float32)
        self._history.append(_State(self.clicks, p, view == "in"))
        self.last_latency_ms = (time.perf_counter() - t0) * 1000.0
        return self.mask

    def undo(self) -> bool:
        """Remove the last click, restoring the previous mask exactly. False when there is nothing to undo."""
        if len(self._history) == 1:
            return False
        self._history.pop()
        return True

    def reset(self) -> None:
        """Forget every click and go back to the session's start (the initial mask, if any); not undoable."""
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
    images, shapes, clicks, prevs, crops = [], [], [], [], []
    for s, c in zip(sessions, new):
        cl = s.clicks + (c,)
        prev = None if s.probability is None else s.mask
        zoom = s.zoom if s.zoom is not None else (s.zoom_out.follow_up if s.zoom_out is not None and s.zoomed_in else None)
        crop = None if zoom is None or prev is None else zoom.crop(prev, cl, s.shape)
        if crop is None:
            images.append(s._grid), shapes.append(s.shape), clicks.append(cl), prevs.append(prev if s.prev_mask else None)
        else:  # the same inputs on the crop, in its pixels
            sub, inside, sub_prev = crop_inputs(s.image_hu, crop, cl, prev)
            images.append(predictor.prepare(sub)), shapes.append(sub.shape), clicks.append(inside)
            prevs.append(sub_prev if s.prev_mask else None)
        crops.append(crop)
    probs = predictor.predict_prepared(images, shapes, clicks, prevs)
    for i, (s, crop) in enumerate(zip(sessions, crops)):
        if crop is not None:  # back into the slice
            probs[i] = paste_crop(probs[i], crop, s.shape)
    zoomed, wide = set(), []  # first clicks kept zoomed in; first clicks to predict zoomed out (batched below)
    for i, (s, c) in enumerate(zip(sessions, new)):  # a first click: on fat, zoomed in, or a large structure
        if s.zoom_out is not None and s.probability is None and not s.clicks:
            how, p = s.zoom_out.first_view(predictor, s.image_hu, probs[i], (c,), s._grid, s.threshold)
            if p is not None:
                probs[i] = p
            if how == "in":
                zoomed.add(i)
            elif how == "out":
                wide.append(i)
    for zo in {sessions[i].zoom_out for i in wide}:  # a large structure's first click: again, zoomed out
        idx = [i for i in wide if sessions[i].zoom_out == zo]
        for i, p in zip(idx, zo.predict(predictor, [sessions[i].image_hu for i in idx], [(new[i],) for i in idx],
                                        [sessions[i]._grid for i in idx])):
            probs[i] = p
    for i, (s, c) in enumerate(zip(sessions, new)):  # a later click that took in other tissue: on a focus view
        if s.zoom_out is not None and s.probability is not None and crops[i] is None and s.prev_mask:
            p = s.zoom_out.focus(predictor, s.image_hu, s.mask, probs[i], s.clicks + (c,), s.threshold)
            if p is not None:
                probs[i] = p
    ms = (time.perf_counter() - t0) * 1000.0 / len(sessions)
    for i, (s, c, p) in enumerate(zip(sessions, new, probs)):
        piece = None if s.probability is None else clicked_piece(s.mask, s.clicks + (c,))
        if piece is not None:  # a background click on a separate piece: all of it goes
            p = np.where(piece, 0.0, p).astype(np.float32)
        s.add_prediction(c, p, ms, i in zoomed)


# ---------------------------------------------------------------------------------------
# Volumes: propagation and 3D corrections

MIN_AREA_PX = 10  # a predicted mask smaller than this (slice pixels) means the structure has ended
MIN_CONFIDENCE = 0.6  # mean probability inside a propagated mask below this: not confident, stop


def _seed_click(prev: np.ndarray, click_size: ClickSize) -> Click:
    """For models without the previous-mask channel: a positive click at the deepest point of
    the previous slice's mask stands in for it."""
    y, x = deepest_point(prev)
    return Click(y, x, True, click_size.radius_for(int(prev.sum())))


def accept_propagated(prob: np.ndarray, prev: np.ndarray, threshold: float = 0.5,
                      min_area_px: int = MIN_AREA_PX, min_confidence: float = MIN_CONFIDENCE,
                      image_hu: np.ndarray | None = None, prev_hu: np.ndarray | None = None,
                      ref_hu: np.ndarray | Sequence[np.ndarray] | None = None) -> np.ndarray:
    """The mask to keep from a propagated prediction, or an empty one where the structure ends.

    ``prob`` (Y, X) float, the prediction on the next slice; ``prev`` (Y, X) bool, the mask it
    was propagated from. Only components that overlap ``prev`` grown by a margin (a quarter of
    its equivalent radius, at least 3 px) are kept, so propagation never jumps to another
    structure; the result is empty when it is under ``min_area_px``, when the model is not
    confident in it (mean probability inside under ``min_confidence``), or, given the two HU
    slices ``image_hu`` and ``prev_hu``, when its intensity is not the structure's: the median
    HU inside moved by more than ``max(HU_SHIFT_MIN, 2 × robust std)`` of the previous mask's
    (one structure keeps its intensity from slice to slice; a bowel loop or lung does not
    share the spleen's). ``ref_hu`` (1D HU values of the mask on the slice the propagation
    started from, or a tuple of such references, each of which must be met) is checked the same way, so that a mask that drifts into a touching organ one
    slice at a time (a liver into the right kidney) is stopped once it is no longer the clicked
    structure's intensity."""
    m = prob >= threshold
    if not m.any() or not prev.any():
        return np.zeros_like(m)
    reach = max(3, int(round(0.25 * np.sqrt(prev.sum() / np.pi))))
    ys, xs = np.nonzero(prev)
    y0, y1 = max(ys.min() - reach, 0), min(ys.max() + reach + 1, m.shape[0])
    x0, x1 = max(xs.min() - reach, 0), min(xs.max() + reach + 1, m.shape[1])
    near = np.zeros_like(m)
    near[y0:y1, x0:x1] = ndimage.binary_dilation(prev[y0:y1, x0:x1], iterations=reach)
    cc, _ = ndimage.label(m)
    keep = np.unique(cc[near & m])
    m = np.isin(cc, keep[keep > 0])
    if m.sum() < min_area_px or float(prob[m].mean()) < min_confidence:
        return np.zeros_like(m)
    if image_hu is not None and prev_hu is not None and intensity_jump_hu(image_hu[m], prev_hu[prev]) > 0:
        return np.zeros_like(m)
    refs = ref_hu if isinstance(ref_hu, (tuple, list)) else (ref_hu,)
    if image_hu is not None and any(r is not None and len(r) and intensity_jump_hu(image_hu[m], r) > 0 for r in refs):
        return np.zeros_like(m)
    return m


SMALL_CARRY_GRID_PX = 300  # a carried mask at most this large on the model's grid counts as small
SMALL_CARRY_DICE = 0.6  # a small structure found again by a click must overlap its carried mask this much (Dice)
HU_SHIFT_MIN = 30.0  # HU: the smallest median shift that counts as another tissue
REGROW_LIMIT = 2.0  # a re-propagated slice's mask may not grow more than this many times into other tissue (VolumeSession)
CARRY_NEGATIVE_MM = 20.0  # a propagation carries background clicks this far from their slice (VolumeSession)
# a foreground click's re-propagation does not cut another slice's mask to less than this fraction
# of its area (VolumeSession._shrunk)
SHRINK_LIMIT = 0.5
REF_HU_SAMPLES = 20000  # HU values kept from the start slice's mask for the drift check


def hu_sample(values_hu: np.ndarray) -> np.ndarray:
    """At most about REF_HU_SAMPLES of the 1D HU values, evenly strided: enough for a median and a MAD."""
    return values_hu[:: max(1, len(values_hu) // REF_HU_SAMPLES)]


def intensity_jump_hu(new_hu: np.ndarray, prev_hu: np.ndarray) -> float:
    """How far (HU) the median of ``new_hu`` lies beyond what ``prev_hu`` allows: its median
    ± max(HU_SHIFT_MIN, 2 × robust std (1.4826 × MAD)); 0 when within. 1D arrays of HU values."""
    med_prev = float(np.median(prev_hu))
    std = 1.4826 * float(np.median(np.abs(prev_hu - med_prev)))
    return max(0.0, abs(float(np.median(new_hu)) - med_prev) - max(HU_SHIFT_MIN, 2.0 * std))


@dataclass(frozen=True)
class _Edit:
    """One undoable volume action: the clicks before it and the slices it changed, as they were."""

    clicks: tuple[tuple[int, Click], ...]
    slices: dict[int, np.ndarray]  # z → packed (np.packbits) previous mask of that slice
    zoomed: frozenset[int] = frozenset()  # the slices whose first click was zoomed in, before it


class VolumeSession:
    """One user's 3D segmentation of one structure in a volume, by clicks on any slice.

    ``volume_hu`` (Z, Y, X) float HU; ``spacing_mm`` (z, y, x). A click on slice ``z`` updates
    that slice (its clicks plus its current mask in the previous-mask channel) and then
    re-propagates outward from ``z`` in both directions: each next slice is predicted from its
    neighbour's mask (``accept_propagated`` decides where the structure ends), until the masks
    stop changing or the structure ends. A slice the user clicked on that the propagation
    reaches is predicted again from its own clicks with the carried mask as its previous mask
    (``refresh_anchors``; never emptied), and the propagation goes on beyond it only if it
    changed. Where the carried mask ends but the masks from there on lead to a clicked slice,
    they are kept (the structure is there). A re-propagation that would make a slice's mask over
    ``regrow_limit`` times larger with tissue that is neither the mask's nor the clicked one's
    keeps that slice's mask and stops there (``_regrown``); likewise a foreground click's
    re-propagation that would cut a slice's mask to less than ``SHRINK_LIMIT`` of itself
    (``shrink_limit``, ``_shrunk``). Undo restores the previous 3D mask exactly;
    ``clear`` empties the volume (undoable too). Many sessions can share one ``Predictor``.
    """

    def __init__(
        self,
        predictor: Predictor,
        volume_hu: np.ndarray,
        click_size: ClickSize | None = None,
        threshold: float = 0.5,
        spacing_mm: Sequence[float] | None = None,
        max_slices: int | None = None,
        same_dice: float = 0.99,
        refresh_anchors: bool = True,
        zoom_out: ZoomOut | None = None,
        small_carry: bool = True,
        carry_negative_mm: float = CARRY_NEGATIVE_MM,
        regrow_limit: float = REGROW_LIMIT,
        shrink_limit: float = SHRINK_LIMIT,
    ):
        _require_interactive(predictor, "VolumeSession")
        shape = np.shape(volume_hu)
        if len(shape) != 3 or shape[0] < 1 or min(shape[1:]) < 2:
            raise ValueError(f"a volume session needs a volume (Z, Y, X) of at least one slice of 2×2 pixels, got shape {shape}"
                             + (" (for one slice (Y, X) use Session, or pass volume[None])" if len(shape) == 2 else ""))
        vol = check_hu(volume_hu, "the volume")
        if click_size is not None and not isinstance(click_size, ClickSize):
            raise ValueError(f"click_size must be a ClickSize (e.g. ClickSize(5.0) or ClickSize(alpha=1/800)), got {click_size!r}")
        if spacing_mm is not None:
            sp = np.asarray(spacing_mm, dtype=np.float64) if np.ndim(spacing_mm) == 1 else None
            if sp is None or sp.shape != (3,) or not (np.isfinite(sp).all() and (sp > 0).all()):
                raise ValueError(f"spacing_mm must be three voxel sizes (z, y, x) in mm, each > 0 (e.g. CTVolume.spacing_mm), got {spacing_mm!r}")
        self.predictor = predictor
        self.volume_hu = vol
        self.click_size = click_size or ClickSize(predictor.inputs.default_radius_px, predictor.inputs.alpha)
        self.threshold = check_threshold(threshold)
        self.spacing_mm = None if spacing_mm is None else tuple(float(v) for v in spacing_mm)
        self.max_slices = max_slices  # propagation reach in each direction (None = the whole volume)
        self.same_dice = same_dice  # a re-propagated slice this close to its old mask: stop there
        self.refresh_anchors = refresh_anchors  # propagation re-predicts clicked slices it reaches
        self.zoom_out = zoom_out  # a first click on an empty slice that gives a large mask: again, zoomed out
        self.small_carry = small_carry  # a small carried mask predicted empty: looked for again with a click (_find_small)
        # background clicks go on with the propagation this far (mm; none without a spacing): _carried_negatives
        self.carry_negative_mm = float(carry_negative_mm)
        # a re-propagation does not grow a slice's mask more than this many times into other tissue (0: off): _regrown
        self.regrow_limit = float(regrow_limit)
        # a foreground click's re-propagation does not cut other slices' masks down (_shrunk)
        self.shrink_limit = float(shrink_limit)
        if not 0 <= self.shrink_limit < 1:
            raise ValueError(f"shrink_limit must be a fraction in [0, 1) (0: off), got {shrink_limit!r}")
        self._mask = np.zeros(vol.shape, bool)
        self._clicks: tuple[tuple[int, Click], ...] = ()
        self._undo: list[_Edit] = []
        self._zoomed: frozenset[int] = frozenset()  # slices whose first click was zoomed in (ZoomOut.zoom_in)
        self._grids: dict[int, torch.Tensor] = {}
        self.last_latency_ms: float | None = None
        self.last_changed: list[int] = []  # slices the last action changed

    # -- state -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return self.volume_hu.shape  # type: ignore[return-value]

    @property
    def mask(self) -> np.ndarray:
        """The current 3D mask (Z, Y, X) bool (a read-only view)."""
        v = self._mask.view()
        v.flags.writeable = False
        return v

    @property
    def clicks(self) -> tuple[tuple[int, Click], ...]:
        """Every click so far as (slice index, click)."""
        return self._clicks

    def slice_clicks(self, z: int) -> tuple[Click, ...]:
        return tuple(c for zz, c in self._clicks if zz == z)

    def slices_with_mask(self) -> list[int]:
        return [int(z) for z in np.nonzero(self._mask.any(axis=(1, 2)))[0]]

    def volume_ml(self) -> float | None:
        """Volume of the mask in millilitres (None without a spacing)."""
        if self.spacing_mm is None:
            return None
        return float(self._mask.sum()) * float(np.prod(self.spacing_mm)) / 1000.0

    def next_radius_px(self, z: int) -> float:
        """Radius the next click on slice ``z`` will get (dynamic size follows that slice's mask)."""
        return self.click_size.radius_for(int(self._mask[self._slice(z)].sum()))

    def _slice(self, z) -> int:
        """``z`` as a slice index of this volume; ValueError outside 0 … Z-1 (a negative index
        would otherwise count from the end, as in numpy)."""
        z = pixel_index(z, "slice z")
        if not 0 <= z < self.shape[0]:
            raise ValueError(f"slice {z} is outside the volume of {self.shape[0]} slices (0…{self.shape[0] - 1})")
        return z

    # -- model ---------------------------------------------------------------------------
    def _grid(self, z: int) -> torch.Tensor:
        if z not in self._grids:
            self._grids[z] = self.predictor.prepare(self.volume_hu[z])
        return self._grids[z]

    def _predict(self, zs: Sequence[int], clicks: Sequence[Sequence[Click]], prevs: Sequence[np.ndarray | None],
                 prev_zs: Sequence[int] | None = None) -> list[np.ndarray]:
        """``prev_zs``: per slice, the slice its previous mask lies on (None: its own)."""
        shape = self.shape[1:]
        grids = [self._grid(z) for z in zs]
        if prev_zs is None or not self.predictor.config.prev_image:
            return self.predictor.predict_prepared(grids, [shape] * len(zs), clicks, prevs)
        pis = [None if pz == z else self._grid(pz) for z, pz in zip(zs, prev_zs)]
        return self.predictor.predict_prepared(grids, [shape] * len(zs), clicks, prevs, None, pis)

    def _propagation_step(self, zs: Sequence[int], prevs: Sequence[np.ndarray], prev_zs: Sequence[int],
                          ref_hu: np.ndarray | Sequence[np.ndarray] | None = None, clicks: Sequence[Sequence[Click]] | None = None) -> list[np.ndarray]:
        """Masks for slices ``zs`` carried from the masks ``prevs`` of slices ``prev_zs`` (one batch);
        ``ref_hu``: the HU values inside the mask the propagation started from; ``clicks``: per
        slice, background clicks carried along (``_carried_negatives``; none by default)."""
        if self.predictor.config.use_prev_mask:
            probs = self._predict(zs, [list(c) for c in clicks] if clicks is not None else [[] for _ in zs], prevs, prev_zs)
        else:
            probs = self._predict(zs, [[_seed_click(p, self.click_size)] for p in prevs], [None] * len(zs))
        out = [
            accept_propagated(pr, pv, self.threshold, image_hu=self.volume_hu[z], prev_hu=self.volume_hu[pz], ref_hu=ref_hu)
            for pr, pv, z, pz in zip(probs, prevs, zs, prev_zs)
        ]
        if self.small_carry and self.predictor.config.use_prev_mask:
            self._find_small(out, zs, prevs, prev_zs, ref_hu)
        return out

    def _grid_area_px(self, mask: np.ndarray) -> float:
        """Area of a slice mask as the model sees it, on its grid (px)."""
        grid = getattr(self.predictor.inputs, "grid_px", max(self.shape[1:]))
        return float(mask.sum()) * (grid / max(self.shape[1:])) ** 2

    def _find_small(self, out: list[np.ndarray], zs: Sequence[int], prevs: Sequence[np.ndarray], prev_zs: Sequence[int],
                    ref_hu: np.ndarray | Sequence[np.ndarray] | None) -> None:
        """Where a *small* carried mask (at most SMALL_CARRY_GRID_PX on the model's grid) came out
        empty, look for the structure again as a user would: a positive first click at the
        carried mask's deepest point, with the carried mask in the previous-mask channel. The
        answer is kept (in ``out``, in place) only if it passes ``accept_propagated`` (its
        intensity, its confidence) and overlaps the carried mask (Dice at least
        SMALL_CARRY_DICE); else the structure has ended there. The model, trained on pairs where
        structures end by tapering to small cross-sections, takes most small carried masks for
        ending ones (docs/design.md, "Volumes"): a lesion or a vessel would stop on the next slice."""
        redo = [i for i, (m, pv) in enumerate(zip(out, prevs))
                if not m.any() and pv.any() and self._grid_area_px(pv) <= SMALL_CARRY_GRID_PX]
        if not redo:
            return
        radius = self.click_size.radius_for(0)
        clicks = [[Click(*deepest_point(prevs[i]), True, radius)] for i in redo]
        probs = self._predict([zs[i] for i in redo], clicks, [prevs[i] for i in redo], [prev_zs[i] for i in redo])
        for i, pr in zip(redo, probs):
            z, pz, pv = zs[i], prev_zs[i], prevs[i]
            m = accept_propagated(pr, pv, self.threshold, image_hu=self.volume_hu[z], prev_hu=self.volume_hu[pz], ref_hu=ref_hu)
            if m.any() and dice(m, pv) >= SMALL_CARRY_DICE:
                out[i] = m

    def _propagate(self, z0: int, changed: dict[int, np.ndarray], stop_when_same: bool = True, max_slices: int | None = None,
                   grow_hu: np.ndarray | None = None, positive: bool | None = None) -> None:
        """Re-propagate outward from slice ``z0`` both ways (both directions in one batch).
        ``stop_when_same``: a slice that comes out as it was ends the run in that direction
        (what follows would come out the same); off, every slice within reach is recomputed.
        ``grow_hu``: HU of the tissue the run's masks may grow into (under the foreground click
        that started it, or of the mask set on ``z0``: ``_regrown``). ``positive``: the polarity
        of the click that started the run (None: no click, e.g. a mask set; ``_shrunk``)."""
        max_slices = self.max_slices if max_slices is None else max_slices
        anchored = {zz for zz, _ in self._clicks}
        fronts = {step: z0 for step in (1, -1) if self._mask[z0].any() or not self._run_reaches_anchor(z0, step, anchored)}
        done = {step: 0 for step in (1, -1)}
        guides = {step: self._negatives_on(z0) for step in fronts}  # background clicks each run carries along
        ref_hu = self._reference_hu(z0)
        while fronts:
            zs, prevs, steps = [], [], []
            for step, z in list(fronts.items()):
                nz = z + step
                if not 0 <= nz < self.shape[0] or (max_slices is not None and done[step] >= max_slices):
                    del fronts[step]
                    continue
                if nz in anchored:
                    if self._refresh_anchor(nz, self._mask[z], changed, z):
                        done[step] += 1
                        fronts[step] = nz  # carry on from the refreshed slice
                        guides[step] = guides[step] + self._negatives_on(nz)
                    else:
                        del fronts[step]
                    continue
                prev = self._mask[z]
                if not prev.any() and not self._mask[nz].any():  # ended here, and nothing stale beyond
                    del fronts[step]
                    continue
                zs.append(nz)
                prevs.append(prev)  # empty: the structure ended, so what lies beyond is cleared
                steps.append(step)
            if not zs:
                break
            todo = [(z, p, z - st) for z, p, st in zip(zs, prevs, steps) if p.any()]
            guide = [self._carried_negatives(z, p, guides[st]) for z, p, st in zip(zs, prevs, steps) if p.any()]
            new = dict(zip([t[0] for t in todo], self._propagation_step(*zip(*todo), ref_hu=ref_hu, clicks=guide))) if todo else {}
            for z, step in zip(zs, steps):
                m = new.get(z, np.zeros(self.shape[1:], bool))
                old = self._mask[z]
                if self._shrunk(m, old, positive) or self._regrown(z, m, old, grow_hu):
                    del fronts[step]  # ran into other tissue, or a foreground click would cut it: keep this slice's, stop
                    continue
                if not m.any() and old.any() and self._run_reaches_anchor(z - step, step, anchored):
                    # the carried mask ended, but the masks from here on come from a slice the
                    # user clicked on (the structure is there): keep them, end this direction
                    del fronts[step]
                    continue
                same = dice(m, old) >= self.same_dice  # 1 when both are empty
                if not np.array_equal(m, old):
                    changed.setdefault(z, np.packbits(old))
                    self._mask[z] = m
                done[step] += 1
                if same and m.any() and stop_when_same:  # the rest of this direction would come out the same
                    del fronts[step]
                else:
                    fronts[step] = z

    def _shrunk(self, new: np.ndarray, old: np.ndarray, positive: bool | None) -> bool:
        """Whether a run started by a foreground click (``positive``) would cut a slice's mask
        ``old`` down to ``new``: ``new`` lies (nine tenths) inside ``old`` and has less than
        ``shrink_limit`` of its area (an empty ``new`` too: the run does not shorten the
        structure either). Then the slice keeps ``old`` and the run stops there
        (``shrink_limit``; 0: off). The user said "more"; a run carrying a partial mask (a click beyond
        where the masks ended that found only part of the structure there) would otherwise
        replace the fuller masks it reaches by its own smaller one, slice after slice. Growth is
        ``_regrown``'s to judge. Background clicks' runs are not held: a run that removes a leak
        also carries the cleaner mask on where the leaky one had stopped (measured: holding them
        to removals lost on `spleen_8` and 3D-IRCADb; docs/design.md, "Volumes")."""
        if not (self.shrink_limit > 0 and positive) or not old.any():
            return False
        n = int(new.sum())
        return n < self.shrink_limit * int(old.sum()) and int((new & old).sum()) >= 0.9 * n

    def _regrown(self, z: int, new: np.ndarray, old: np.ndarray, grow_hu: np.ndarray | None = None) -> bool:
        """Whether a re-propagation's mask ``new`` for slice ``z`` took in other tissue around the
        slice's mask ``old``: over ``regrow_limit`` times its area, with an added part whose median
        HU is neither ``old``'s (within HU_SHIFT_MIN) nor the tissue the run started from
        (``grow_hu``, within ``intensity_jump_hu``'s tolerance: the disk of the foreground click
        that started it, so that a kidney whose first mask was its sinus, clicked on its cortex,
        grows into the cortex; or the mask set with ``set_slice_mask``)."""
        hu = self.volume_hu[z]
        if self.regrow_limit <= 0 or not old.any() or not grew_into_other_tissue(hu, old, new, self.regrow_limit):
            return False
        return grow_hu is None or intensity_jump_hu(hu[new & ~old], grow_hu) > 0

    def _negatives_on(self, z: int) -> list[tuple[int, Click, np.ndarray]]:
        """The background clicks of slice ``z`` as (z, click, HU of its disk there), for a
        propagation run to carry along (none when ``carry_negative_mm`` is 0)."""
        if self.carry_negative_mm <= 0 or self.spacing_mm is None:
            return []
        return [(z, c, click_disk_hu(self.volume_hu[z], c)) for c in self.slice_clicks(z) if not c.positive]

    def _carried_negatives(self, z: int, prev: np.ndarray, guides: Sequence[tuple[int, Click, np.ndarray]]) -> list[Click]:
        """The background clicks a run brings to slice ``z``: those of the clicked slices it came
        through, at most ``carry_negative_mm`` away (none without a spacing), whose point the
        carried mask ``prev`` leaves out and still lies on the tissue it was made on (the disk's
        median HU within ``intensity_jump_hu``'s tolerance of the click's own slice). What the
        user ruled out on one slice usually goes on in its neighbours (a touching organ, a bowel
        loop); without the click the model, shown only the carried mask, grows into it again one
        slice further. Where the point has moved onto other tissue (the target itself, widening
        over the spot where a touching organ ended), the click no longer applies."""
        if not guides:  # (none without a spacing: _negatives_on)
            return []
        dz = self.spacing_mm[0]
        return [c for zc, c, hu in guides if abs(z - zc) * dz <= self.carry_negative_mm and not prev[c.y, c.x]
                and intensity_jump_hu(click_disk_hu(self.volume_hu[z], c), hu) == 0]

    def _reference_hu(self, z0: int) -> tuple[np.ndarray, ...]:
        """The structure's intensity for a propagation run from slice ``z0`` (``accept_propagated``'s
        ``ref_hu``), from the slices with a foreground click and a mask:

        - the HU inside the mask of the reference slice: ``z0`` itself when it is one of them or
          there are none, else the nearest of them (a background click on a propagated slice near
          the structure's end must not make the touching organ there the reference);
        - where there are several, also the HU of all their masks pooled. A carried mask must
          match both. The pooled one keeps a touching organ out where the nearest clicked slice
          is a structure's end, whose mask mixes tissues (partial volume: a kidney's tip beside
          the liver) and so tolerates almost any HU (docs/design.md, "Volumes")."""
        pos = sorted({zz for zz, c in self._clicks if c.positive and self._mask[zz].any()})
        zr = z0 if not pos or z0 in pos else min(pos, key=lambda zz: (abs(zz - z0), zz))
        refs = (hu_sample(self.volume_hu[zr][self._mask[zr]]),)
        if len(pos) > 1:
            refs += (hu_sample(np.concatenate([self.volume_hu[zz][self._mask[zz]] for zz in pos])),)
        return refs

    def _refresh_anchor(self, z: int, carried: np.ndarray, changed: dict[int, np.ndarray], from_z: int) -> bool:
        """Propagation reached slice ``z``, which the user clicked on: predict it again from its
        own clicks with the ``carried`` mask of neighbour ``from_z`` as the previous mask (instead of its
        own, which an earlier, worse neighbour gave it). True when its mask changed (then the
        propagation goes on beyond it). An anchor is never emptied, nor refreshed from an empty
        neighbour, nor when its own mask is empty (the user's clicks there said: not here), nor
        when ``refresh_anchors`` is off."""
        if not self.refresh_anchors or not carried.any() or not self._mask[z].any():
            return False
        clicks = self.slice_clicks(z)
        m = self._predict_clicked(z, clicks, carried, from_z) >= self.threshold
        piece = clicked_piece(carried, clicks, last_only=False)
        if piece is not None:  # pieces of the carried mask the user's background clicks here ruled out
            m &= ~piece
        old = self._mask[z]
        if not m.any() or dice(m, old) >= self.same_dice:
            return False
        changed.setdefault(z, np.packbits(old))
        self._mask[z] = m
        return True

    def _predict_clicked(self, z: int, clicks: Sequence[Click], prev: np.ndarray | None, prev_z: int) -> np.ndarray:
        """Probability (Y, X) of slice ``z`` from its ``clicks`` and previous mask ``prev`` (lying on
        slice ``prev_z``): on the whole slice, or, on a slice whose first click was zoomed in
        (``ZoomOut.zoom_in``), on a crop around the object (``ZoomOut.follow_up``, as ``Session``)."""
        crop = None
        if self.zoom_out is not None and z in self._zoomed and prev is not None and prev.any() and clicks:
            crop = replace(self.zoom_out.follow_up, skip_clicks=0).crop(prev, clicks, self.shape[1:])
        if crop is None:
            return self._predict([z], [clicks], [prev], [prev_z])[0]
        sub, inside, sub_prev = crop_inputs(self.volume_hu[z], crop, clicks, prev)
        pi = None  # a 2.5D model is shown the neighbour's image on the same crop, as on the whole slice (_predict)
        if prev_z != z and self.predictor.config.prev_image:
            y0, x0, side = crop
            pi = [self.predictor.prepare(self.volume_hu[prev_z][y0 : y0 + side, x0 : x0 + side])]
        p = self.predictor.predict_prepared([self.predictor.prepare(sub)], [sub.shape], [inside], [sub_prev], None, pi)[0]
        return paste_crop(p, crop, self.shape[1:])

    def _run_reaches_anchor(self, z0: int, step: int, anchored: set[int]) -> bool:
        """Whether the run of masked slices next to ``z0`` in direction ``step`` leads to a slice
        the user clicked on: then those masks come from that slice, and an edit that empties
        ``z0`` must not clear them."""
        z = z0 + step
        while 0 <= z < self.shape[0] and self._mask[z].any():
            if z in anchored:
                return True
            z += step
        return False

    # -- actions ---------------------------------------------------------------------------
    def add_click(self, z: int, y: int, x: int, positive: bool = True, propagate: bool = True) -> np.ndarray:
        """Click on slice ``z`` at (y, x); update the slice, then (``propagate``) its neighbours.
        Returns the 3D mask (Z, Y, X) bool, a read-only view of the session's mask that later
        clicks, undo and clear change (``.copy()`` it to keep it). Raises ValueError outside the volume, for
        coordinates that are not whole indices and for a ``positive`` that is not a bool."""
        nz, h, w = self.shape
        z, y, x = pixel_index(z, "z"), pixel_index(y, "y"), pixel_index(x, "x")
        positive = click_polarity(positive)
        if not (0 <= z < nz and 0 <= y < h and 0 <= x < w):
            raise ValueError(f"click at (z={z}, y={y}, x={x}) is outside the volume ({nz} slices of {h}×{w} pixels)")
        t0 = time.perf_counter()
        click = Click(y, x, positive, agreeing_radius_px(self._mask[z], y, x, positive, self.next_radius_px(z), self.click_size.min_radius_px))
        edit = _Edit(self._clicks, {}, self._zoomed)
        prev = self._mask[z].copy()
        clicks = self.slice_clicks(z) + (click,)
        prob = self._predict_clicked(z, clicks, prev if prev.any() else None, z)
        if self.zoom_out is not None and prev.any() and z not in self._zoomed:
            focused = self.zoom_out.focus(self.predictor, self.volume_hu[z], prev, prob, clicks, self.threshold)
            prob = prob if focused is None else focused
        if self.zoom_out is not None and not prev.any() and len(clicks) == 1:
            how, p = self.zoom_out.first_view(self.predictor, self.volume_hu[z], prob, clicks, self._grid(z), self.threshold)
            if how == "out":  # a large structure: again, zoomed out
                p = self.zoom_out.predict(self.predictor, [self.volume_hu[z]], [clicks], [self._grid(z)])[0]
            if p is not None:  # on fat, zoomed in, or zoomed out
                prob = p
            if how == "in":
                self._zoomed = self._zoomed | {z}
        m = prob >= self.threshold
        piece = clicked_piece(prev, clicks)
        if piece is not None:  # a background click on a separate piece of this slice's mask: all of it goes
            m &= ~piece
        self._clicks = self._clicks + ((z, click),)
        grow_hu = click_disk_hu(self.volume_hu[z], click) if click.positive else None
        return self._commit(edit, z, m, t0, propagate, grow_hu=grow_hu, positive=click.positive)

    def view_first_click(self, z: int, view: str, propagate: bool = True) -> np.ndarray:
        """See slice ``z``'s only click, a foreground one, again in another view and keep that
        mask (then propagate from it, as a click does; undoable): ``"out"`` the slice shown
        zoomed out (the structure around the click, such as a whole organ or a kidney around
        its sinus), ``"in"`` a square of ``ZoomOut.zoom_in_fraction`` of the slice's longer side
        centred on the click (the clicked spot itself, such as a vein or a lesion in an organ;
        the slice's later clicks are then predicted on a crop, as after an automatic zoom-in),
        ``"full"`` the slice as it is, without ZoomOut's rules (``ZoomOut.view``). For a first
        click that took the wrong one of two nested structures, which a background click hardly
        undoes (docs/design.md, "Another view of a first click"). The masks it carries may grow
        into any tissue the new mask holds (as ``set_slice_mask``). Returns the 3D mask
        (Z, Y, X) bool. ValueError for another view name, or unless the slice's clicks are one
        foreground click."""
        z = self._slice(z)
        clicks = self.slice_clicks(z)
        _check_first_click(clicks, f"slice {z}")
        t0 = time.perf_counter()
        zo = self.zoom_out if self.zoom_out is not None else ZoomOut()
        hu = self.volume_hu[z]
        m = zo.view(self.predictor, hu, clicks, view, self._grid(z)) >= self.threshold
        edit = _Edit(self._clicks, {}, self._zoomed)
        self._zoomed = self._zoomed | {z} if view == "in" else self._zoomed - {z}
        grow_hu = hu_sample(hu[m]) if m.any() else None
        return self._commit(edit, z, m, t0, propagate, grow_hu=grow_hu)

    def set_slice_mask(self, z: int, mask: np.ndarray, propagate: bool = True, stop_when_same: bool = True,
                       max_slices: int | None = None) -> np.ndarray:
        """Put a mask on slice ``z`` (e.g. one drawn elsewhere) and propagate from it; undoable.
        The masks it carries may grow into any tissue the mask itself holds (``_regrown``).
        ``mask`` (Y, X): bool or 0 / 1 (ValueError for probabilities, another shape or a slice
        outside the volume). Returns the 3D mask (Z, Y, X) bool."""
        z = self._slice(z)
        if np.shape(mask) != self.shape[1:]:
            raise ValueError(f"mask {np.shape(mask)} does not match the slices {self.shape[1:]}")
        m = binary_mask(mask, "the slice's mask")
        grow_hu = hu_sample(self.volume_hu[z][m]) if m.any() else None
        return self._commit(_Edit(self._clicks, {}, self._zoomed), z, m, time.perf_counter(), propagate, stop_when_same,
                            max_slices, grow_hu)

    def set_mask(self, mask: np.ndarray) -> np.ndarray:
        """Replace the whole 3D mask with ``mask`` (Z, Y, X), bool or 0 / 1, e.g. a segmentation
        made earlier or by another tool, to be corrected by clicks from here on: nothing is
        predicted or propagated, and the clicks so far are forgotten (they made the old mask;
        a later re-propagation would otherwise re-predict their slices from them). Undoable,
        like a clear. ValueError for another shape or a probability map. Returns the 3D mask."""
        if np.shape(mask) != self.shape:
            raise ValueError(f"mask {np.shape(mask)} does not match the volume {self.shape}")
        self._replace(binary_mask(mask, "the mask"))
        self.last_latency_ms = None
        return self.mask

    def _replace(self, m: np.ndarray) -> None:
        """Make ``m`` (Z, Y, X) bool the 3D mask and forget the clicks, as one undoable step
        that keeps the slices it changes (``clear``, ``set_mask``)."""
        changed = np.nonzero((m != self._mask).any(axis=(1, 2)))[0]
        edit = _Edit(self._clicks, {int(z): np.packbits(self._mask[z]) for z in changed}, self._zoomed)
        self._mask[changed] = m[changed]
        self._clicks = ()
        self._zoomed = frozenset()
        self._undo.append(edit)
        self.last_changed = sorted(edit.slices)

    def _commit(self, edit: _Edit, z: int, m: np.ndarray, t0: float, propagate: bool,
                stop_when_same: bool = True, max_slices: int | None = None, grow_hu: np.ndarray | None = None,
                positive: bool | None = None) -> np.ndarray:
        """Put mask ``m`` on slice ``z``, propagate from it, and record ``edit`` for undo
        (``grow_hu``: the HU of the tissue the propagated masks may grow into, for ``_regrown``;
        ``positive``: the polarity of the click behind it, for ``_shrunk``)."""
        if not np.array_equal(m, self._mask[z]):
            edit.slices[z] = np.packbits(self._mask[z])
            self._mask[z] = m
        if propagate:
            self._propagate(z, edit.slices, stop_when_same, max_slices, grow_hu, positive)
        self._undo.append(edit)
        self.last_changed = sorted(edit.slices)
        self.last_latency_ms = (time.perf_counter() - t0) * 1000.0
        return self.mask

    def propagate_from(self, z: int, max_slices: int | None = None) -> np.ndarray:
        """Carry the mask of slice ``z`` through the volume, at most ``max_slices`` each way
        (default: the session's reach), recomputing every slice on the way (undoable). Returns
        the 3D mask (Z, Y, X) bool."""
        z = self._slice(z)
        return self.set_slice_mask(z, self._mask[z].copy(), propagate=True, stop_when_same=False, max_slices=max_slices)

    @property
    def nbytes(self) -> int:
        """Bytes this session holds besides the HU volume: the 3D mask, the undo history and the
        cached model inputs."""
        n = int(self._mask.nbytes)
        n += sum(int(p.nbytes) for edit in self._undo for p in edit.slices.values())
        n += sum(int(t.element_size() * t.nelement()) for t in self._grids.values())
        return n

    def clear(self) -> bool:
        """Empty the whole volume and forget the clicks (undoable). False when already empty."""
        if not self._clicks and not self._mask.any():
            return False
        self._replace(np.zeros(self.shape, bool))
        return True

    def undo(self) -> bool:
        """Undo the last action (click, propagation, clear or ``set_mask``), restoring the 3D mask exactly."""
        if not self._undo:
            return False
        edit = self._undo.pop()
        size = int(np.prod(self.shape[1:]))
        for z, packed in edit.slices.items():
            self._mask[z] = np.unpackbits(packed, count=size).reshape(self.shape[1:]).astype(bool)
        self._clicks = edit.clicks
        self._zoomed = edit.zoomed
        self.last_changed = sorted(edit.slices)
        return True

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)


def propagate(
    predictor: Predictor,
    volume_hu: np.ndarray,
    start_index: int,
    start_mask: np.ndarray,
    click_size: ClickSize | None = None,
    min_area_px: int = MIN_AREA_PX,
    max_slices: int | None = None,
) -> np.ndarray:
    """Carry a mask from slice ``start_index`` through its neighbours, both directions, with the
    same engine as ``VolumeSession`` (``accept_propagated`` decides where the structure ends).
    ``volume_hu``: (Z, Y, X); ``start_mask`` (Y, X) bool or 0 / 1; returns a (Z, Y, X) bool volume."""
    if np.ndim(volume_hu) != 3:
        raise ValueError(f"propagation needs a volume (Z, Y, X), got shape {np.shape(volume_hu)}")
    start_index = pixel_index(start_index, "start_index")
    if not 0 <= start_index < np.shape(volume_hu)[0]:
        raise ValueError(f"slice {start_index} is outside the volume of {np.shape(volume_hu)[0]} slices")
    vs = VolumeSession(predictor, volume_hu, click_size, max_slices=max_slices)
    vs.set_slice_mask(start_index, start_mask, propagate=False)
    if vs.mask[start_index].sum() >= min_area_px:
        vs.propagate_from(start_index)
    return vs.mask.copy()
