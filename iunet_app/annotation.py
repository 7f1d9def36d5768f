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
from iunet.inference import VolumeSession, ZoomOut
from iunet.io import CTVolume



ZOOM_OUT = ZoomOut()  # a large organ's first click is predicted again zoomed out (docs/design.md, "Zoom-out")
_VIEWS_KEPT = 4  # rendered pictures kept per kind and tab (Gradio copies each when it is sent)


class ReleasedError(Exception):
    """The tab's image was freed (page closed, idle, or memory needed elsewhere)."""


class Annotation:
    """One user's loaded CT and its 3D mask: the state behind one browser tab.

    The mask lives in one ``iunet.inference.VolumeSession`` (created at the first click, and
    again when the model changes): a click on any slice updates that slice and, for a volume,
    re-propagates outward from it (``propagate_clicks``); undo restores the previous 3D mask
    exactly; clear empties the volume. A single image is a volume of one slice.
    ``lock`` serialises one user's events (the queue may run two of them at once).
    ``session_hash`` names the browser session (to free it when the page closes);
    ``last_active`` is a time.monotonic() stamp of the last event.
    """

    def __init__(self, volume: CTVolume, name: str, click_size: ClickSize, session_hash: str = ""):
        self.volume = volume
        self.name = name
        self.z = volume.n_slices // 2
        self.click_size = click_size
        self.vs: VolumeSession | None = None
        self.checkpoint: str | None = None
        # what was done, in order, one entry per undoable step of ``vs`` (replayed on a model switch):
        # ("click", z, y, x, positive, radius_px, propagate), ("view", z, view, propagate),
        # ("propagate", z, max_slices), ("clear",), ("mask", packed 3D mask (np.packbits), its shape)
        self._actions: list[tuple] = []
        self.propagate_clicks = True
        self.lock = threading.RLock()
        self.session_hash = session_hash
        self.last_active = time.monotonic()
        self.show_weight_map = False
        self.released: str | None = None  # why the image was freed, once it is
        self._export_dir: str | None = None
        self._n_views = 0

    # -- reading -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self.volume.hu.shape[1:]  # type: ignore[return-value]

    @property
    def image_hu(self) -> np.ndarray:
        """The slice on view, (Y, X) float32 HU."""
        return self.volume.hu[self.z]

    def mask(self, z: int | None = None) -> np.ndarray:
        """The mask of slice ``z`` (default: the one on view), (Y, X) bool."""
        z = self.z if z is None else z
        return np.zeros(self.shape, bool) if self.vs is None else self.vs.mask[z]

    @property
    def clicks(self) -> tuple[Click, ...]:
        """The clicks on the slice on view."""
        return () if self.vs is None else self.vs.slice_clicks(self.z)

    @property
    def n_clicks(self) -> int:
        """Clicks on all slices."""
        return 0 if self.vs is None else len(self.vs.clicks)

    @property
    def last_latency_ms(self) -> float | None:
        return None if self.vs is None else self.vs.last_latency_ms

    def annotated_slices(self) -> list[int]:
        """Display slices (0-based, sorted) whose mask is not empty."""
        return [] if self.vs is None else self.vs.slices_with_mask()

    def mask_volume(self) -> np.ndarray:
        """The 3D mask, (Z, Y, X) bool (a copy)."""
        return np.zeros(self.volume.hu.shape, bool) if self.vs is None else self.vs.mask.copy()

    def volume_ml(self) -> float:
        """Volume of the 3D mask in mL (voxel size from the image's spacing)."""
        return 0.0 if self.vs is None else float(self.vs.volume_ml() or 0.0)

    def area_mm2(self, mask: np.ndarray) -> float:
        """Area of a (Y, X) mask in mm² (pixel spacing y · x)."""
        _, sy, sx = self.volume.spacing_mm
        return float(mask.sum()) * sy * sx

    @property
    def _propagates(self) -> bool:
        """Whether an action on a slice is carried to its neighbours (a volume, with the 3D box ticked)."""
        return self.propagate_clicks and self.volume.n_slices > 1

    def next_radius_px(self) -> float:
        return self.click_size.radius_for(int(self.mask().sum()))

    def nbytes(self) -> int:
        """Memory held for this tab: the HU volume and the volume session (3D mask, packed undo
        history, prepared model inputs), in bytes."""
        if self.released:
            return 0
        opened = sum(int(a[1].nbytes) for a in self._actions if a[0] == "mask")  # opened masks, kept for a replay
        return self.volume.nbytes + opened + (0 if self.vs is None else self.vs.nbytes)

    # -- acting --------------------------------------------------------------------------
    def check_alive(self) -> None:
        if self.released:
            raise ReleasedError(f"This tab's image was {self.released}. Load it again to continue.")

    def _session(self, predictor, checkpoint: str) -> VolumeSession:
        self.use_model(predictor, checkpoint)
        if self.vs is None:
            self.vs = VolumeSession(predictor, self.volume.hu, self.click_size, spacing_mm=self.volume.spacing_mm, zoom_out=ZOOM_OUT)
        return self.vs

    def add_click(self, predictor, checkpoint: str, y: int, x: int, positive: bool) -> list[int]:
        """Click at slice pixel (y, x) of the slice on view; for a volume the change is carried
        to the neighbouring slices (``propagate_clicks``). Returns the slices that changed.
        ValueError when (y, x) is outside the slice."""
        vs = self._session(predictor, checkpoint)
        propagate = self._propagates
        vs.add_click(self.z, y, x, positive, propagate=propagate)
        self._actions.append(("click", self.z, int(y), int(x), bool(positive), vs.clicks[-1][1].radius_px, propagate))
        return list(vs.last_changed)

    def view_first_click(self, predictor, checkpoint: str, view: str) -> list[int]:
        """See the only click of the slice on view again "out" (zoomed out: the structure
        around it) or "in" (zoomed in: the clicked spot), or "full"; carried to the neighbouring
        slices like a click (``propagate_clicks``); undoable. Returns the slices that changed.
        ValueError unless the slice has one click, a foreground one."""
        vs = self._session(predictor, checkpoint)
        propagate = self._propagates
        vs.view_first_click(self.z, view, propagate=propagate)
        self._actions.append(("view", self.z, view, propagate))
        return list(vs.last_changed)

    def open_mask(self, predictor, checkpoint: str, mask: np.ndarray) -> list[int]:
        """Make ``mask`` (Z, Y, X) bool, a segmentation of this CT made earlier or by another
        tool, the 3D mask, to be corrected by clicks (``VolumeSession.set_mask``: nothing is
        predicted, the clicks so far are forgotten); undoable. Returns the slices that changed."""
        vs = self._session(predictor, checkpoint)
        vs.set_mask(mask)
        self._actions.append(("mask", np.packbits(np.asarray(mask, bool)), tuple(np.shape(mask))))
        return list(vs.last_changed)

    def undo(self) -> bool:
        """Undo the last action (click, view, propagation, clear or opened mask) anywhere in the volume."""
        if self.vs is None or not self.vs.undo():
            return False
        if self._actions:
            self._actions.pop()
        return True

    def clear(self) -> bool:
        """Empty the whole 3D mask and forget the clicks (undoable). False when already empty."""
        if self.vs is None or not self.vs.clear():
            return False
        self._actions.append(("clear",))
        return True

    def set_click_size(self, click_size: ClickSize) -> None:
        """Size of the next clicks on every slice; clicks already made keep theirs."""
        self.click_size = click_size
        if self.vs is not None:
            self.vs.click_size = click_size

    def use_model(self, predictor, checkpoint: str) -> int:
        """Switch to another checkpoint: every action so far (clicks, each with its own size,
        first-click views, propagations, clears, opened masks; what undo had taken back is not) is replayed on
        it, in order, so the 3D mask is the new model's and Undo goes back through the same
        steps. Returns how many actions were replayed (0 also when the model did not change)."""
        if self.checkpoint == checkpoint:
            return 0
        old_actions, self.checkpoint = self._actions, checkpoint
        self.vs, self._actions = None, []
        if not old_actions:
            return 0
        vs = VolumeSession(predictor, self.volume.hu, self.click_size, spacing_mm=self.volume.spacing_mm, zoom_out=ZOOM_OUT)
        for action in old_actions:
            kind, args = action[0], action[1:]
            try:
                if kind == "click":
                    z, y, x, positive, radius_px, propagate = args
                    vs.click_size = ClickSize(radius_px, None)  # the click keeps its size
                    vs.add_click(z, y, x, positive, propagate=propagate)
                elif kind == "view":
                    z, view, propagate = args
                    vs.view_first_click(z, view, propagate=propagate)
                elif kind == "propagate":
                    z, max_slices = args
                    vs.propagate_from(z, max_slices=max_slices)
                elif kind == "mask":
                    packed, shape = args
                    vs.set_mask(np.unpackbits(packed, count=int(np.prod(shape))).reshape(shape).astype(bool))
                elif kind == "clear" and not vs.clear():
                    continue  # nothing to clear on the new model: not a step
            except ValueError:  # (not expected: the same clicks on the same slices) the step is left out
                continue
            self._actions.append(action)
        vs.click_size = self.click_size
        self.vs = vs
        return len(self._actions)

    def propagate(self, predictor, checkpoint: str, max_slices: int) -> list[int]:
        """Carry the mask of the slice on view through the volume, at most ``max_slices`` each
        way (undoable). Returns the slices that have a mask afterwards."""
        vs = self._session(predictor, checkpoint)
        vs.propagate_from(self.z, max_slices=max_slices)  # recomputes every slice within reach
        self._actions.append(("propagate", self.z, max_slices))
        return vs.slices_with_mask()

    # -- files and lifetime --------------------------------------------------------------
    def export_dir(self) -> Path:
        if self._export_dir is None or not Path(self._export_dir).is_dir():
            self._export_dir = tempfile.mkdtemp(prefix="iunet_app_")
        return Path(self._export_dir)

    def view_file(self, kind: str) -> Path:
        """A new file name for a rendered picture (``kind``: "slice" or "weights") in this tab's
        folder. Every picture gets its own name, so Gradio (which copies it into its cache by
        content) never reads a file that is being rewritten; only the last few are kept."""
        folder = self.export_dir() / "view"
        folder.mkdir(exist_ok=True)
        self._n_views += 1
        old = sorted(folder.glob(f"{kind}_*.png"), key=lambda p: int(p.stem.split("_")[-1]))
        for p in old[: max(len(old) - (_VIEWS_KEPT - 1), 0)]:
            p.unlink(missing_ok=True)
        return folder / f"{kind}_{self._n_views}.png"

    def cleanup(self) -> None:
        """Remove this user's exported files."""
        if self._export_dir:
            shutil.rmtree(self._export_dir, ignore_errors=True)
            self._export_dir = None

    def release(self, reason: str = "freed") -> None:
        """Free everything this tab holds (volume, mask, history, exports); idempotent."""
        with self.lock:
            self.cleanup()
            self.vs = None
            self._actions = []
            self.released = self.released or reason
            self.volume = _EMPTY_VOLUME


def _empty_volume() -> CTVolume:
    eye = np.diag([-1.0, -1.0, 1.0, 1.0])
    return CTVolume(np.zeros((1, 2, 2), np.float32), (1.0, 1.0, 1.0), eye, "image", eye, (2, 2, 1), description="freed")


_EMPTY_VOLUME = _empty_volume()


def file_stem(path: str | Path) -> str:
    """A safe base name for exported files: the upload's name without extension(s)."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".zip", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return name or "ct"
