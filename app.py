"""Interactive CT segmentation in the browser: a Gradio web app around iunet's Predictor/Session.

    python app.py [--weights-dir weights] [--host 127.0.0.1] [--port 7860] [--share]

Upload a CT (DICOM file, series or .zip, NIfTI, NRRD, MetaImage, PNG/JPEG), click foreground / background, watch
the mask follow (on a volume, in 3D); undo, clear, propagate through the volume and export (NIfTI, PNG,
DICOM-SEG).

This file is the UI layer and the Hugging Face Spaces entry point. Every event handler is a
plain function ``(state, values…) → (state, image, weight map, info, status, extras…)`` so tests
can call it directly; the state is one :class:`iunet_app.annotation.Annotation` per browser tab
(gr.State), never shared between users, while the predictors (one per checkpoint) are loaded
once and shared (:mod:`iunet_app.models`). Gradio reports a click as (x, y) on the displayed
image; ``on_select`` turns it into slice pixels (y, x) once, and from there on everything is
(y, x). Slices are numbered from 1 in the page (slider, text, file names) and from 0 in code.
See docs/app.md for the user guide.
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

try:  # On a ZeroGPU Space, import `spaces` before torch (see iunet_app.models.gpu_task).
    import spaces  # type: ignore[import-not-found]  # noqa: F401
except ImportError:
    pass

import argparse  # noqa: E402
import functools  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from iunet.clicks import DEFAULT_ALPHA, MAX_RADIUS_PX, MIN_RADIUS_PX, ClickSize, format_alpha, parse_alpha  # noqa: E402
from iunet.io import (  # noqa: E402
    ACCEPTED_INPUTS, export_dicom_seg, load_ct, read_dicom_seg_mask, read_nifti_mask, save_mask_nifti, save_mask_png,
)
from iunet.io.volume import CTTooLargeError, without_paths  # noqa: E402
from iunet.phantom import write_phantom_nifti  # noqa: E402
from iunet.windowing import WINDOW_PRESETS  # noqa: E402
from iunet_app import models, rendering  # noqa: E402
from iunet_app.batching import BatchedPredictor, batched  # noqa: E402
from iunet_app.annotation import Annotation, ReleasedError, file_stem  # noqa: E402
from iunet_app.sessions import HU_BYTES_PER_VOXEL, MemoryBudgetError, SessionRegistry  # noqa: E402

log = logging.getLogger("iunet.app")

REPO_DIR = Path(__file__).resolve().parent
FOREGROUND, BACKGROUND = "Foreground (add)", "Background (remove)"
DYNAMIC, FIXED = "Dynamic: α · mask area", "Fixed radius"
# The paper's two dynamic click sizes, always offered in the α control after the selected model's
# own α (see _click_defaults). The control's values are texts that iunet.clicks.parse_alpha reads.
PAPER_ALPHAS = (DEFAULT_ALPHA, 1 / 500)
CUSTOM_WINDOW = "custom"
DEFAULT_PRESET = "abdomen"
MAX_PROPAGATE_SLICES = 500
# Each user's volume stays in memory as float32 HU: 1000 slices of 512² is 1 GB. Larger inputs
# (e.g. a .nii.gz that unpacks to several GB) are refused from their header, before decoding.
MAX_VOXELS = 512 * 512 * 1000
MIN_SLICE_PX = 16  # smaller images cannot be clicked on meaningfully
MAX_UPLOAD = "200mb"


@dataclass(frozen=True)
class AppConfig:
    """Everything ``python app.py`` can be told (flags and environment variables)."""

    weights_dir: str = str(REPO_DIR / "weights")
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    concurrency: int = 4  # events other than clicks run at once over all users; more only queue
    max_file_size: str = MAX_UPLOAD
    precision: str = "auto"  # model arithmetic: auto (bf16 where the CPU has it), fp32, bf16
    memory_mb: int = 6000  # all tabs' images, masks and click history together
    idle_minutes: float = 30.0  # a tab without any action for this long is freed
    click_batch: int = 16  # concurrent clicks run in one forward pass, up to this many


def _typed_component(base: type) -> type:
    """A subclass of the Gradio component ``base`` (gr.Slider, gr.Number), drawn by Gradio's own
    widget, whose typed-in value reaches the handlers even when it lies outside the component's
    range (or is empty): Gradio's own range check raises before the handler runs, and its error
    state blanks the picture. The handlers check every value themselves and say what is wrong
    in the app's words, keeping the picture (``_number``, ``on_slice``, ``_click_size``).

    A subclass, not a per-instance override, because Gradio rebuilds a component from its class
    when an event updates its properties (the slice slider's range on every upload). Gradio
    writes a type-stub file next to the module of every new component class; that is switched
    off while this one is made, so the app never writes into its own folder."""
    from gradio import component_meta

    def preprocess(self, payload):
        return None if payload is None else gr.Number.round_to_precision(payload, self.precision)

    write_stub = getattr(component_meta, "create_or_modify_pyi", None)  # (Gradio 6; absent elsewhere: nothing to switch off)
    if write_stub is not None:
        component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        return type(f"Typed{base.__name__}", (base,), {"is_template": True, "preprocess": preprocess, "__module__": __name__})
    finally:
        if write_stub is not None:
            component_meta.create_or_modify_pyi = write_stub


TypedSlider = _typed_component(gr.Slider)
TypedNumber = _typed_component(gr.Number)


class AppError(Exception):
    """A problem the user can fix; its message is shown in the page as it is."""


# --------------------------------------------------------------------------- shared, read-only

_MODELS = models.ModelSet()
SESSIONS = SessionRegistry(budget_bytes=AppConfig.memory_mb * 10**6, idle_s=AppConfig.idle_minutes * 60)


def configure(weights_dir: str | Path, device: str = "auto", precision: str = "auto") -> models.ModelSet:
    """List the interactive checkpoints in ``weights_dir`` and load each once (shared by all users)."""
    global _MODELS
    _MODELS = models.configure(weights_dir, device, precision)
    for p in _MODELS.problems:
        log.warning("checkpoint skipped: %s", p)
    return _MODELS


def configure_sessions(memory_mb: float, idle_minutes: float) -> SessionRegistry:
    """Set the memory budget (MB, 10⁶ bytes) and idle time of the tabs; open tabs are kept."""
    SESSIONS.budget_bytes = int(memory_mb * 10**6)
    SESSIONS.idle_s = float(idle_minutes) * 60
    return SESSIONS


def _checkpoint(model: str | None) -> models.CheckpointInfo | None:
    """The checkpoint the model menu names (by file name), or None."""
    return next((c for c in _MODELS.checkpoints if c.file_name == model), None)


def _predictor(model: str | None) -> tuple[BatchedPredictor, str]:
    """The shared predictor of the checkpoint chosen in the model menu (its forward passes
    batched with other users'), and the checkpoint's path."""
    if not _MODELS.checkpoints:
        raise AppError(_no_models_message())
    info = _checkpoint(model)
    if info is None:
        raise AppError("Choose a model in the **Model** menu first.")
    return batched(models.get_predictor(info.path), info.path), info.path


def _no_models_message() -> str:
    return (
        f"No model found: there is no interactive checkpoint (`*.safetensors`) in `{_MODELS.weights_dir}`. "
        "Put the IU-Net weights there, or start the app with `--weights-dir DIR` "
        "(or the environment variable `IUNET_WEIGHTS_DIR`). You can still load and view images."
    )


def _model_label(model: str | None) -> str:
    """Label of a checkpoint given by file name (menu value) or path (state)."""
    for c in _MODELS.checkpoints:
        if model in (c.file_name, c.path):
            return c.label
    return "none"


# --------------------------------------------------------------------------- views

def _status(message: str, problem: bool = False) -> str:
    return f"⚠️ **{message}**" if problem else message


def _warn(message: str) -> None:
    gr.Warning(message)


def _slices_text(zs: list[int]) -> str:
    """0-based slice indices → "3–7, 9" in 1-based page numbers."""
    runs, start = [], None
    for i, z in enumerate(zs):
        if start is None:
            start = z
        if i + 1 == len(zs) or zs[i + 1] != z + 1:
            runs.append(f"{start + 1}" if start == z else f"{start + 1}–{z + 1}")
            start = None
    return ", ".join(runs)


def _info(state: Annotation | None, model: str | None) -> str:
    info = _checkpoint(model)
    device = "–" if info is None else models.describe_device(models.get_predictor(info.path))
    lines = []
    if state is None or state.released:
        lines.append("**Image:** none yet: upload a CT or pick an example.")
    else:
        vol = state.volume
        mask = state.mask()
        n_px = int(mask.sum())
        clicks = state.clicks
        n_pos = sum(c.positive for c in clicks)
        _, sy, sx = vol.spacing_mm
        source = vol.slice_source(state.z)
        of_file = f" ({source.file_name})" if source is not None and vol.n_slices > 1 else ""
        lines.append(f"**Slice {state.z + 1} / {vol.n_slices}**{of_file} · {vol.description}")
        lines.append(
            f"**Mask area:** {n_px:,} px = **{state.area_mm2(mask):,.1f} mm²** (pixel {sy:.3g} × {sx:.3g} mm)"
        )
        lines.append(
            f"**Clicks:** {len(clicks)} ({n_pos} foreground, {len(clicks) - n_pos} background) · "
            f"next click radius {state.next_radius_px():.1f} px ({_describe_click_size(state.click_size, model)})"
        )
        if vol.n_slices > 1:
            annotated = state.annotated_slices()
            where = f" ({_slices_text(annotated)})" if annotated else ""
            lines.append(
                f"**3D:** {len(annotated)} of {vol.n_slices} slices with a mask{where} · "
                f"**{state.volume_ml():,.2f} mL** · {state.n_clicks} click{'s' if state.n_clicks != 1 else ''} in all"
            )
        latency = "–" if state.last_latency_ms is None else f"{state.last_latency_ms:.0f} ms"
        lines.append(f"**Last action:** {latency} model time")
    lines.append(f"**Model:** {_model_label(model)} · **Device:** {device}")
    return "  \n".join(lines)


def _heat(state: Annotation | None, scale: int | None = None):
    """The weight map when it is shown (computing it costs ~25–50 ms at 512²), else no update."""
    if state is None or state.released:
        return None
    if not state.show_weight_map:
        return gr.skip()
    scale = scale or rendering.display_scale(state.shape)
    return rendering.save_png(rendering.render_weight_map(state.mask(), state.clicks, scale), state.view_file("weights"))


def _view(state: Annotation | None, model: str | None, level: float, width: float, status: str) -> tuple:
    """(state, image, weight map, info, status) for the slice on view; pictures as PNG file paths."""
    if state is None or state.released:
        return state, None, None, _info(None, model), status
    scale = rendering.display_scale(state.shape)
    rgb = rendering.render_slice(state.image_hu, _number(level, "window level"), _width(width), state.mask(), state.clicks, scale)
    image = rendering.save_png(rgb, state.view_file("slice"))  # a file: Gradio copies it atomically
    return state, image, _heat(state, scale), _info(state, model), status


def _number(value: Any, what: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise AppError(f"Enter a number for the {what}.")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AppError(f"The {what} must be a number, got {value!r}.") from None
    if not np.isfinite(v):
        raise AppError(f"The {what} must be a finite number.")
    return v


def _width(value: Any) -> float:
    w = _number(value, "window width")
    if w <= 0:
        raise AppError("The window width must be more than 0 HU.")
    return w


def _check_window(level: Any, width: Any) -> None:
    """Refuse a display window the picture cannot be drawn with *before* a handler changes the
    state (the action would happen, but its picture would not be shown)."""
    _number(level, "window level")
    _width(width)


def _click_size(size_mode: str, alpha: Any, radius_px: Any) -> ClickSize:
    """The click size the controls describe; α is read by ``iunet.clicks.parse_alpha`` (``1/800``,
    ``0.00125``; ``none`` means fixed clicks)."""
    r = _number(radius_px, "click radius")
    if not MIN_RADIUS_PX <= r <= MAX_RADIUS_PX:
        raise AppError(f"The click radius must be between {MIN_RADIUS_PX:g} and {MAX_RADIUS_PX:g} px.")
    if size_mode == FIXED:
        return ClickSize(r, None)
    if size_mode != DYNAMIC:
        raise AppError(f"Choose a click size: {DYNAMIC} or {FIXED}.")
    try:
        return ClickSize(r, parse_alpha(alpha))
    except ValueError as e:
        raise AppError(str(e)) from None


@dataclass(frozen=True)
class ClickDefaults:
    """The click-size controls set to a checkpoint's own input settings (``Predictor.inputs``)."""

    size_mode: str  # DYNAMIC, or FIXED for a model trained with fixed-size clicks
    alpha: str  # the α control's value: a text parse_alpha reads
    alpha_choices: tuple[tuple[str, str], ...]  # (label, value), the model's own first: "the model's (1/800)"
    radius_px: float
    radius_label: str

    @property
    def click_size(self) -> ClickSize:
        return _click_size(self.size_mode, self.alpha, self.radius_px)

    def updates(self) -> tuple:
        """gr.update()s that set the (size mode, α, radius) controls to these values."""
        return (
            gr.update(value=self.size_mode),
            gr.update(choices=list(self.alpha_choices), value=self.alpha),
            gr.update(value=self.radius_px, label=self.radius_label),
        )


def _click_defaults(model: str | None) -> ClickDefaults:
    """The click size the checkpoint chosen in the model menu was trained with (its α, or fixed
    clicks when it has none, and its default radius, from ``Predictor.inputs``): what the
    click-size controls show for that model. With no model, the library's defaults."""
    info = _checkpoint(model)
    inputs = None if info is None else models.get_predictor(info.path).inputs
    alpha = DEFAULT_ALPHA if inputs is None else inputs.alpha
    radius = ClickSize().radius_px if inputs is None else float(inputs.default_radius_px)
    radius = min(max(radius, MIN_RADIUS_PX), MAX_RADIUS_PX)
    choices: list[tuple[str, str]] = []
    if inputs is not None and alpha is not None:
        choices.append((f"the model's ({format_alpha(alpha)})", format_alpha(alpha)))
    for a in PAPER_ALPHAS:
        if all(format_alpha(a) != value for _, value in choices):
            choices.append((format_alpha(a), format_alpha(a)))
    return ClickDefaults(
        size_mode=FIXED if alpha is None else DYNAMIC,
        alpha=format_alpha(DEFAULT_ALPHA if alpha is None else alpha),
        alpha_choices=tuple(choices),
        radius_px=radius,
        radius_label="Radius px (fixed, or first click" + ("" if inputs is None else f"; the model's: {radius:g}") + ")",
    )


def _same_click_size(a: ClickSize, b: ClickSize) -> bool:
    """Same α (compared as the α control writes it), or both fixed at the same radius."""
    if a.alpha is None or b.alpha is None:
        return a.alpha is None and b.alpha is None and a.radius_px == b.radius_px
    return format_alpha(a.alpha) == format_alpha(b.alpha)


def _describe_click_size(click_size: ClickSize, model: str | None) -> str:
    """``dynamic α=1/800, the model's``; or, when it differs, the model's own size named too."""
    if _checkpoint(model) is None:
        return click_size.describe()
    own = _click_defaults(model).click_size
    if _same_click_size(click_size, own):
        return f"{click_size.describe()}, the model's"
    return f"{click_size.describe()}; the model was trained with {own.describe()}"


def _need_image(state: Annotation | None) -> Annotation:
    if state is None:
        raise AppError("Upload a CT (or pick an example) first.")
    state.check_alive()
    SESSIONS.touch(state)
    return state


def guarded(n_extra: int = 0, clear: tuple[int, ...] = ()):
    """Turn every failure of a handler into a message in the page, keeping the user's state.

    Handlers return (state, image, weight map, info, status, *n_extra more); on failure the
    state is returned unchanged, the status shows the message and all else is left as it is,
    except the extra outputs listed in ``clear`` (0-based among the extras), which are emptied
    (e.g. the Download box, so that it never offers an older file after a failed export).
    """

    def wrap(fn):
        @functools.wraps(fn)
        def handler(state, *args, **kwargs):
            try:
                return fn(state, *args, **kwargs)
            except (AppError, ReleasedError, MemoryBudgetError) as e:  # our own words
                message = str(e)
            except ValueError as e:  # CTLoadError, and iunet's checks at its boundary (e.g. click outside)
                message = without_paths(str(e)[:1].upper() + str(e)[1:])
            except MemoryError:
                message = "Out of memory: the image is too large for this server."
            except Exception as e:  # noqa: BLE001 - never a traceback in the page
                log.exception("handler %s failed", fn.__name__)
                message = without_paths(
                    f"Something went wrong ({type(e).__name__}: {e}). Your work is kept; please try again."
                )
            _warn(message)
            extras = [None if i in clear else gr.skip() for i in range(n_extra)]
            return (state, gr.skip(), gr.skip(), gr.skip(), _status(message, problem=True), *extras)

        return handler

    return wrap


# --------------------------------------------------------------------------- handlers: loading

def _paths(files: Any) -> list[str]:
    if files is None:
        return []
    if isinstance(files, (str, Path)) or hasattr(files, "name"):
        files = [files]
    return [str(getattr(f, "name", f)) for f in files if f]


def _session_hash(request: gr.Request | None) -> str:
    return str(getattr(request, "session_hash", "") or "")


def _load(state, paths, name, model, size_mode, alpha, radius, level, width, show_weights=False, propagate_clicks=True,
          request=None):
    """Load ``paths`` as this tab's new image (the old one is freed). Outputs: the view, the slice
    slider, the Download box (cleared) and the upload box (cleared, so the next upload replaces)."""
    if not paths:
        raise AppError(f"No file given. Accepted: {ACCEPTED_INPUTS}.")
    _check_window(level, width)
    click_size = _click_size(size_mode, alpha, radius)
    old = state if isinstance(state, Annotation) else None
    room = SESSIONS.reserve(old, MAX_VOXELS * HU_BYTES_PER_VOXEL)
    try:
        try:
            volume = load_ct(paths if len(paths) > 1 else paths[0], max_voxels=room // HU_BYTES_PER_VOXEL)
        except CTTooLargeError as e:
            if e.n_voxels <= MAX_VOXELS:  # it would fit the app, but not the memory left now
                raise AppError(
                    f"The server's memory is busy with other users' images: this one needs "
                    f"{e.n_voxels * HU_BYTES_PER_VOXEL / 1e6:,.0f} MB, {room / 1e6:,.0f} MB are free now. "
                    "Try again in a few minutes, or load fewer slices."
                ) from e
            raise
        _, ny, nx = volume.hu.shape
        if min(ny, nx) < MIN_SLICE_PX:
            raise AppError(
                f"The image '{name}' is {nx}×{ny} pixels; the app needs slices of at least {MIN_SLICE_PX}×{MIN_SLICE_PX} "
                "pixels to segment anything in them."
            )
        new = Annotation(volume, name, click_size, _session_hash(request))
        new.show_weight_map = bool(show_weights)
        new.propagate_clicks = bool(propagate_clicks)
        if old is not None:
            SESSIONS.release(old, "replaced by a new image")
        SESSIONS.add(new)
    finally:
        SESSIONS.unreserve(room)
    n = volume.n_slices
    hint = "Click on the object to segment it." if _MODELS.checkpoints else _no_models_message()
    status = f"Loaded **{name}**: {volume.description}. {hint}"
    slider = gr.update(minimum=1, maximum=max(n, 2), value=new.z + 1, visible=n > 1)
    return (*_view(new, model, level, width, status), slider, None, None)


LOAD_OUTPUTS_EXTRA = 3  # slice slider, download (cleared), upload box (cleared)


@guarded(n_extra=LOAD_OUTPUTS_EXTRA, clear=(2,))
def load_files(state, files, model, size_mode, alpha, radius, level, width, show_weights=False, propagate_clicks=True,
               request: gr.Request = None):
    """Upload → a new annotation replacing the tab's image (outputs + slider + cleared download and upload)."""
    paths = _paths(files)
    headers = [p for p in paths if Path(p).name.lower().endswith((".nhdr", ".mhd"))]  # named after the header
    name = file_stem((headers or paths)[0]) if paths else ""
    return _load(state, paths, name, model, size_mode, alpha, radius, level, width, show_weights, propagate_clicks, request)


@guarded(n_extra=LOAD_OUTPUTS_EXTRA)
def load_example_dicom(state, model, size_mode, alpha, radius, level, width, show_weights=False, propagate_clicks=True,
                       request: gr.Request = None):
    """pydicom's CT_small.dcm: one real CT slice that ships with pydicom."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    if path is None:
        raise AppError("pydicom's example file CT_small.dcm is not installed.")
    return _load(state, [str(path)], "CT_small", model, size_mode, alpha, radius, level, width, show_weights, propagate_clicks,
                 request)


_PHANTOM_LOCK = threading.Lock()
_PHANTOM_PATH: list[Path] = []


def phantom_path() -> Path:
    """The synthetic phantom volume, written once per process to a temporary NIfTI."""
    with _PHANTOM_LOCK:
        if not _PHANTOM_PATH or not _PHANTOM_PATH[0].is_file():
            folder = Path(tempfile.mkdtemp(prefix="iunet_phantom_"))
            _PHANTOM_PATH[:] = [write_phantom_nifti(folder / "phantom.nii.gz")]
        return _PHANTOM_PATH[0]


@guarded(n_extra=LOAD_OUTPUTS_EXTRA)
def load_example_phantom(state, model, size_mode, alpha, radius, level, width, show_weights=False, propagate_clicks=True,
                         request: gr.Request = None):
    """A synthetic CT volume (24 slices) rendered by iunet.phantom, written to a temporary NIfTI."""
    return _load(state, [str(phantom_path())], "phantom", model, size_mode, alpha, radius, level, width, show_weights,
                 propagate_clicks, request)


# --------------------------------------------------------------------------- handlers: clicks

def _other_slices(state: Annotation, changed: list[int]) -> str:
    """The status's " Slices changed: …." when an action on the slice on view of a volume also
    changed other slices; else ""."""
    if state.volume.n_slices > 1 and any(z != state.z for z in changed):
        return f" Slices changed: {_slices_text(changed)}."
    return ""


def _click_settings(state: Annotation, size_mode, alpha, radius, propagate_clicks) -> None:
    """Put the click controls as the page shows them now into the tab's state (the caller holds
    its lock), before a click. Their own events change the state too, but one made while an
    image was loading reached the old image (or none) and was lost with it."""
    state.set_click_size(_click_size(size_mode, alpha, radius))
    state.propagate_clicks = bool(propagate_clicks)


def _add_click(state, y: int, x: int, mode: str, model, level, width, settings: tuple | None = None):
    """``settings``: (size mode, α, radius, propagate clicks) as the page shows them, or None to
    keep the state's (the HTTP API's clicks)."""
    state = _need_image(state)
    if mode not in (FOREGROUND, BACKGROUND):
        raise AppError(f"Choose what a click adds: {FOREGROUND} or {BACKGROUND}.")
    predictor, path = _predictor(model)
    h, w = state.shape
    if not (0 <= y < h and 0 <= x < w):
        raise AppError(f"The click at row {y}, column {x} is outside the image ({w}×{h} pixels).")
    _check_window(level, width)
    with state.lock:
        if settings is not None:
            _click_settings(state, *settings)
        changed = state.add_click(predictor, path, y, x, mode == FOREGROUND)
        kind = "foreground" if mode == FOREGROUND else "background"
        status = f"Added a {kind} click at row {y}, column {x}." + _other_slices(state, changed)
        if len(state.clicks) == 1 and state.clicks[0].positive:
            status += f" Not the structure you meant? Try {VIEW_WORDS['out'][0]} or {VIEW_WORDS['in'][0]}."
        return _view(state, model, level, width, status)


@guarded()
def on_select(state, mode, model, level, width, size_mode, alpha, radius, propagate_clicks, evt: gr.SelectData):
    """A click on the image. Gradio gives (x, y) in displayed pixels; → slice (y, x) here, once.
    The click controls come with it (``_click_settings``)."""
    state = _need_image(state)
    index = getattr(evt, "index", None)
    if not isinstance(index, (list, tuple)) or len(index) != 2:
        raise AppError("Click inside the image.")
    y, x = rendering.display_to_slice_px(index[0], index[1], rendering.display_scale(state.shape))
    return _add_click(state, y, x, mode, model, level, width, (size_mode, alpha, radius, propagate_clicks))


@guarded()
def api_click(state, x, y, mode, model, level, width):
    """The same click for scripts (HTTP API ``/click``): x = column, y = row in slice pixels."""
    x, y = _number(x, "x"), _number(y, "y")
    return _add_click(state, int(np.floor(y)), int(np.floor(x)), mode, model, level, width)  # pixel (0, 0) spans [0, 1)


@guarded()
def on_undo(state, model, level, width):
    """Undo the last click, propagation or clear (anywhere in the volume), restoring the mask exactly."""
    state = _need_image(state)
    _check_window(level, width)
    with state.lock:
        done = state.undo()
        return _view(state, model, level, width, "Undid the last action." if done else "Nothing to undo.")


VIEW_WORDS = {"out": ("Wider view", "zoomed out: the structure around it"),
              "in": ("Closer view", "zoomed in: the spot itself")}


def _first_click_view(state, view: str, model, level, width):
    state = _need_image(state)
    predictor, path = _predictor(model)
    _check_window(level, width)
    button, what = VIEW_WORDS[view]
    with state.lock:
        clicks = state.clicks
        if len(clicks) != 1 or not clicks[0].positive:
            has = "no click" if not clicks else ("a background click" if len(clicks) == 1 else f"{len(clicks)} clicks")
            raise AppError(f"{button} predicts a slice's first click again; it needs a slice with one foreground "
                           f"click, and this one has {has}. Undo back to the first click, or click once on a slice.")
        changed = state.view_first_click(predictor, path, view)
        status = f"This slice's click seen {what} (Undo goes back)." + _other_slices(state, changed)
        return _view(state, model, level, width, status)


@guarded()
def on_view_out(state, model, level, width):
    """The slice's only click predicted again on the slice zoomed out: for a first mask that
    took part of an organ, or a spot inside it, when the organ was meant."""
    return _first_click_view(state, "out", model, level, width)


@guarded()
def on_view_in(state, model, level, width):
    """The slice's only click predicted again zoomed in around it: for a first mask that took
    the organ around a vessel or lesion that was meant."""
    return _first_click_view(state, "in", model, level, width)


@guarded()
def on_clear(state, model, level, width):
    """Empty the mask on every slice and forget the clicks; Undo brings them back."""
    state = _need_image(state)
    _check_window(level, width)
    with state.lock:
        done = state.clear()
        message = "Cleared the mask on every slice (Undo brings it back)." if done else "There is no mask to clear."
        return _view(state, model, level, width, message)


@guarded()
def on_propagate_clicks(state, propagate_clicks, model, level, width):
    """Whether a click on a volume also updates the neighbouring slices."""
    if state is None:
        return state, gr.skip(), gr.skip(), gr.skip(), ""
    state = _need_image(state)
    with state.lock:
        state.propagate_clicks = bool(propagate_clicks)
        what = "also update the neighbouring slices" if propagate_clicks else "change only their own slice"
        return state, gr.skip(), gr.skip(), gr.skip(), f"Clicks now {what}."


# --------------------------------------------------------------------------- handlers: settings

@guarded()
def on_slice(state, slice_number, model, level, width):
    """The slice slider (numbered from 1, like the text and the file names)."""
    state = _need_image(state)
    n = state.volume.n_slices
    number = _number(slice_number, "slice")
    if number != int(number) or not 1 <= number <= n:
        raise AppError(f"Slice {number:g} does not exist; the volume has slices 1 to {n}.")
    _check_window(level, width)
    with state.lock:
        state.z = int(number) - 1
        return _view(state, model, level, width, f"Slice {state.z + 1} of {n}.")


@guarded(n_extra=1)
def on_window(state, model, level, width):
    """Level/width moved by hand: redraw (the model's own window never changes)."""
    if state is not None:
        _need_image(state)
    return (*_view(state, model, level, width, ""), CUSTOM_WINDOW)


@guarded(n_extra=2)
def on_window_preset(state, preset, model, level, width):
    """A preset: set level and width and redraw. Extras: level, width."""
    if state is not None:
        _need_image(state)
    if preset not in WINDOW_PRESETS:
        return (*_view(state, model, level, width, ""), gr.skip(), gr.skip())
    level, width = WINDOW_PRESETS[preset]
    return (*_view(state, model, level, width, ""), level, width)


@guarded()
def on_weight_map(state, show, model, level, width):
    """Show or hide the weight map (its image box too); it is computed only while shown."""
    show = bool(show)
    if state is None:
        return state, gr.skip(), gr.update(value=None, visible=show), gr.skip(), gr.skip()
    state = _need_image(state)
    with state.lock:
        state.show_weight_map = show
        heat = _heat(state) if show else None
        return state, gr.skip(), gr.update(value=heat, visible=show), gr.skip(), gr.skip()


@guarded()
def on_click_size(state, size_mode, alpha, radius, model, level, width):
    click_size = _click_size(size_mode, alpha, radius)
    if state is None:
        return _view(state, model, level, width, f"Click size: {_describe_click_size(click_size, model)}.")
    state = _need_image(state)
    with state.lock:
        state.set_click_size(click_size)
        return _view(
            state, model, level, width,
            f"Next clicks: {_describe_click_size(click_size, model)} (first click {click_size.radius_px:g} px).",
        )


@guarded(n_extra=3)
def on_model(state, model, level, width):
    """Another checkpoint: the actions so far are replayed on it (each click with its own size), and the
    click-size controls and the next clicks take the new model's own α and radius. Extras: the
    size mode, α and radius controls."""
    predictor, path = _predictor(model)
    defaults = _click_defaults(model)
    size = f" Click size: {defaults.click_size.describe()}, the model's."
    if state is None:
        return (*_view(state, model, level, width, f"Model: {_model_label(path)}.{size}"), *defaults.updates())
    state = _need_image(state)
    _check_window(level, width)
    with state.lock:
        state.set_click_size(defaults.click_size)
        replayed = state.use_model(predictor, path)
        note = ""
        if replayed:
            actions = f"{replayed} action{'s' if replayed > 1 else ''}"
            note = f" Your {actions} so far (clicks, views, propagations, clears) were replayed on it, in order; Undo goes back through them."
        return (*_view(state, model, level, width, f"Model: {_model_label(path)}.{note}{size}"), *defaults.updates())


# --------------------------------------------------------------------------- handlers: volume, export

@guarded(n_extra=1, clear=(0,))
def on_propagate(state, model, max_slices, level, width):
    """Propagate the slice's mask through the volume; extra output: the 3D NIfTI to download."""
    state = _need_image(state)
    if state.volume.n_slices < 2:
        raise AppError("Propagation needs a volume (several slices); this image has one slice.")
    predictor, path = _predictor(model)
    n = _number(max_slices, "number of slices")
    if n != int(n) or not 1 <= n <= MAX_PROPAGATE_SLICES:
        raise AppError(f"Propagate over 1 to {MAX_PROPAGATE_SLICES} slices each way (a whole number), not {n:g}.")
    n = int(n)
    _check_window(level, width)
    with state.lock:
        if not state.mask().any():
            raise AppError("Segment the object on this slice first; propagation starts from its mask.")
        filled = state.propagate(predictor, path, n)
        out = save_mask_nifti(state.volume, state.mask_volume(), state.export_dir() / f"{state.name}_mask.nii.gz")
        status = (
            f"Propagated: slices {_slices_text(filled)} have a mask (slices you clicked on keep theirs; "
            f"Undo takes it back). The 3D mask (NIfTI, in the input's geometry{_geometry_caveat(state)}) is ready to download."
        )
        return (*_view(state, model, level, width, status), str(out))


MASK_SUFFIXES = (".nii", ".nii.gz")


@guarded(n_extra=1, clear=(0,))
def on_open_mask(state, mask_file, label, model, level, width):
    """Open a segmentation of this CT as the 3D mask, to correct it by clicking: a NIfTI label
    file on its voxel grid (an earlier Export NIfTI, another tool's label map) or, over a DICOM
    series, a DICOM-SEG of its images (an earlier Export DICOM-SEG, a SEG from a PACS);
    ``label`` 0 takes every non-zero label (segment), else that one. Undoable. Extra output:
    the Download box (emptied)."""
    state = _need_image(state)
    paths = _paths(mask_file)
    dicom = state.volume.kind == "dicom"
    accepted = "a NIfTI label (.nii, .nii.gz) on this CT's voxel grid" + (" or a DICOM-SEG of this series" if dicom else "")
    if not paths:
        raise AppError(f"Choose a mask file first: {accepted}, e.g. an earlier export.")
    name = Path(paths[0]).name
    nifti = name.lower().endswith(MASK_SUFFIXES)
    if len(paths) > 1:
        raise AppError(f"Open one mask file at a time ({len(paths)} were given): {accepted}.")
    if not (nifti or dicom):
        raise AppError(f"A mask is opened from {accepted}, such as the app's own export; '{name}' is not one.")
    n = _number(label, "label")
    if n != int(n) or n < 0:
        raise AppError(f"The label is a whole number ≥ 0 (0 = every non-zero label), not {n:g}.")
    n = int(n)
    predictor, path = _predictor(model)
    _check_window(level, width)
    with state.lock:
        if nifti:
            labels, names = read_nifti_mask(paths[0], like=state.volume), {}
        else:
            labels, names = read_dicom_seg_mask(paths[0], like=state.volume)
        present = [int(v) for v in np.unique(labels) if v != 0]
        if not present:
            raise AppError(f"'{name}' holds no label (every voxel is 0): there is no mask to open.")
        word = "segment" if names else "label"
        shown = ", ".join(f"{v} ({names[v]})" if v in names else str(v) for v in present[:12]) + (", …" if len(present) > 12 else "")
        if n and n not in present:
            raise AppError(f"'{name}' has no voxel with {word} {n}; its {word}s: {shown}.")
        mask = labels == n if n else labels > 0
        state.open_mask(predictor, path, mask)
        zs = state.annotated_slices()
        if n:
            which = f"{word} {n}" + (f" ({names[n]})" if n in names else "")
        else:
            which = f"{word} {shown}" if len(present) == 1 else f"{word}s {shown} together (give a number to take one)"
        status = (f"Opened the mask of '{name}' ({which}): slices {_slices_text(zs)}, {state.volume_ml():.1f} mL. "
                  "Click to correct it; Undo goes back to the mask before.")
        return (*_view(state, model, level, width, status), None)


def _geometry_caveat(state: Annotation) -> str:
    """", as loaded: …" with what the reader had to assume about the input's geometry (e.g. an
    even slice spacing for a series with missing slices, which a NIfTI cannot hold otherwise;
    DICOM-SEG keeps each slice's own position); "" when nothing was assumed."""
    assumed = [n for n in state.volume.notes if "assumed" in n]
    return f", as loaded: {'; '.join(assumed)}" if assumed else ""


NOTHING_TO_EXPORT = "Nothing to export yet: no slice has a mask. Click on the object first."


def _export(state, fmt: str):
    state = _need_image(state)
    with state.lock:
        folder, name = state.export_dir(), state.name
        annotated = state.annotated_slices()
        if not annotated:
            raise AppError(NOTHING_TO_EXPORT)
        if fmt == "png":
            if state.z not in annotated:
                raise AppError(
                    f"Nothing to export on slice {state.z + 1}: it has no mask (PNG exports the slice on view). "
                    f"Slices with a mask: {_slices_text(annotated)}; or export all of them as NIfTI."
                )
            out = save_mask_png(state.mask(), folder / f"{name}_slice{state.z + 1:03d}_mask.png")
            what = f"PNG of slice {state.z + 1} (0 = background, 255 = mask)"
        elif fmt == "nifti":
            out = save_mask_nifti(state.volume, state.mask_volume(), folder / f"{name}_mask.nii.gz")
            n = len(annotated)
            what = f"NIfTI in the input's geometry ({n} slice{'s' if n != 1 else ''} with a mask){_geometry_caveat(state)}"
        else:
            if state.volume.kind != "dicom":
                raise AppError("DICOM-SEG export needs a DICOM input; use NIfTI or PNG for this image.")
            result = export_dicom_seg(
                state.volume, state.mask_volume(), folder / f"{name}_seg.dcm", algorithm_name=_model_label(state.checkpoint)
            )
            out = result.path
            what = f"DICOM-SEG referencing the input's images ({result.n_frames} frame{'s' if result.n_frames != 1 else ''})"
            if result.assumptions:
                what += ". Assumed, because the images lack it: " + "; ".join(result.assumptions)
    return state, gr.skip(), gr.skip(), gr.skip(), f"Exported {what}. Download it below.", str(out)


@guarded(n_extra=1, clear=(0,))
def export_nifti(state):
    return _export(state, "nifti")


@guarded(n_extra=1, clear=(0,))
def export_png(state):
    return _export(state, "png")


@guarded(n_extra=1, clear=(0,))
def export_dicom_seg_file(state):
    return _export(state, "dicom-seg")


def _release_state(state) -> None:
    """gr.State's delete callback (tab closed an hour ago, or idle past time_to_live)."""
    if isinstance(state, Annotation):
        SESSIONS.release(state, "freed after the page was closed")


def on_page_closed(request: gr.Request = None) -> None:
    """The browser tab was closed or reloaded: free its image now (Gradio keeps the state an hour)."""
    n = SESSIONS.release_session(_session_hash(request))
    if n:
        log.info("page closed: freed %d image(s); %d open, %.0f MB", n, len(SESSIONS), SESSIONS.total_bytes() / 1e6)


# --------------------------------------------------------------------------- layout

INTRO = (
    "### IU-Net: click on an organ or lesion in a CT to segment it\n"
    "Foreground clicks add to the mask, background clicks remove from it; circles show each click's size."
)
CSS = """
#ct_image img { image-rendering: pixelated; }
#status p, #info p { margin: 0.1em 0; }
/* Full screen fills the screen: Gradio's own style never enlarges a picture past its pixels. */
#ct_image.fullscreen img, #ct_image:fullscreen img { object-fit: contain; }
"""

# Gradio maps a click on a picture to its pixels as if it were never shown larger than its own
# size. Full screen shows it larger; this gives Gradio's handler the point that its mapping turns
# into the right pixel (the click stays where the person clicked, in slice pixels).
FULLSCREEN_CLICK_JS = """
  document.addEventListener('click', (e) => {
    const img = e.target;
    if (e.__iunet || !(img instanceof HTMLImageElement) || !img.closest('#ct_image') || !img.naturalWidth) return;
    const r = img.getBoundingClientRect();
    const fit = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
    const s = getComputedStyle(img).objectFit === 'scale-down' ? Math.min(fit, 1) : fit;
    if (s <= 1.0001) return;  // at its own size or smaller, Gradio's mapping is right
    e.stopImmediatePropagation();
    e.preventDefault();
    const x = (e.clientX - r.left - (r.width - img.naturalWidth * s) / 2) / s;
    const y = (e.clientY - r.top - (r.height - img.naturalHeight * s) / 2) / s;
    if (x < 0 || y < 0 || x >= img.naturalWidth || y >= img.naturalHeight) return;  // on the black border
    const ev = new MouseEvent('click', {
      bubbles: true, cancelable: true, composed: true, view: window,
      clientX: r.left + (r.width - img.naturalWidth) / 2 + x, clientY: r.top + (r.height - img.naturalHeight) / 2 + y,
    });
    ev.__iunet = true;
    img.dispatchEvent(ev);
  }, true);
"""

# Files above the upload limit never reach the server: Gradio's page refuses them with a toast
# that fades and leaves a bare "Error" badge. Keep the reason in the status line and the badge.
UPLOAD_LIMIT_JS = """
  const note = (text) => {
    const status = document.querySelector('#status');
    if (status) {
      status.innerHTML = '<p>⚠️ <strong>The upload was refused: ' + text.replace(/[<>&]/g, '') +
        '. Upload at most ' + window.__iunet_limit + ' at a time, e.g. a .zip of the series or fewer slices.</strong></p>';
    }
    const badge = document.querySelector('#upload span.error');
    if (badge) { badge.textContent = 'File too large'; }
  };
  new MutationObserver((records) => {
    for (const r of records) {
      for (const n of r.addedNodes) {
        if (!(n instanceof HTMLElement)) continue;
        const toast = n.matches('[data-testid="toast-text"]') ? n : n.querySelector('[data-testid="toast-text"]');
        if (toast && /exceed the maximum allowed size/i.test(toast.textContent)) { note(toast.textContent.trim()); }
      }
    }
  }).observe(document.body, {childList: true, subtree: true});
"""


def page_js(max_file_size: str) -> str:
    """The page's own script (run once on load): the upload-limit message and full-screen clicks."""
    limit = repr(max_file_size.upper().replace("MB", " MB"))
    return "() => {\n" + UPLOAD_LIMIT_JS.replace("window.__iunet_limit", limit) + FULLSCREEN_CLICK_JS + "}\n"


def build_demo(config: AppConfig | None = None) -> gr.Blocks:
    """The Gradio app; loads the checkpoints of ``config.weights_dir`` once."""
    config = config or AppConfig()
    found = configure(config.weights_dir, config.device, config.precision)
    registry = configure_sessions(config.memory_mb, config.idle_minutes)
    registry.start_sweeper()
    from iunet_app import batching

    batching.BATCHER.max_batch = config.click_batch
    choices = [(c.label, c.file_name) for c in found.checkpoints]
    first_model = choices[0][1] if choices else None
    start_status = "" if choices else _status(_no_models_message(), problem=True)
    if found.problems:
        start_status += "  \nSkipped files in the weights folder: " + "; ".join(found.problems)
    preset_choices = [(f"{k.replace('_', ' ')} (L {lv:g} / W {wv:g})", k) for k, (lv, wv) in WINDOW_PRESETS.items()]
    preset_choices.append(("custom", CUSTOM_WINDOW))
    level0, width0 = WINDOW_PRESETS[DEFAULT_PRESET]
    size0 = _click_defaults(first_model)  # the first model's own click size

    with gr.Blocks(title="IU-Net interactive CT segmentation", delete_cache=(600, 3600)) as demo:
        state = gr.State(None, time_to_live=config.idle_minutes * 60, delete_callback=_release_state)
        gr.Markdown(INTRO)
        status = gr.Markdown(start_status, label="status", elem_id="status")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=250):
                files = gr.File(
                    label=f"Load a CT: DICOM file(s) or .zip, NIfTI, NRRD, MHA, PNG/JPEG (≤ {config.max_file_size.upper()})",
                    file_count="multiple",
                    height=110,
                    elem_id="upload",
                )
                with gr.Row():
                    ex_dicom = gr.Button("Example: CT slice", size="sm", elem_id="example_dicom")
                    ex_phantom = gr.Button("Example: phantom volume", size="sm", elem_id="example_phantom")
                model = gr.Dropdown(choices, value=first_model, label="Model", elem_id="model")
                mode = gr.Radio([FOREGROUND, BACKGROUND], value=FOREGROUND, label="A click adds", elem_id="mode")
                with gr.Row():
                    undo = gr.Button("Undo", size="sm", min_width=60, elem_id="undo")
                    clear = gr.Button("Clear mask", size="sm", variant="stop", min_width=60, elem_id="clear")
                with gr.Row():  # another view of a slice's first click (docs/app.md)
                    view_out = gr.Button(VIEW_WORDS["out"][0], size="sm", min_width=60, elem_id="view_out")
                    view_in = gr.Button(VIEW_WORDS["in"][0], size="sm", min_width=60, elem_id="view_in")
                with gr.Accordion("Click size", open=False):
                    size_mode = gr.Radio([DYNAMIC, FIXED], value=size0.size_mode, label="Click size", elem_id="size_mode")
                    alpha = gr.Radio(list(size0.alpha_choices), value=size0.alpha, label="α (dynamic size)", elem_id="alpha")
                    radius = TypedSlider(
                        MIN_RADIUS_PX, MAX_RADIUS_PX, value=size0.radius_px, step=0.5, label=size0.radius_label,
                        elem_id="radius",
                    )
                with gr.Accordion("Open a mask to correct", open=False):
                    mask_file = gr.File(
                        label="NIfTI label on this CT's grid, or a DICOM-SEG of its series (e.g. an earlier export)",
                        file_count="single", height=80, elem_id="mask_file",
                    )
                    with gr.Row():
                        mask_label = TypedNumber(0, label="Label / segment (0 = all)", precision=0, minimum=0, min_width=80, elem_id="mask_label")
                        open_mask = gr.Button("Open mask", size="sm", elem_id="open_mask")
                with gr.Accordion("Display window", open=False):
                    preset = gr.Dropdown(preset_choices, value=DEFAULT_PRESET, label="Preset", elem_id="preset")
                    level = TypedSlider(-1000, 3000, value=level0, step=1, label="Level (HU)", elem_id="level")
                    width = TypedSlider(1, 4000, value=width0, step=1, label="Width (HU)", elem_id="width")
                    gr.Markdown("The window changes only the picture; the model always sees its own window.")
            with gr.Column(scale=5, min_width=360):
                image = gr.Image(
                    label="CT slice: click to segment",
                    interactive=False,
                    format="png",
                    height=470,
                    buttons=["download", "fullscreen"],
                    elem_id="ct_image",
                )
                slice_slider = TypedSlider(1, 2, value=1, step=1, label="Slice", visible=False, elem_id="slice")
            with gr.Column(scale=3, min_width=260):
                info = gr.Markdown(_info(None, first_model), label="info", elem_id="info")
                with gr.Row():
                    max_slices = TypedNumber(
                        30, label="Propagate ≤ slices each way", precision=0, minimum=1, maximum=MAX_PROPAGATE_SLICES,
                        min_width=80, elem_id="max_slices",
                    )
                    propagate = gr.Button("Propagate through volume", size="sm", elem_id="propagate")
                propagate_clicks = gr.Checkbox(
                    True, label="Clicks also update the neighbouring slices (3D)", elem_id="propagate_clicks"
                )
                with gr.Row():
                    ex_nii = gr.Button("Export NIfTI", size="sm", min_width=60, elem_id="export_nifti")
                    ex_png = gr.Button("Export PNG", size="sm", min_width=60, elem_id="export_png")
                    ex_seg = gr.Button("Export DICOM-SEG", size="sm", min_width=60, elem_id="export_seg")
                download = gr.File(label="Download", interactive=False, height=60, elem_id="download")
                show_weights = gr.Checkbox(False, label="Show the weight map (boundary + clicks, as in training)", elem_id="show_weights")
                heat = gr.Image(
                    label="Weight map max(d, w): dark 0 → bright 10",
                    interactive=False,
                    format="png",
                    height=260,
                    buttons=["fullscreen"],
                    elem_id="weight_map",
                    visible=False,
                )
        # Scripted clicks over the HTTP API (/click); hidden in the page.
        api_x = gr.Number(visible=False, label="x (column, slice px)")
        api_y = gr.Number(visible=False, label="y (row, slice px)")
        api_button = gr.Button(visible=False)

        view = [state, image, heat, info, status]
        settings = [size_mode, alpha, radius, level, width, show_weights, propagate_clicks]
        load_out = [*view, slice_slider, download, files]
        load_kw = dict(concurrency_limit=1, concurrency_id="load")  # one decode at a time bounds peak memory
        files.upload(load_files, [state, files, model, *settings], load_out, api_name="load", **load_kw)
        ex_dicom.click(load_example_dicom, [state, model, *settings], load_out, api_name="example_dicom", **load_kw)
        ex_phantom.click(load_example_phantom, [state, model, *settings], load_out, api_name="example_phantom", **load_kw)
        # Clicks queue together so that the batcher can run many users' clicks in one forward pass.
        click_kw = dict(concurrency_limit=max(config.click_batch, 1), concurrency_id="click")
        image.select(on_select, [state, mode, model, level, width, size_mode, alpha, radius, propagate_clicks], view, api_visibility="private", **click_kw)
        api_button.click(api_click, [state, api_x, api_y, mode, model, level, width], view, api_name="click", **click_kw)
        undo.click(on_undo, [state, model, level, width], view, api_name="undo")
        clear.click(on_clear, [state, model, level, width], view, api_name="clear")
        view_out.click(on_view_out, [state, model, level, width], view, api_name="view_out", **click_kw)
        view_in.click(on_view_in, [state, model, level, width], view, api_name="view_in", **click_kw)
        propagate_clicks.input(on_propagate_clicks, [state, propagate_clicks, model, level, width], view, api_visibility="private")
        slice_slider.input(on_slice, [state, slice_slider, model, level, width], view, api_name="slice", trigger_mode="always_last")
        level.input(on_window, [state, model, level, width], [*view, preset], api_visibility="private", trigger_mode="always_last")
        width.input(on_window, [state, model, level, width], [*view, preset], api_visibility="private", trigger_mode="always_last")
        preset.input(on_window_preset, [state, preset, model, level, width], [*view, level, width], api_visibility="private")
        show_weights.input(on_weight_map, [state, show_weights, model, level, width], view, api_visibility="private")
        for control in (size_mode, alpha, radius):
            control.input(on_click_size, [state, size_mode, alpha, radius, model, level, width], view, api_visibility="private")
        model.input(on_model, [state, model, level, width], [*view, size_mode, alpha, radius], api_name="model")
        propagate.click(on_propagate, [state, model, max_slices, level, width], [*view, download], api_name="propagate")
        open_mask.click(on_open_mask, [state, mask_file, mask_label, model, level, width], [*view, download], api_name="open_mask")
        ex_nii.click(export_nifti, [state], [*view, download], api_name="export_nifti")
        ex_png.click(export_png, [state], [*view, download], api_name="export_png")
        ex_seg.click(export_dicom_seg_file, [state], [*view, download], api_name="export_dicom_seg")
        # An export offered for download no longer matches the mask once the mask changes: empty the box.
        for changes_mask in (image.select, api_button.click, undo.click, clear.click, view_out.click, view_in.click, model.input):
            changes_mask(_no_download, None, download, api_visibility="private", queue=False)
        demo.unload(on_page_closed)
    return demo


def _no_download():
    """The Download box emptied (see build_demo)."""
    return None


def launch(demo: gr.Blocks, config: AppConfig, **kwargs):
    """Queue (with the concurrency limit) and serve; ``kwargs`` go to ``Blocks.launch``."""
    demo.queue(default_concurrency_limit=config.concurrency, max_size=256)
    return demo.launch(
        server_name=config.host,
        server_port=config.port,
        share=config.share,
        max_file_size=config.max_file_size,
        show_error=False,
        css=CSS,
        js=page_js(config.max_file_size),
        **kwargs,
    )


def parse_args(argv: list[str] | None = None) -> AppConfig:
    env = os.environ
    p = argparse.ArgumentParser(description="IU-Net interactive CT segmentation (Gradio web app).")
    p.add_argument("--weights-dir", default=env.get("IUNET_WEIGHTS_DIR", AppConfig.weights_dir),
                   help="folder with *.safetensors checkpoints (env IUNET_WEIGHTS_DIR; default: weights/)")
    p.add_argument("--host", default=env.get("GRADIO_SERVER_NAME", AppConfig.host),
                   help="address to listen on (env GRADIO_SERVER_NAME; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=int(env.get("GRADIO_SERVER_PORT", AppConfig.port)),
                   help="port (env GRADIO_SERVER_PORT)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--device", default=env.get("IUNET_DEVICE", "auto"), help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--precision", choices=models.PRECISIONS, default=env.get("IUNET_PRECISION", AppConfig.precision),
                   help="model arithmetic (env IUNET_PRECISION): auto = bf16 + channels-last on CPUs with native bf16, fp32 in ONNX Runtime on other CPUs (fp32 + channels-last without onnxruntime), fp32 on GPUs")
    p.add_argument("--concurrency", type=int, default=int(env.get("IUNET_CONCURRENCY", AppConfig.concurrency)),
                   help="events other than clicks processed at once over all users")
    p.add_argument("--memory-mb", type=int, default=int(env.get("IUNET_MEMORY_MB", AppConfig.memory_mb)),
                   help="memory for all open images, masks and click history together (env IUNET_MEMORY_MB)")
    p.add_argument("--idle-minutes", type=float, default=float(env.get("IUNET_IDLE_MINUTES", AppConfig.idle_minutes)),
                   help="a tab without any action for this long is freed (env IUNET_IDLE_MINUTES)")
    p.add_argument("--click-batch", type=int, default=int(env.get("IUNET_CLICK_BATCH", AppConfig.click_batch)),
                   help="up to this many concurrent clicks run in one forward pass (env IUNET_CLICK_BATCH)")
    a = p.parse_args(argv)
    if a.concurrency < 1:
        p.error("--concurrency must be at least 1")
    if a.memory_mb < 100:
        p.error("--memory-mb must be at least 100")
    if a.idle_minutes <= 0:
        p.error("--idle-minutes must be more than 0")
    if a.click_batch < 1:
        p.error("--click-batch must be at least 1")
    return AppConfig(
        a.weights_dir, a.device, a.host, a.port, a.share, a.concurrency, MAX_UPLOAD, a.precision, a.memory_mb,
        a.idle_minutes, a.click_batch,
    )


def main(argv: list[str] | None = None) -> None:
    # Our own messages at INFO; libraries (httpx logs every internal HTTP request) at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("iunet").setLevel(logging.INFO)
    config = parse_args(argv)
    launch(build_demo(config), config)


if __name__ == "__main__":
    main()
