"""Interactive CT segmentation in the browser: a Gradio web app around iunet's Predictor/Session.

    python app.py [--weights-dir weights] [--host 127.0.0.1] [--port 7860] [--share]

Upload a CT (DICOM file, series or .zip, NIfTI, PNG/JPEG), click foreground / background, watch
the mask follow; undo, reset, propagate through the volume and export (NIfTI, PNG, DICOM-SEG).

This file is the UI only. Every event handler is a plain function ``(state, values…) →
(state, image, weight map, info, status, extras…)`` so tests can call it directly; the state is
one :class:`app_support.Annotation` per browser tab (gr.State), never shared between users,
while the predictors (one per checkpoint) are loaded once and shared. Gradio reports a click
as (x, y) on the displayed image; ``on_select`` turns it into slice pixels (y, x) once, and
from there on everything is (y, x). See docs/app.md for the user guide.
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

try:  # On a ZeroGPU Space, import `spaces` before torch (see app_support.gpu_task).
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

import app_support as sup  # noqa: E402
from iunet.clicks import ClickSize  # noqa: E402
from iunet.ct_io import ACCEPTED_INPUTS, CTLoadError, load_ct, save_mask_nifti  # noqa: E402
from iunet.inference import Predictor  # noqa: E402
from iunet.windowing import WINDOW_PRESETS  # noqa: E402

log = logging.getLogger("iunet.app")

REPO_DIR = Path(__file__).resolve().parent
FOREGROUND, BACKGROUND = "Foreground (add)", "Background (remove)"
DYNAMIC, FIXED = "Dynamic: α · mask area", "Fixed radius"
ALPHAS = {"1/800": 1 / 800, "1/500": 1 / 500}
CUSTOM_WINDOW = "custom"
DEFAULT_PRESET = "abdomen"
MAX_PROPAGATE_SLICES = 500
# Each user's volume stays in memory as float32 HU: 1000 slices of 512² is 1 GB. Larger inputs
# (e.g. a .nii.gz that unpacks to several GB) are refused rather than starving everyone else.
MAX_VOXELS = 512 * 512 * 1000
STATE_TTL_S = 3 * 3600  # a tab's work is dropped after this long without any action


@dataclass(frozen=True)
class AppConfig:
    """Everything ``python app.py`` can be told (flags and environment variables)."""

    weights_dir: str = str(REPO_DIR / "weights")
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    concurrency: int = 4  # events run at once over all users; more only queue
    max_file_size: str = "200mb"


class AppError(Exception):
    """A problem the user can fix; its message is shown in the page as it is."""


# --------------------------------------------------------------------------- shared, read-only

@dataclass
class _Models:
    weights_dir: str = ""
    checkpoints: tuple[sup.CheckpointInfo, ...] = ()
    problems: tuple[str, ...] = ()


_MODELS = _Models()


def configure(weights_dir: str | Path, device: str = "auto") -> _Models:
    """List the checkpoints in ``weights_dir`` and load each once (shared by all users)."""
    global _MODELS
    found, problems = sup.find_checkpoints(weights_dir)
    sup.PREDICTORS.device = device
    usable = []
    for info in found:
        try:
            sup.PREDICTORS.get(info.path)
            usable.append(info)
        except Exception as e:  # noqa: BLE001 - a broken file must not stop the app
            problems.append(f"{Path(info.path).name}: could not be loaded ({e})")
    for p in problems:
        log.warning("checkpoint skipped: %s", p)
    _MODELS = _Models(str(weights_dir), tuple(usable), tuple(problems))
    return _MODELS


def _checkpoint(model: str | None) -> sup.CheckpointInfo | None:
    """The checkpoint the model menu names (by file name), or None."""
    return next((c for c in _MODELS.checkpoints if c.file_name == model), None)


def _predictor(model: str | None) -> tuple[Predictor, str]:
    """The shared predictor of the checkpoint chosen in the model menu, and its path."""
    if not _MODELS.checkpoints:
        raise AppError(_no_models_message())
    info = _checkpoint(model)
    if info is None:
        raise AppError("Choose a model in the **Model** menu first.")
    return sup.PREDICTORS.get(info.path), info.path


def _no_models_message() -> str:
    return (
        f"No model found: there is no checkpoint (`*.safetensors`) in `{_MODELS.weights_dir}`. "
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


def _info(state: sup.Annotation | None, model: str | None) -> str:
    info = _checkpoint(model)
    device = "–" if info is None else sup.describe_device(sup.PREDICTORS.get(info.path))
    lines = []
    if state is None:
        lines.append("**Image:** none yet: upload a CT or pick an example.")
    else:
        vol = state.volume
        mask = state.mask()
        n_px = int(mask.sum())
        clicks = state.clicks
        n_pos = sum(c.positive for c in clicks)
        _, sy, sx = vol.spacing_mm
        lines.append(f"**Image:** {vol.description} · slice **{state.z + 1} / {vol.n_slices}**")
        lines.append(
            f"**Mask area:** {n_px:,} px = **{state.area_mm2(mask):,.1f} mm²** (pixel {sy:.3g} × {sx:.3g} mm)"
        )
        lines.append(
            f"**Clicks:** {len(clicks)} ({n_pos} foreground, {len(clicks) - n_pos} background) · "
            f"next click radius {state.next_radius_px():.1f} px ({state.click_size.describe()})"
        )
        annotated = int(state.mask_volume().any(axis=(1, 2)).sum())
        if vol.n_slices > 1:
            lines.append(f"**Slices with a mask:** {annotated} of {vol.n_slices}")
        s = state.session
        latency = "–" if s is None or s.last_latency_ms is None else f"{s.last_latency_ms:.0f} ms"
        lines.append(f"**Last click:** {latency} model time")
    lines.append(f"**Model:** {_model_label(model)} · **Device:** {device}")
    return "  \n".join(lines)


def _view(state: sup.Annotation | None, model: str | None, level: float, width: float, status: str) -> tuple:
    """(state, image, weight map, info, status) for the slice on view."""
    if state is None:
        return state, None, None, _info(None, model), status
    scale = sup.display_scale(state.shape)
    mask, clicks = state.mask(), state.clicks
    image = sup.render_slice(state.image_hu, _number(level, "window level"), _width(width), mask, clicks, scale)
    heat = sup.render_weight_map(mask, clicks, scale)
    return state, image, heat, _info(state, model), status


def _number(value: Any, what: str) -> float:
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


def _click_size(size_mode: str, alpha: str, radius_px: Any) -> ClickSize:
    r = _number(radius_px, "click radius")
    if not 1 <= r <= 15:
        raise AppError("The click radius must be between 1 and 15 px.")
    if size_mode == FIXED:
        return ClickSize(r, None)
    if alpha not in ALPHAS:
        raise AppError(f"α must be one of {', '.join(ALPHAS)}.")
    return ClickSize(r, ALPHAS[alpha])


def _need_image(state: sup.Annotation | None) -> sup.Annotation:
    if state is None:
        raise AppError("Upload a CT (or pick an example) first.")
    return state


def guarded(n_extra: int = 0):
    """Turn every failure of a handler into a message in the page, keeping the user's state.

    Handlers return (state, image, weight map, info, status, *n_extra more); on failure the
    state is returned unchanged, the status shows the message and all else is left as it is.
    """

    def wrap(fn):
        @functools.wraps(fn)
        def handler(state, *args, **kwargs):
            try:
                return fn(state, *args, **kwargs)
            except (AppError, CTLoadError) as e:
                message = str(e)
            except ValueError as e:  # iunet's checks at its public boundary (e.g. click outside)
                message = str(e)[:1].upper() + str(e)[1:]
            except MemoryError:
                message = "Out of memory: the image is too large for this server."
            except Exception as e:  # noqa: BLE001 - never a traceback in the page
                log.exception("handler %s failed", fn.__name__)
                message = f"Something went wrong ({type(e).__name__}: {e}). Your work is kept; please try again."
            _warn(message)
            return (state, gr.skip(), gr.skip(), gr.skip(), _status(message, problem=True), *[gr.skip()] * n_extra)

        return handler

    return wrap


# --------------------------------------------------------------------------- handlers: loading

def _paths(files: Any) -> list[str]:
    if files is None:
        return []
    if isinstance(files, (str, Path)) or hasattr(files, "name"):
        files = [files]
    return [str(getattr(f, "name", f)) for f in files if f]


def _load(state, paths, name, model, size_mode, alpha, radius, level, width):
    if not paths:
        raise AppError(f"No file given. Accepted: {ACCEPTED_INPUTS}.")
    click_size = _click_size(size_mode, alpha, radius)
    volume = load_ct(paths if len(paths) > 1 else paths[0])
    if volume.hu.size > MAX_VOXELS:
        z, y, x = volume.hu.shape
        raise AppError(
            f"The volume is too large for this app ({z} slices of {y}×{x} pixels; at most "
            f"{MAX_VOXELS // (512 * 512)} slices of 512×512). Load a smaller part of the series."
        )
    if state is not None:
        state.cleanup()
    state = sup.Annotation(volume, name, click_size)
    n = volume.n_slices
    hint = "Click on the object to segment it." if _MODELS.checkpoints else _no_models_message()
    status = f"Loaded **{name}**: {volume.description}. {hint}"
    slider = gr.update(minimum=0, maximum=max(n - 1, 1), value=state.z, visible=n > 1)
    return (*_view(state, model, level, width, status), slider, None)


@guarded(n_extra=2)
def load_files(state, files, model, size_mode, alpha, radius, level, width):
    """Upload → a new annotation (outputs + slice slider update + cleared download)."""
    paths = _paths(files)
    return _load(state, paths, sup.file_stem(paths[0]) if paths else "", model, size_mode, alpha, radius, level, width)


@guarded(n_extra=2)
def load_example_dicom(state, model, size_mode, alpha, radius, level, width):
    """pydicom's CT_small.dcm: one real CT slice that ships with pydicom."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    if path is None:
        raise AppError("pydicom's example file CT_small.dcm is not installed.")
    return _load(state, [str(path)], "CT_small", model, size_mode, alpha, radius, level, width)


_PHANTOM_LOCK = threading.Lock()
_PHANTOM_PATH: list[Path] = []


def phantom_path() -> Path:
    """The synthetic phantom volume, written once per process to a temporary NIfTI."""
    with _PHANTOM_LOCK:
        if not _PHANTOM_PATH or not _PHANTOM_PATH[0].is_file():
            folder = Path(tempfile.mkdtemp(prefix="iunet_phantom_"))
            _PHANTOM_PATH[:] = [sup.write_phantom_nifti(folder / "phantom.nii.gz")]
        return _PHANTOM_PATH[0]


@guarded(n_extra=2)
def load_example_phantom(state, model, size_mode, alpha, radius, level, width):
    """A synthetic CT volume (24 slices) rendered by iunet.data, written to a temporary NIfTI."""
    return _load(state, [str(phantom_path())], "phantom", model, size_mode, alpha, radius, level, width)


# --------------------------------------------------------------------------- handlers: clicks

def _add_click(state, y: int, x: int, mode: str, model, level, width):
    state = _need_image(state)
    if mode not in (FOREGROUND, BACKGROUND):
        raise AppError(f"Choose what a click adds: {FOREGROUND} or {BACKGROUND}.")
    predictor, path = _predictor(model)
    with state.lock:
        state.add_click(predictor, path, y, x, mode == FOREGROUND)
        kind = "foreground" if mode == FOREGROUND else "background"
        return _view(state, model, level, width, f"Added a {kind} click at row {y}, column {x}.")


@guarded()
def on_select(state, mode, model, level, width, evt: gr.SelectData):
    """A click on the image. Gradio gives (x, y) in displayed pixels; → slice (y, x) here, once."""
    state = _need_image(state)
    index = getattr(evt, "index", None)
    if not isinstance(index, (list, tuple)) or len(index) != 2:
        raise AppError("Click inside the image.")
    y, x = sup.display_to_slice_px(index[0], index[1], sup.display_scale(state.shape))
    return _add_click(state, y, x, mode, model, level, width)


@guarded()
def api_click(state, x, y, mode, model, level, width):
    """The same click for scripts (HTTP API ``/click``): x = column, y = row in slice pixels."""
    x, y = _number(x, "x"), _number(y, "y")
    return _add_click(state, int(y), int(x), mode, model, level, width)


@guarded()
def on_undo(state, model, level, width):
    state = _need_image(state)
    with state.lock:
        done = state.undo()
        return _view(state, model, level, width, "Undid the last click." if done else "Nothing to undo on this slice.")


@guarded()
def on_reset(state, model, level, width):
    state = _need_image(state)
    with state.lock:
        done = state.reset()
        return _view(state, model, level, width, "Cleared this slice." if done else "This slice has no mask to clear.")


# --------------------------------------------------------------------------- handlers: settings

@guarded()
def on_slice(state, z, model, level, width):
    state = _need_image(state)
    z = int(_number(z, "slice"))
    if not 0 <= z < state.volume.n_slices:
        raise AppError(f"Slice {z} does not exist; the volume has slices 0 to {state.volume.n_slices - 1}.")
    with state.lock:
        state.z = z
        return _view(state, model, level, width, f"Slice {z + 1} of {state.volume.n_slices}.")


@guarded(n_extra=1)
def on_window(state, model, level, width):
    """Level/width moved by hand: redraw (the model's own window never changes)."""
    return (*_view(state, model, level, width, ""), CUSTOM_WINDOW)


@guarded(n_extra=2)
def on_window_preset(state, preset, model, level, width):
    """A preset: set level and width and redraw. Extras: level, width."""
    if preset not in WINDOW_PRESETS:
        return (*_view(state, model, level, width, ""), gr.skip(), gr.skip())
    level, width = WINDOW_PRESETS[preset]
    return (*_view(state, model, level, width, ""), level, width)


@guarded()
def on_click_size(state, size_mode, alpha, radius, model, level, width):
    click_size = _click_size(size_mode, alpha, radius)
    if state is None:
        return _view(state, model, level, width, f"Click size: {click_size.describe()}.")
    with state.lock:
        state.set_click_size(click_size)
        return _view(state, model, level, width, f"Next clicks: {click_size.describe()} (first click {click_size.radius_px:g} px).")


@guarded()
def on_model(state, model, level, width):
    predictor, path = _predictor(model)
    if state is None:
        return _view(state, model, level, width, f"Model: {_model_label(path)}.")
    with state.lock:
        had_clicks = bool(state.clicks)
        state.use_model(predictor, path)
        note = " The clicks on this slice were replayed on it." if had_clicks else ""
        return _view(state, model, level, width, f"Model: {_model_label(path)}.{note}")


# --------------------------------------------------------------------------- handlers: volume, export

@guarded(n_extra=1)
def on_propagate(state, model, max_slices, level, width):
    """Propagate the slice's mask through the volume; extra output: the 3D NIfTI to download."""
    state = _need_image(state)
    if state.volume.n_slices < 2:
        raise AppError("Propagation needs a volume (several slices); this image has one slice.")
    predictor, path = _predictor(model)
    n = int(_number(max_slices, "number of slices"))
    if not 1 <= n <= MAX_PROPAGATE_SLICES:
        raise AppError(f"Propagate over 1 to {MAX_PROPAGATE_SLICES} slices each way.")
    with state.lock:
        if not state.mask().any():
            raise AppError("Segment the object on this slice first; propagation starts from its mask.")
        first, last = state.propagate(predictor, path, n)
        out = save_mask_nifti(state.volume, state.mask_volume(), state.export_dir() / f"{state.name}_mask.nii.gz")
        status = (
            f"Propagated: slices {first + 1} to {last + 1} now have a mask (slices you clicked on keep theirs). "
            "The 3D mask (NIfTI, in the input's geometry) is ready to download."
        )
        return (*_view(state, model, level, width, status), str(out))


def _export(state, fmt: str):
    state = _need_image(state)
    with state.lock:
        folder, name = state.export_dir(), state.name
        if fmt == "png":
            out = sup.mask_png(state.mask(), folder / f"{name}_slice{state.z + 1:03d}_mask.png")
            what = f"PNG of slice {state.z + 1} (0 = background, 255 = mask)"
        elif fmt == "nifti":
            mask = state.mask_volume()
            out = save_mask_nifti(state.volume, mask, folder / f"{name}_mask.nii.gz")
            n = int(mask.any(axis=(1, 2)).sum())
            what = f"NIfTI in the input's geometry ({n} slice{'s' if n != 1 else ''} with a mask)"
        else:
            out = sup.export_dicom_seg(
                state.volume, state.mask_volume(), folder / f"{name}_seg.dcm", _model_label(state.checkpoint)
            )
            what = "DICOM-SEG referencing the input's images"
    return state, gr.skip(), gr.skip(), gr.skip(), f"Exported {what}: download it below.", str(out)


@guarded(n_extra=1)
def export_nifti(state):
    return _export(state, "nifti")


@guarded(n_extra=1)
def export_png(state):
    return _export(state, "png")


@guarded(n_extra=1)
def export_dicom_seg(state):
    return _export(state, "dicom-seg")


def _cleanup(state) -> None:
    if isinstance(state, sup.Annotation):
        state.cleanup()


# --------------------------------------------------------------------------- layout

INTRO = """# IU-Net: interactive CT segmentation
Upload a CT or pick an example, then **click on the object**: foreground clicks add to the mask,
background clicks remove from it. The mask updates after every click. Circles show each click's
size; the heat map shows the weight map (object boundary and foreground clicks) that trains the model.
"""


def build_demo(config: AppConfig | None = None) -> gr.Blocks:
    """The Gradio app; loads the checkpoints of ``config.weights_dir`` once."""
    config = config or AppConfig()
    models = configure(config.weights_dir, config.device)
    choices = [(c.label, c.file_name) for c in models.checkpoints]
    first_model = choices[0][1] if choices else None
    start_status = "" if choices else _status(_no_models_message(), problem=True)
    if models.problems:
        start_status += "  \nSkipped files in the weights folder: " + "; ".join(models.problems)
    preset_choices = [(f"{k.replace('_', ' ')} (L {lv:g} / W {wv:g})", k) for k, (lv, wv) in WINDOW_PRESETS.items()]
    preset_choices.append(("custom", CUSTOM_WINDOW))
    level0, width0 = WINDOW_PRESETS[DEFAULT_PRESET]

    with gr.Blocks(title="IU-Net interactive CT segmentation", delete_cache=(600, 3600)) as demo:
        state = gr.State(None, time_to_live=STATE_TTL_S, delete_callback=_cleanup)
        gr.Markdown(INTRO)
        status = gr.Markdown(start_status, label="status", elem_id="status")
        with gr.Row():
            with gr.Column(scale=2, min_width=260):
                files = gr.File(
                    label="CT: DICOM file(s) or .zip of a series, NIfTI (.nii/.nii.gz), PNG/JPEG",
                    file_count="multiple",
                    elem_id="upload",
                )
                with gr.Row():
                    ex_dicom = gr.Button("Example: CT slice (DICOM)", size="sm", elem_id="example_dicom")
                    ex_phantom = gr.Button("Example: phantom volume", size="sm", elem_id="example_phantom")
                model = gr.Dropdown(choices, value=first_model, label="Model", elem_id="model")
                mode = gr.Radio([FOREGROUND, BACKGROUND], value=FOREGROUND, label="A click adds", elem_id="mode")
                with gr.Row():
                    undo = gr.Button("Undo last click", elem_id="undo")
                    reset = gr.Button("Reset slice", variant="stop", elem_id="reset")
                size_mode = gr.Radio([DYNAMIC, FIXED], value=DYNAMIC, label="Click size", elem_id="size_mode")
                alpha = gr.Radio(list(ALPHAS), value="1/800", label="α (dynamic size)", elem_id="alpha")
                radius = gr.Slider(1, 15, value=5, step=1, label="Radius px (fixed, or first click)", elem_id="radius")
            with gr.Column(scale=5, min_width=360):
                image = gr.Image(
                    label="CT slice (click to segment)",
                    interactive=False,
                    format="png",
                    buttons=["download", "fullscreen"],
                    elem_id="ct_image",
                )
                slice_slider = gr.Slider(0, 1, value=0, step=1, label="Slice", visible=False, elem_id="slice")
                info = gr.Markdown(_info(None, first_model), label="info", elem_id="info")
            with gr.Column(scale=3, min_width=260):
                heat = gr.Image(
                    label="Weight map",
                    interactive=False,
                    format="png",
                    buttons=["fullscreen"],
                    elem_id="weight_map",
                )
                gr.Markdown("Weight map `max(d, w)` of the loss that trains the model: object boundary and "
                            "foreground clicks, dark 0 → bright 10.")
                preset = gr.Dropdown(preset_choices, value=DEFAULT_PRESET, label="Display window", elem_id="preset")
                with gr.Row():
                    level = gr.Slider(-1000, 3000, value=level0, step=1, label="Level (HU)", elem_id="level")
                    width = gr.Slider(1, 4000, value=width0, step=1, label="Width (HU)", elem_id="width")
                gr.Markdown("The window changes only the picture; the model always sees its own window.")
                with gr.Row():
                    max_slices = gr.Number(30, label="Propagate ≤ slices each way", precision=0, minimum=1, maximum=MAX_PROPAGATE_SLICES)
                    propagate = gr.Button("Propagate through volume", elem_id="propagate")
                with gr.Row():
                    ex_nii = gr.Button("Export NIfTI", size="sm", elem_id="export_nifti")
                    ex_png = gr.Button("Export PNG", size="sm", elem_id="export_png")
                    ex_seg = gr.Button("Export DICOM-SEG", size="sm", elem_id="export_seg")
                download = gr.File(label="Download", interactive=False, elem_id="download")
        # Scripted clicks over the HTTP API (/click); hidden in the page.
        api_x = gr.Number(visible=False, label="x (column, slice px)")
        api_y = gr.Number(visible=False, label="y (row, slice px)")
        api_button = gr.Button(visible=False)

        view = [state, image, heat, info, status]
        settings = [size_mode, alpha, radius, level, width]
        files.upload(load_files, [state, files, model, *settings], [*view, slice_slider, download], api_name="load")
        ex_dicom.click(load_example_dicom, [state, model, *settings], [*view, slice_slider, download], api_name="example_dicom")
        ex_phantom.click(load_example_phantom, [state, model, *settings], [*view, slice_slider, download], api_name="example_phantom")
        image.select(on_select, [state, mode, model, level, width], view, api_visibility="private")
        api_button.click(api_click, [state, api_x, api_y, mode, model, level, width], view, api_name="click")
        undo.click(on_undo, [state, model, level, width], view, api_name="undo")
        reset.click(on_reset, [state, model, level, width], view, api_name="reset")
        slice_slider.input(on_slice, [state, slice_slider, model, level, width], view, api_name="slice", trigger_mode="always_last")
        level.input(on_window, [state, model, level, width], [*view, preset], api_visibility="private", trigger_mode="always_last")
        width.input(on_window, [state, model, level, width], [*view, preset], api_visibility="private", trigger_mode="always_last")
        preset.input(on_window_preset, [state, preset, model, level, width], [*view, level, width], api_visibility="private")
        for control in (size_mode, alpha, radius):
            control.input(on_click_size, [state, size_mode, alpha, radius, model, level, width], view, api_visibility="private")
        model.input(on_model, [state, model, level, width], view, api_name="model")
        propagate.click(on_propagate, [state, model, max_slices, level, width], [*view, download], api_name="propagate")
        ex_nii.click(export_nifti, [state], [*view, download], api_name="export_nifti")
        ex_png.click(export_png, [state], [*view, download], api_name="export_png")
        ex_seg.click(export_dicom_seg, [state], [*view, download], api_name="export_dicom_seg")
    return demo


def launch(demo: gr.Blocks, config: AppConfig, **kwargs):
    """Queue (with the concurrency limit) and serve; ``kwargs`` go to ``Blocks.launch``."""
    demo.queue(default_concurrency_limit=config.concurrency, max_size=256)
    return demo.launch(
        server_name=config.host,
        server_port=config.port,
        share=config.share,
        max_file_size=config.max_file_size,
        show_error=False,
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
    p.add_argument("--concurrency", type=int, default=int(env.get("IUNET_CONCURRENCY", AppConfig.concurrency)),
                   help="events processed at once over all users")
    a = p.parse_args(argv)
    if a.concurrency < 1:
        p.error("--concurrency must be at least 1")
    return AppConfig(a.weights_dir, a.device, a.host, a.port, a.share, a.concurrency)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = parse_args(argv)
    launch(build_demo(config), config)


if __name__ == "__main__":
    main()
