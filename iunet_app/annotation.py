"""One browser tab's work: the loaded CT, the clicks and masks of each slice, and its exports.

Axis order follows the project: (Z, Y, X) volumes, (Y, X) slices, (y, x) clicks, all in pixels
of the loaded CT (display orientation, see iunet.io). Nothing here is shared between tabs.
"""
from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from iunet.clicks import Click, ClickSize
from iunet.inference import Predictor, Session
from iunet.io import CTVolume

from . import batching, models


class ReleasedError(Exception):
    """The tab's image was freed (page closed, idle, or memory needed elsewhere)."""


class Annotation:
    """One user's loaded CT and masks: the state behind one browser tab.

    Each slice the user clicked on has its own iunet ``Session`` (clicks, undo history);
    ``base_masks`` holds masks that no click on that slice made (propagated from a neighbour, or
    kept from a previous model). A session started on a slice with a base mask starts from it.
    ``lock`` serialises one user's events (the queue may run two of them at once).
    ``session_hash`` names the browser session (to free it when the page closes);
    ``last_active`` is a time.monotonic() stamp of the last event.
    """

    def __init__(self, volume: CTVolume, name: str, click_size: ClickSize, session_hash: str = ""):
        self.volume = volume
        self.name = name
        self.z = volume.n_slices // 2
        self.click_size = click_size
        self.sessions: dict[int, Session] = {}
        self.base_masks: dict[int, np.ndarray] = {}
        self.checkpoint: str | None = None
        self.lock = threading.RLock()
        self.session_hash = session_hash
        self.last_active = time.monotonic()
        self.show_weight_map = False
        self.released: str | None = None  # why the image was freed, once it is
        self._export_dir: str | None = None

    # -- reading -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self.volume.hu.shape[1:]  # type: ignore[return-value]

    @property
    def image_hu(self) -> np.ndarray:
        """The slice on view, (Y, X) float32 HU."""
        return self.volume.hu[self.z]

    @property
    def session(self) -> Session | None:
        return self.sessions.get(self.z)

    def mask(self, z: int | None = None) -> np.ndarray:
        """The mask of slice ``z`` (default: the one on view), (Y, X) bool."""
        z = self.z if z is None else z
        if z in self.sessions:
            return self.sessions[z].mask
        base = self.base_masks.get(z)
        return np.zeros(self.shape, bool) if base is None else base

    @property
    def clicks(self) -> tuple[Click, ...]:
        s = self.session
        return () if s is None else s.clicks

    def annotated_slices(self) -> list[int]:
        """Display slices (0-based, sorted) whose mask is not empty."""
        return sorted(z for z in set(self.sessions) | set(self.base_masks) if self.mask(z).any())

    def mask_volume(self) -> np.ndarray:
        """Every slice's mask, (Z, Y, X) bool."""
        out = np.zeros(self.volume.hu.shape, bool)
        for z in set(self.sessions) | set(self.base_masks):
            out[z] = self.mask(z)
        return out

    def area_mm2(self, mask: np.ndarray) -> float:
        """Area of a (Y, X) mask in mm² (pixel spacing y · x)."""
        _, sy, sx = self.volume.spacing_mm
        return float(mask.sum()) * sy * sx

    def next_radius_px(self) -> float:
        return self.click_size.radius_for(int(self.mask().sum()))

    def nbytes(self) -> int:
        """Memory held for this tab: HU volume, masks and every slice's click history (bytes)."""
        if self.released:
            return 0
        h, w = self.shape
        history = sum(len(s.clicks) + 1 for s in self.sessions.values()) * h * w * 4
        return self.volume.nbytes + len(self.base_masks) * h * w + history

    # -- acting --------------------------------------------------------------------------
    def check_alive(self) -> None:
        if self.released:
            raise ReleasedError(f"This tab's image was {self.released}. Load it again to continue.")

    def _new_session(self, predictor: Predictor) -> Session:
        return Session(predictor, self.image_hu, self.click_size, initial_mask=self.base_masks.get(self.z))

    def add_click(self, predictor: Predictor, checkpoint: str, y: int, x: int, positive: bool) -> Session:
        """Add a click at slice pixel (y, x) and predict; ValueError when (y, x) is outside the slice."""
        self.use_model(predictor, checkpoint)
        session = self.sessions.get(self.z) or self._new_session(predictor)
        batching.run_click(checkpoint, session, y, x, positive)
        self.sessions[self.z] = session
        return session

    def undo(self) -> bool:
        s = self.session
        if s is None or not s.undo():
            return False
        if not s.clicks and self.z not in self.base_masks:
            del self.sessions[self.z]
        return True

    def reset(self) -> bool:
        """Clear the slice on view (its clicks and its mask). False when it had neither."""
        had = self.z in self.sessions or self.z in self.base_masks
        self.sessions.pop(self.z, None)
        self.base_masks.pop(self.z, None)
        return had

    def set_click_size(self, click_size: ClickSize) -> None:
        """Size of the next clicks on every slice; clicks already made keep theirs."""
        self.click_size = click_size
        for s in self.sessions.values():
            s.click_size = click_size

    def use_model(self, predictor: Predictor, checkpoint: str) -> bool:
        """Switch to another checkpoint. The slice on view is re-segmented by replaying its clicks
        on the new model; masks of other slices are kept as they are. True when the model changed."""
        if self.checkpoint == checkpoint:
            return False
        old, self.checkpoint = self.checkpoint, checkpoint
        if old is None:
            return True
        replay = self.sessions.pop(self.z, None)
        for z, s in self.sessions.items():
            self.base_masks[z] = s.mask
        self.sessions = {}
        if replay is not None:
            for c in replay.clicks:
                self.add_click(predictor, checkpoint, c.y, c.x, c.positive)
        return True

    def propagate(self, predictor: Predictor, checkpoint: str, max_slices: int) -> tuple[int, int]:
        """Carry the mask on view through the neighbouring slices (iunet.inference.propagate).

        Slices the user clicked on keep their own masks; every other slice takes the propagated
        one. Returns the (first, last) slice index that has a mask afterwards.
        """
        self.use_model(predictor, checkpoint)
        result = models.infer_propagate(checkpoint, self.volume.hu, self.z, self.mask(), self.click_size, max_slices)
        for z in range(result.shape[0]):
            if z == self.z or (z in self.sessions and self.sessions[z].clicks):
                continue
            self.sessions.pop(z, None)
            if result[z].any():
                self.base_masks[z] = result[z]
            else:
                self.base_masks.pop(z, None)
        filled = self.annotated_slices()
        return filled[0], filled[-1]

    # -- files and lifetime --------------------------------------------------------------
    def export_dir(self) -> Path:
        if self._export_dir is None or not Path(self._export_dir).is_dir():
            self._export_dir = tempfile.mkdtemp(prefix="iunet_app_")
        return Path(self._export_dir)

    def cleanup(self) -> None:
        """Remove this user's exported files."""
        if self._export_dir:
            shutil.rmtree(self._export_dir, ignore_errors=True)
            self._export_dir = None

    def release(self, reason: str = "freed") -> None:
        """Free everything this tab holds (volume, masks, history, exports); idempotent."""
        with self.lock:
            self.cleanup()
            self.sessions = {}
            self.base_masks = {}
            self.released = self.released or reason
            self.volume = _EMPTY_VOLUME


def _empty_volume() -> CTVolume:
    eye = np.diag([-1.0, -1.0, 1.0, 1.0])
    return CTVolume(np.zeros((1, 2, 2), np.float32), (1.0, 1.0, 1.0), eye, "image", eye, (2, 2, 1), description="freed")


_EMPTY_VOLUME = _empty_volume()


def file_stem(path: str | Path) -> str:
    """A safe base name for exported files: the upload's name without extension(s)."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".dcm", ".zip", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return name or "ct"
