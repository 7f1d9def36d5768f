"""Micro-batching: clicks of concurrent users run in one forward pass.

Each click handler hands its (session, click) to :class:`ClickBatcher` and waits. One worker
thread takes everything that is queued when it becomes free (no waiting on purpose, so a lone
user pays nothing) and runs it through :func:`iunet.inference.step_sessions`, one forward pass
per predictor. While a batch runs, newly arriving clicks queue up and form the next batch, so
under load the model runs fewer, larger batches, which costs much less per click on a CPU.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

from iunet.inference import Session, step_sessions


@dataclass
class _Request:
    session: Session
    point: tuple[int, int, bool]  # (y, x, positive)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class ClickBatcher:
    """Runs clicks (one per session) in batched forward passes on a worker thread.

    ``max_batch``: the largest batch one forward pass gets. Statistics for tests and logs:
    ``n_batches``, ``n_clicks`` and ``largest_batch``.
    """

    def __init__(self, max_batch: int = 16):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.n_batches = 0
        self.n_clicks = 0
        self.largest_batch = 0

    def add_click(self, session: Session, y: int, x: int, positive: bool) -> None:
        """Add the click (y, x) to ``session`` and predict; returns when the session holds the
        new mask. Raises what the click raised (e.g. ValueError outside the image)."""
        session.make_click(y, x, positive)  # validate here, so a bad click never joins a batch
        request = _Request(session, (int(y), int(x), bool(positive)))
        self._ensure_worker()
        self._queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="iunet-click-batcher", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._run(batch)
            finally:
                for r in batch:
                    r.done.set()

    def _run(self, batch: list[_Request]) -> None:
        # one forward pass per predictor; a session appears at most once per pass
        groups: list[list[_Request]] = []
        for r in batch:
            for g in groups:
                if g[0].session.predictor is r.session.predictor and all(o.session is not r.session for o in g):
                    g.append(r)
                    break
            else:
                groups.append([r])
        for g in groups:
            try:
                step_sessions([r.session for r in g], [r.point for r in g])
            except Exception as e:  # noqa: BLE001 - isolate the failing click, the others still run
                if len(g) == 1:
                    g[0].error = e
                    continue
                for r in g:
                    try:
                        step_sessions([r.session], [r.point])
                    except Exception as e:  # noqa: BLE001
                        r.error = e
            with self._lock:
                self.n_batches += 1
                self.n_clicks += len(g)
                self.largest_batch = max(self.largest_batch, len(g))



BATCHER = ClickBatcher()


def run_click(checkpoint: str, session: Session, y: int, x: int, positive: bool) -> None:
    """Add a click to ``session`` and predict: batched with other users' clicks, or on a ZeroGPU
    Space in the GPU worker (where the prediction is computed outside the session)."""
    from .models import infer_click, on_zerogpu

    if on_zerogpu():
        click = session.make_click(y, x, positive)
        probability, ms = infer_click(checkpoint, session.image_hu, session.clicks + (click,), session.probability)
        session.add_prediction(click, probability, ms)
    else:
        BATCHER.add_click(session, y, x, positive)
