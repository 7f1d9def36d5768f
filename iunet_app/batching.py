"""Micro-batching: the forward passes of concurrent users run together.

Every user's session (``iunet.inference.VolumeSession``) holds a :class:`BatchedPredictor`
instead of the shared predictor itself. It behaves like the predictor, but its
``predict_prepared`` builds the network's input in the caller's thread (click maps, geodesic
maps, previous mask: work that need not wait for the model), then hands it to
:class:`ForwardBatcher` and waits. One worker thread
takes everything that is queued when it becomes free (no waiting on purpose, so a lone user
pays nothing) and runs it as one forward pass per predictor, up to ``max_batch`` slices. While a
pass runs, newly arriving requests (clicks of other users, steps of their propagations) queue
up and form the next batch, so under load the model runs fewer, larger batches, which costs much
less per slice on a CPU. Numerically a slice's result does not depend on its batch neighbours.

On a ZeroGPU Space the forward pass instead runs in the GPU worker process
(:func:`iunet_app.models.infer_prepared`), one call per request.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from iunet.clicks import Click
from iunet.inference import Predictor


@dataclass
class _Request:
    predictor: Predictor
    inputs: torch.Tensor  # (B, C, G, G), as Predictor.build_inputs gives them
    shapes: list[tuple[int, int]]  # each slice's own (Y, X)
    boxes: list | None = None  # each slice's part of its grid (Predictor.predict_prepared); None: all of it
    result: list[np.ndarray] | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class ForwardBatcher:
    """Runs ``Predictor.predict_prepared`` requests of many threads in shared forward passes.

    ``max_batch``: the most slices one forward pass gets (a request larger than that runs on
    its own). Statistics for tests and logs: ``n_passes`` (forward passes run), ``n_requests``
    and ``largest_batch`` (slices).
    """

    def __init__(self, max_batch: int = 16):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.n_passes = 0
        self.n_requests = 0
        self.largest_batch = 0

    def predict_prepared(
        self,
        predictor: Predictor,
        images: Sequence[torch.Tensor],
        shapes_yx: Sequence[tuple[int, int]],
        clicks: Sequence[Sequence[Click]],
        prev_masks: Sequence[np.ndarray | None] | None = None,
        boxes: Sequence | None = None,
        prev_images: Sequence[torch.Tensor | None] | None = None,
    ) -> list[np.ndarray]:
        """Same as ``predictor.predict_prepared(...)``: float32 probabilities (Y, X) per slice;
        returns when the batch holding these slices has run. The input is built here, in the
        caller's thread; only the forward pass waits for the worker."""
        n = len(images)
        prevs = list(prev_masks) if prev_masks is not None else [None] * n
        if not (len(shapes_yx) == len(clicks) == len(prevs) == n):
            raise ValueError("images, shapes, clicks and previous masks must have the same length")
        shapes = [tuple(s) for s in shapes_yx]
        boxes = None if boxes is None else list(boxes)
        request = _Request(predictor, predictor.build_inputs(list(images), shapes, [list(c) for c in clicks], prevs, boxes, prev_images), shapes, boxes)
        self._ensure_worker()
        self._queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="iunet-forward-batcher", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        pending: list[_Request] = []
        while True:
            batch = pending or [self._queue.get()]
            pending = []
            size = len(batch[0].shapes)
            while size < self.max_batch:
                try:
                    r = self._queue.get_nowait()
                except queue.Empty:
                    break
                if size + len(r.shapes) > self.max_batch:
                    pending = [r]  # starts the next batch
                    break
                batch.append(r)
                size += len(r.shapes)
            try:
                self._run(batch)
            finally:
                for r in batch:
                    r.done.set()

    def _run(self, batch: list[_Request]) -> None:
        groups: dict[tuple, list[_Request]] = {}
        for r in batch:  # one pass per predictor and grid size (a zoomed-out view is smaller)
            groups.setdefault((id(r.predictor), tuple(r.inputs.shape[-2:])), []).append(r)
        for group in groups.values():
            predictor = group[0].predictor
            try:
                probs = predictor.forward_inputs(
                    torch.cat([r.inputs for r in group], 0), [s for r in group for s in r.shapes],
                    [b for r in group for b in (r.boxes or [None] * len(r.shapes))],
                )
                i = 0
                for r in group:
                    r.result = probs[i : i + len(r.shapes)]
                    i += len(r.shapes)
            except Exception:  # noqa: BLE001 - isolate the failing request, the others still run
                for r in group:
                    try:
                        r.result = predictor.forward_inputs(r.inputs, r.shapes, r.boxes)
                    except Exception as e:  # noqa: BLE001
                        r.error = e
            with self._lock:
                self.n_passes += 1
                self.n_requests += len(group)
                self.largest_batch = max(self.largest_batch, sum(len(r.shapes) for r in group))


BATCHER = ForwardBatcher()


class BatchedPredictor:
    """A shared predictor whose forward passes go through :data:`BATCHER` (or, on a ZeroGPU
    Space, through the GPU worker). Everything else (``prepare``, ``inputs``, ``config``,
    ``device``, …) is the predictor's own. ``checkpoint_path`` names it for the GPU worker."""

    def __init__(self, predictor: Predictor, checkpoint_path: str, batcher: ForwardBatcher | None = None):
        self._predictor = predictor
        self.checkpoint_path = checkpoint_path
        self._batcher = batcher

    @property
    def unwrapped(self) -> Predictor:
        return self._predictor

    def __getattr__(self, name: str):
        return getattr(self._predictor, name)

    def predict_prepared(self, images, shapes_yx, clicks, prev_masks=None, boxes=None, prev_images=None) -> list[np.ndarray]:
        from .models import infer_prepared, on_zerogpu

        if on_zerogpu():
            cpu = [t.detach().cpu() for t in images]
            pis = None if prev_images is None else [None if t is None else t.detach().cpu() for t in prev_images]
            return infer_prepared(self.checkpoint_path, cpu, list(shapes_yx), [list(c) for c in clicks], prev_masks, boxes, pis)
        return (self._batcher or BATCHER).predict_prepared(self._predictor, images, shapes_yx, clicks, prev_masks, boxes, prev_images)

    def predict(self, image_hu: np.ndarray, clicks: Sequence[Click] = (), prev_mask: np.ndarray | None = None) -> np.ndarray:
        img = np.asarray(image_hu)
        return self.predict_prepared([self.prepare(img)], [img.shape], [list(clicks)], [prev_mask])[0]


_PROXIES: dict[int, BatchedPredictor] = {}
_PROXIES_LOCK = threading.Lock()


def batched(predictor: Predictor, checkpoint_path: str) -> BatchedPredictor:
    """The one :class:`BatchedPredictor` of a shared predictor (so that sessions of different
    users that use the same model see the same predictor object)."""
    with _PROXIES_LOCK:
        proxy = _PROXIES.get(id(predictor))
        if proxy is None or proxy.unwrapped is not predictor:
            proxy = _PROXIES[id(predictor)] = BatchedPredictor(predictor, checkpoint_path)
        return proxy
