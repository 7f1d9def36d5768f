"""Every open tab's annotation and the memory it holds, with a hard budget.

The bound: the annotations of all tabs together hold at most ``budget_bytes`` (CT volumes as
float32 HU, masks, click history). A new image is admitted only if it fits: the loader is told
how many voxels are left (``room_voxels``) and refuses a larger file from its header, before
decoding. To make room, annotations idle for more than ``evict_idle_s`` are freed (oldest
first); an annotation is also freed when its page closes (Gradio's unload event), when its tab
has been idle for ``idle_s`` (a sweeper thread, and gr.State's time_to_live), or when its tab
loads another image. A freed tab sees a message asking it to load the image again.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

log = logging.getLogger("iunet.app")
HU_BYTES_PER_VOXEL = 4  # float32


def return_memory_to_os() -> None:
    """Ask glibc to give freed heap memory back to the system (``malloc_trim``); without it the
    process keeps the pages of freed images (about 100 MB after a 129-slice series) for reuse.
    Does nothing where glibc is not the C library."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Tracked(Protocol):
    session_hash: str
    last_active: float

    def nbytes(self) -> int: ...

    def release(self, reason: str) -> None: ...


class MemoryBudgetError(Exception):
    """No room for another image now; the message says so in words a user understands."""


class SessionRegistry:
    """The live annotations (one per browser tab) and their memory.

    ``budget_bytes``: the most all annotations together may hold. ``idle_s``: a tab idle this
    long is freed by :meth:`release_idle`. ``evict_idle_s``: when a new image needs room, tabs
    idle this long are freed first (oldest first).
    """

    def __init__(self, budget_bytes: int, idle_s: float, evict_idle_s: float = 300.0):
        if budget_bytes <= 0 or idle_s <= 0:
            raise ValueError("budget_bytes and idle_s must be positive")
        self.budget_bytes = int(budget_bytes)
        self.idle_s = float(idle_s)
        self.evict_idle_s = float(evict_idle_s)
        self._items: dict[int, Tracked] = {}
        self._reserved = 0
        self._lock = threading.RLock()
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, item: object) -> bool:
        with self._lock:
            return id(item) in self._items and self._items[id(item)] is item

    def total_bytes(self) -> int:
        """Bytes held by all registered annotations now (plus loads in progress)."""
        with self._lock:
            return sum(a.nbytes() for a in self._items.values()) + self._reserved

    # -- admission -------------------------------------------------------------------------
    def reserve(self, replacing: Tracked | None, max_bytes: int) -> int:
        """Make room for a new image of up to ``max_bytes`` and reserve it; returns the bytes
        reserved (≤ max_bytes; what is left of the budget when that is less). ``replacing`` is
        the tab's current annotation, whose memory will be freed by the load. Idle tabs are freed
        to make room. Raises MemoryBudgetError when not even one 512×512 slice (or ``max_bytes``) fits. Pair every
        reserve with :meth:`unreserve`."""
        with self._lock:
            others = [a for a in self._items.values() if a is not replacing]
            used = sum(a.nbytes() for a in others) + self._reserved
            if used + max_bytes > self.budget_bytes:
                now = time.monotonic()
                for a in sorted(others, key=lambda a: a.last_active):
                    if used + max_bytes <= self.budget_bytes or now - a.last_active < self.evict_idle_s:
                        break
                    used -= a.nbytes()
                    self._release_locked(a, "freed to make room for another user's image")
            room = min(max_bytes, self.budget_bytes - used)
            if room < min(max_bytes, 512 * 512 * HU_BYTES_PER_VOXEL):
                n = len([a for a in self._items.values() if a is not replacing])
                raise MemoryBudgetError(
                    f"The server is at its memory limit: {n} other open image(s) hold {used / 1e6:,.0f} MB of "
                    f"{self.budget_bytes / 1e6:,.0f} MB. Try again in a few minutes (idle images are freed after "
                    f"{self.evict_idle_s / 60:.0f} minutes)."
                )
            self._reserved += room
            return room

    def unreserve(self, n_bytes: int) -> None:
        with self._lock:
            self._reserved = max(self._reserved - int(n_bytes), 0)

    def add(self, item: Tracked) -> None:
        """Register a new annotation (after its image was loaded within a reservation)."""
        with self._lock:
            item.last_active = time.monotonic()
            self._items[id(item)] = item

    def touch(self, item: Tracked) -> None:
        """Mark activity (any event of the tab)."""
        item.last_active = time.monotonic()

    # -- freeing ---------------------------------------------------------------------------
    def _release_locked(self, item: Tracked, reason: str) -> None:
        self._items.pop(id(item), None)
        try:
            item.release(reason)
        except Exception:  # noqa: BLE001 - freeing must never fail the caller
            log.exception("releasing an annotation failed")

    def release(self, item: Tracked, reason: str = "freed") -> None:
        """Free an annotation's memory and forget it (idempotent)."""
        with self._lock:
            self._release_locked(item, reason)
        return_memory_to_os()

    def release_session(self, session_hash: str, reason: str = "freed after the page was closed") -> int:
        """Free every annotation of a browser session (its page was closed). Returns how many."""
        with self._lock:
            items = [a for a in self._items.values() if a.session_hash and a.session_hash == session_hash]
            for a in items:
                self._release_locked(a, reason)
        if items:
            return_memory_to_os()
        return len(items)

    def release_idle(self, now: float | None = None) -> int:
        """Free annotations idle for longer than ``idle_s``. Returns how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [a for a in self._items.values() if now - a.last_active > self.idle_s]
            for a in idle:
                self._release_locked(a, f"freed after {self.idle_s / 60:.0f} minutes without activity")
        if idle:
            return_memory_to_os()
        return len(idle)

    def start_sweeper(self, interval_s: float = 30.0) -> None:
        """Run :meth:`release_idle` every ``interval_s`` seconds on a daemon thread."""
        with self._lock:
            if self._sweeper is not None and self._sweeper.is_alive():
                return
            self._stop.clear()

            def sweep() -> None:
                while not self._stop.wait(interval_s):
                    n = self.release_idle()
                    if n:
                        log.info("freed %d idle annotation(s); %d open, %.0f MB", n, len(self), self.total_bytes() / 1e6)

            self._sweeper = threading.Thread(target=sweep, name="iunet-idle-sweeper", daemon=True)
            self._sweeper.start()

    def stop_sweeper(self) -> None:
        self._stop.set()
