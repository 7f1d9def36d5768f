"""Handler-level tests of the web app: each action called as the plain function Gradio calls.

A handler returns (state, image, weight map, info, status, extras…); problems come back as a
status starting with ⚠️ and the previous state, never as an exception.
"""
import os
import sys
import threading
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

import app  # noqa: E402
from conftest import ct_dataset  # noqa: E402
from iunet.io import read_nifti_mask  # noqa: E402
from iunet_app import batching, models, rendering  # noqa: E402
from iunet_app.annotation import ZOOM_OUT, Annotation  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a server warns
W = (40.0, 400.0)  # display window used by most calls
CLICK = (app.DYNAMIC, "1/800", 5, True)  # the click controls a page click comes with: size mode, α, radius, 3D


def make_checkpoint(path: Path, name: str, seed: int, interactive: bool = True, **inputs) -> Path:
    """A random IU-Net on a 128-px grid: fast on CPU, enough to exercise the plumbing.
    ``inputs``: the checkpoint's own input settings (iunet.model.InputConfig fields, e.g. alpha)."""
    import torch

    from iunet.model import Checkpoint, InputConfig, ModelConfig, UNet, save_checkpoint

    torch.manual_seed(seed)
    mc = ModelConfig(base_channels=4, depth=4, interactive=interactive)
    return save_checkpoint(Checkpoint(UNet(mc), mc, InputConfig(**{"grid_px": 128, **inputs}), name=name), path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("weights")
    make_checkpoint(d / "a_agnostic.safetensors", "test model A", 0)
    make_checkpoint(d / "b_spleen.safetensors", "test model B", 1)
    make_checkpoint(d / "c_auto.safetensors", "automatic U-Net", 2, interactive=False)
    (d / "notes.safetensors").write_bytes(b"not a checkpoint")
    return d


@pytest.fixture(scope="module")
def models_(weights):
    m = app.configure(weights, precision="fp32")
    return [c.file_name for c in m.checkpoints]


def settings(size_mode=app.DYNAMIC, alpha="1/800", radius=5, show_weights=False, propagate_clicks=True):
    return (size_mode, alpha, radius, *W, show_weights, propagate_clicks)


def load(models_, files, state=None, show_weights=False, session_hash=""):
    request = types.SimpleNamespace(session_hash=session_hash)
    return app.load_files(state, files, models_[0], *settings(show_weights=show_weights), request=request)


def ct_small_path() -> str:
    from pydicom.data import get_testdata_file

    return str(get_testdata_file("CT_small.dcm"))


def pixels(path) -> np.ndarray:
    """The RGB pixels (H, W, 3) of a picture the app returned (a PNG file path)."""
    from PIL import Image

    assert isinstance(path, str) and path.endswith(".png"), path
    return np.asarray(Image.open(path).convert("RGB"))


def is_problem(status) -> bool:
    return isinstance(status, str) and status.startswith("⚠️")


def put_masks(state: Annotation, masks: dict, model: str) -> None:
    """Give slices known masks (no clicks, no propagation), as a user's earlier work would."""
    predictor, path = app._predictor(model)
    vs = state._session(predictor, path)
    for z, m in masks.items():
        vs.set_slice_mask(z, m, propagate=False)


# --------------------------------------------------------------------------- DICOM series writer

def write_series(folder: Path, hu_zyx: np.ndarray, spacing_mm=(2.0, 0.7, 0.7), flip=False) -> list[Path]:
    """Write a display-orientation volume as an axial DICOM series whose loaded display is hu_zyx.

    ``flip``: rows run toward patient right (row cosine −x), which makes the slice normal point
    inferior, so the position-sorted order is the reverse of the display order and every stored
    image is mirrored left-right. Files are shuffled and unnamed; instance numbers run backwards.
    """
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    z_n, y_n, x_n = hu_zyx.shape
    sz, sy, sx = spacing_mm
    uids = (generate_uid(), generate_uid(), generate_uid())
    rng = np.random.default_rng(3)
    paths = []
    for n, z in enumerate(rng.permutation(z_n)):
        if flip:
            img, ipp, iop = hu_zyx[z][:, ::-1], [(x_n - 1) * sx, 0.0, z * sz], [-1, 0, 0, 0, 1, 0]
        else:
            img, ipp, iop = hu_zyx[z], [0.0, 0.0, z * sz], [1, 0, 0, 0, 1, 0]
        ds = ct_dataset(img, ipp, iop, (sy, sx), z_n - z, uids, thickness_mm=sz)
        p = folder / f"IM{n:04d}"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def series_volume(n=5, shape=(40, 48)):
    """A small volume with a bright disk that drifts across the slices (asymmetric on purpose)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    hu = np.full((n, *shape), -100.0, np.float32)
    for z in range(n):
        hu[z][(yy - 18) ** 2 + (xx - 12 - 4 * z) ** 2 <= 36] = 200.0
    return hu


# --------------------------------------------------------------------------- models

def test_checkpoints_listed_by_header_name_and_junk_skipped(weights, models_):
    found, problems = models.find_checkpoints(weights)
    assert [c.name for c in found] == ["test model A", "test model B"]
    assert found[0].label == "test model A (a_agnostic.safetensors)"
    # the automatic U-Net is not offered (it takes no clicks), nor is the junk file
    assert len(problems) == 2 and problems[0].startswith("c_auto.safetensors: an automatic model")
    assert problems[1].startswith("notes.safetensors")
    assert models_ == ["a_agnostic.safetensors", "b_spleen.safetensors"]  # the menu sends file names
    # the predictor is loaded once and shared
    assert models.get_predictor(found[0].path) is models.get_predictor(found[0].path)


def test_precision_follows_the_cpu():
    assert models.choose_precision("cpu", "auto", {"avx2", "avx512f", "avx512_bf16"})[:2] == ("bf16", True)
    assert models.choose_precision("cpu", "auto", {"avx2", "amx_bf16"})[:2] == ("bf16", True)
    dtype, channels_last, reason, runtime = models.choose_precision("cpu", "auto", {"avx2", "avx512f"}, onnx=True)
    assert (dtype, runtime) == ("fp32", "onnx") and "no native bf16" in reason
    dtype, channels_last, reason, runtime = models.choose_precision("cpu", "auto", {"avx2", "avx512f"}, onnx=False)
    assert (dtype, channels_last, runtime) == ("fp32", True, "torch") and "onnxruntime is not installed" in reason
    assert models.choose_precision("cpu", "fp32", {"avx2"}, onnx=True)[3] == "torch"  # asked for: the plain reference
    assert models.choose_precision("cuda", "auto", set(), onnx=True)[3] == "torch"
    assert models.choose_precision("cuda", "auto", set())[:2] == ("fp32", False)
    assert models.choose_precision("cpu", "fp32", set())[:2] == ("fp32", False)  # asked for: the plain reference
    assert models.choose_precision("cuda", "auto", {"avx512_bf16"})[0] == "fp32"
    assert models.choose_precision("cpu", "bf16", set())[0] == "bf16"
    assert models.choose_precision("cpu", "fp32", {"avx512_bf16"})[0] == "fp32"
    with pytest.raises(ValueError, match="precision"):
        models.choose_precision("cpu", "fp8")


def test_a_failing_onnx_export_falls_back_to_torch(weights, models_, monkeypatch):
    import iunet.inference as inference

    def broken(*_a, **_k):
        raise RuntimeError("no kernels for this CPU")

    monkeypatch.setattr(inference, "onnx_session", broken)
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda _flags=None: False)  # a CPU where "auto" picks ONNX Runtime
    monkeypatch.setattr(models, "onnx_available", lambda: True)
    cache = models.PredictorCache()
    cache.configure(device="cpu")
    path = app._checkpoint(models_[0]).path
    p = cache.get(path)
    assert p.runtime == "torch" and p.dtype == "fp32" and p.channels_last
    assert "ONNX Runtime failed" in cache.reason(path) and "no kernels" in cache.reason(path)


def test_configured_precision_reaches_the_shared_predictors(weights, models_):
    path = app._checkpoint(models_[0]).path
    try:
        app.configure(weights, precision="bf16")
        p = models.get_predictor(path)
        assert (p.dtype, p.channels_last) == ("bf16", True)
        assert "bf16" in models.describe_device(p)
    finally:
        app.configure(weights, precision="fp32")
    assert models.get_predictor(path).dtype == "fp32"


def test_no_checkpoints_gives_a_clear_message(tmp_path, weights):
    try:
        demo = app.build_demo(app.AppConfig(weights_dir=str(tmp_path), precision="fp32"))
        assert isinstance(demo, gr.Blocks)
        out = app.load_example_dicom(None, None, *settings())
        assert not is_problem(out[4]) and "No model found" in out[4]  # viewing still works
        state = out[0]
        out = app.api_click(state, 60, 50, app.FOREGROUND, None, *W)
        assert is_problem(out[4]) and "No model found" in out[4] and str(tmp_path) in out[4]
        assert out[0] is state and state.clicks == ()
    finally:
        app.configure(weights, precision="fp32")


def test_build_demo_and_api_names(weights):
    try:
        demo = app.build_demo(app.AppConfig(weights_dir=str(weights), precision="fp32"))
        names = {d.api_name for d in demo.fns.values() if d.api_name}
        assert {"load", "click", "undo", "clear", "slice", "propagate", "open_mask", "export_nifti", "export_png", "export_dicom_seg"} <= names
        assert any(t[1] == "unload" for d in demo.fns.values() for t in d.targets)  # frees a closed page
    finally:
        app.configure(weights, precision="fp32")


def test_parse_args_flags_and_env(monkeypatch):
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("IUNET_WEIGHTS_DIR", "/somewhere")
    monkeypatch.setenv("IUNET_MEMORY_MB", "3000")
    cfg = app.parse_args([])
    assert (cfg.host, cfg.weights_dir, cfg.port, cfg.share) == ("0.0.0.0", "/somewhere", 7860, False)
    assert (cfg.memory_mb, cfg.idle_minutes, cfg.precision) == (3000, 30.0, "auto")
    cfg = app.parse_args(["--host", "127.0.0.1", "--port", "9000", "--share", "--weights-dir", "w",
                          "--precision", "fp32", "--idle-minutes", "5", "--click-batch", "8"])
    assert (cfg.host, cfg.port, cfg.share, cfg.weights_dir) == ("127.0.0.1", 9000, True, "w")
    assert (cfg.precision, cfg.idle_minutes, cfg.click_batch, cfg.max_file_size) == ("fp32", 5.0, 8, "200mb")


def test_gpu_task_uses_spaces_when_importable(monkeypatch):
    fn = lambda: 1  # noqa: E731
    assert models.gpu_task(5)(fn) is fn  # no `spaces` package here: unchanged
    seen = {}
    fake = types.SimpleNamespace(GPU=lambda duration: (seen.setdefault("duration", duration), lambda f: ("wrapped", f))[1])
    monkeypatch.setitem(sys.modules, "spaces", fake)
    assert models.gpu_task(7)(fn) == ("wrapped", fn) and seen["duration"] == 7


def test_app_logs_no_library_requests_at_info(monkeypatch):
    import logging

    seen = {}
    monkeypatch.setattr(app, "launch", lambda demo, config: seen.setdefault("ok", True))
    monkeypatch.setattr(app, "build_demo", lambda config: None)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        root.handlers = []
        app.main([])
        assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
        assert logging.getLogger("iunet.app").getEffectiveLevel() == logging.INFO and seen["ok"]
    finally:
        root.handlers, root.level = handlers, level


# --------------------------------------------------------------------------- loading

def test_load_dicom_file_shows_slice_and_info(models_):
    state, image, heat, info, status, slider, download, upload = load(models_, [ct_small_path()])
    assert isinstance(state, Annotation) and state.volume.kind == "dicom"
    assert pixels(image).shape == (512, 512, 3)  # 128 px shown 4× larger
    assert heat == gr.skip()  # the weight map is not computed while hidden
    assert "CT_small" in status and "128×128" in info and "0 px" in info
    assert slider["visible"] is False and download is None and upload is None


@pytest.mark.parametrize("kind", ["files", "folder_zip", "nifti", "mha", "nhdr_pair", "png", "jpeg"])
def test_load_each_input_kind(models_, tmp_path, kind):
    hu = series_volume()
    if kind == "files":
        files = write_series(tmp_path / "s", hu)
    elif kind == "folder_zip":
        paths = write_series(tmp_path / "s", hu)
        files = [tmp_path / "series.zip"]
        with zipfile.ZipFile(files[0], "w") as z:
            for p in paths:
                z.write(p, f"DICOM/{p.name}")
    elif kind == "nifti":
        import nibabel as nib

        files = [tmp_path / "vol.nii.gz"]
        nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), np.diag([-0.7, -0.7, 2.0, 1.0])), str(files[0]))
    elif kind in ("mha", "nhdr_pair"):  # ITK's and 3D Slicer's formats; LPS axes = the display's
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(hu.astype(np.int16))
        img.SetSpacing((0.7, 0.7, 2.0))
        name = "vol.mha" if kind == "mha" else "vol.nhdr"
        sitk.WriteImage(img, str(tmp_path / name), True)
        files = [tmp_path / name] if kind == "mha" else []
        for f in sorted(tmp_path.iterdir()) if kind == "nhdr_pair" else ():  # as an upload: each in its own folder
            (tmp_path / f"up_{f.name}").mkdir()
            files.append((tmp_path / f"up_{f.name}" / f.name))
            files[-1].write_bytes(f.read_bytes())
    else:
        from PIL import Image

        files = [tmp_path / ("img.png" if kind == "png" else "img.jpg")]
        Image.fromarray(np.clip(hu[2] + 160, 0, 255).astype(np.uint8)).save(files[0])
    state, image, _, info, status, slider, _, _ = load(models_, [str(f) for f in files])
    assert not is_problem(status), status
    n = 1 if kind in ("png", "jpeg") else 5
    assert state.volume.n_slices == n and state.z == n // 2  # volumes start in the middle
    # the slider counts from 1, like the text ("Slice 3 / 5") and the export names
    assert slider["visible"] is (n > 1) and slider["value"] == n // 2 + 1 and slider["minimum"] == 1
    assert f"Slice {n // 2 + 1} / {n}" in info
    assert pixels(image).shape[:2] == (40 * 10, 48 * 10)  # 48 px wide → 10× on screen
    if kind in ("files", "folder_zip", "nifti", "mha", "nhdr_pair"):
        np.testing.assert_allclose(state.volume.hu, hu, atol=0.5)
    if kind == "nhdr_pair":
        assert len(files) == 2 and "vol" in status and state.name == "vol"  # named after the header
    if kind == "files":
        assert state.volume.slice_source(state.z).file_name in info  # the file this slice came from


def _flipped_gzip(path: Path) -> None:
    import nibabel as nib

    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.integers(-1000, 1000, (64, 64, 6)).astype(np.int16), np.eye(4)), str(path))
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 2048] = bytes(b ^ 0xFF for b in data[mid : mid + 2048])
    path.write_bytes(bytes(data))


def _huge_nifti_header(path: Path) -> None:
    import gzip
    import io

    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((512, 512, 2500))
    header.set_data_dtype(np.int16)
    buf = io.BytesIO()
    header.write_to(buf)
    path.write_bytes(gzip.compress(buf.getvalue() + b"\0" * 1000))  # 1.3 GB declared, never decoded


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("empty.dcm", "empty"),
        ("junk.bin", "not a recognised"),
        ("broken.dcm", "DICOM"),
        ("four_d.nii.gz", "4D"),
        ("huge.png", "largest slice"),
        ("giant.png", "too large"),
        ("dot.png", "'dot' is 1×1 pixels; the app needs slices of at least 16×16"),
        ("flipped.nii.gz", "damaged"),
        ("huge_header.nii.gz", "too large"),
        ("renamed_text.nii.gz", "not a NIfTI"),
    ],
)
def test_bad_inputs_give_a_message_and_keep_the_state(models_, tmp_path, name, fragment):
    import nibabel as nib
    from PIL import Image

    path = tmp_path / "gradio_upload_0123abcd" / name  # like Gradio's temporary upload folders
    path.parent.mkdir()
    if name == "empty.dcm":
        path.write_bytes(b"")
    elif name == "junk.bin":
        path.write_bytes(os.urandom(2000))
    elif name == "broken.dcm":
        good = Path(ct_small_path()).read_bytes()
        path.write_bytes(good[: len(good) // 2])  # truncated in the pixel data
    elif name == "four_d.nii.gz":
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.int16), np.eye(4)), str(path))
    elif name == "huge.png":
        Image.new("L", (3000, 40)).save(path)
    elif name == "giant.png":
        from test_ct_io import _png_header_only

        _png_header_only(path, 30000, 30000)
    elif name == "dot.png":
        Image.new("L", (1, 1)).save(path)
    elif name == "flipped.nii.gz":
        _flipped_gzip(path)
    elif name == "huge_header.nii.gz":
        _huge_nifti_header(path)
    else:
        path.write_text("just some text\n" * 50)
    before = load(models_, [ct_small_path()])[0]
    out = load(models_, [str(path)], state=before)
    assert is_problem(out[4]) and fragment.lower() in out[4].lower(), out[4]
    assert str(tmp_path) not in out[4] and "0123abcd" not in out[4]  # no server folder in the page
    assert out[0] is before and all(o == gr.skip() for o in out[1:4])
    assert before.released is None and before.volume.n_slices == 1  # the image you had stays


def test_export_names_drop_the_input_suffix():
    from iunet_app.annotation import file_stem

    names = ["ct.nii.gz", "ct.NRRD", "ct.nhdr", "ct.mha", "ct.mhd", "ct.dcm", "ct.zip", "ct.png"]
    assert {file_stem(f"/tmp/up/{n}") for n in names} == {"ct"}
    assert file_stem("my scan (1).raw.gz") == "my_scan_1_.raw.gz" and file_stem("...") == "ct"


def test_a_new_upload_replaces_the_image(models_, tmp_path):
    from PIL import Image

    Image.fromarray(np.full((32, 40), 100, np.uint8)).save(tmp_path / "second.png")
    first = load(models_, [ct_small_path()])[0]
    out = load(models_, [str(tmp_path / "second.png")], state=first)
    second = out[0]
    assert not is_problem(out[4]) and second is not first and second.name == "second"
    assert second.shape == (32, 40) and "second" in out[4]
    assert out[7] is None  # the upload box is emptied: the next upload starts a new list
    assert first.released and first not in app.SESSIONS and second in app.SESSIONS  # old image freed


def test_too_many_voxels_is_refused_before_decoding(models_, monkeypatch):
    monkeypatch.setattr(app, "MAX_VOXELS", 100 * 100)
    out = load(models_, [ct_small_path()])
    assert is_problem(out[4]) and "too large" in out[4] and out[0] is None


def test_no_file_and_wrong_settings(models_):
    out = load(models_, None)
    assert is_problem(out[4]) and "No file" in out[4]
    out = app.load_files(None, [ct_small_path()], models_[0], app.FIXED, "1/800", 99, *W)
    assert is_problem(out[4]) and "radius" in out[4]


# --------------------------------------------------------------------------- memory

class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_memory_is_bounded_and_freed(models_, tmp_path, monkeypatch):
    """A budget for one active tab and one new full-size image: a third tab waits until another
    is idle; closing a page, idling and replacing an image free memory; the total never exceeds
    the budget."""
    from iunet_app import sessions

    clock = _Clock()
    monkeypatch.setattr(sessions.time, "monotonic", clock)
    registry = sessions.SessionRegistry(budget_bytes=10**9, idle_s=600, evict_idle_s=120)
    monkeypatch.setattr(app, "SESSIONS", registry)
    monkeypatch.setattr(app, "MAX_VOXELS", 512 * 512)  # a full-size image: 1 MB of HU
    a = load(models_, [ct_small_path()], session_hash="tab-a")[0]
    b = load(models_, [ct_small_path()], session_hash="tab-b")[0]
    b = app.api_click(b, 60, 50, app.FOREGROUND, models_[0], *W)[0]
    assert len(registry) == 2 and registry.total_bytes() == a.nbytes() + b.nbytes()
    assert b.nbytes() > a.nbytes() == 128 * 128 * 4  # b's mask, undo history and model inputs count too
    registry.budget_bytes = b.nbytes() + 512 * 512 * 4  # b and one more full-size image, not a too
    out = load(models_, [ct_small_path()], session_hash="tab-c")
    assert is_problem(out[4]) and "memory limit" in out[4] and out[0] is None  # a and b are active
    assert registry.total_bytes() <= registry.budget_bytes
    clock.t += 200  # both idle for longer than evict_idle_s, then b is used again
    app.on_window(b, models_[0], *W)
    out = load(models_, [ct_small_path()], session_hash="tab-c")
    c = out[0]
    assert isinstance(c, Annotation) and a.released and not b.released, out[4]  # a made room
    out = app.api_click(a, 60, 50, app.FOREGROUND, models_[0], *W)
    assert is_problem(out[4]) and "Load it again" in out[4]
    assert registry.total_bytes() <= registry.budget_bytes
    # the page of tab b is closed: freed at once
    app.on_page_closed(types.SimpleNamespace(session_hash="tab-b"))
    assert b.released and b not in registry and b.nbytes() == 0 and b.vs is None
    # tab c stays idle past idle_s: the sweeper frees it
    clock.t += 601
    assert registry.release_idle() == 1 and c.released and len(registry) == 0 and registry.total_bytes() == 0


def test_click_history_counts_towards_memory(models_, ct_small):
    assert ct_small.nbytes() == 128 * 128 * 4  # the HU only
    s = app.api_click(ct_small, 60, 50, app.FOREGROUND, models_[0], *W)[0]
    grid = 128 * 128 * 4  # the prepared model input of the slice
    assert s.nbytes() >= 128 * 128 * 4 + 128 * 128 + grid  # HU + 3D mask + model input (+ packed undo)
    before, had_mask = s.nbytes(), bool(s.mask().any())
    s = app.on_clear(s, models_[0], *W)[0]  # clearing is undoable: the old slice mask is kept, packed
    assert s.nbytes() == before + (128 * 128 // 8 if had_mask else 0)


# --------------------------------------------------------------------------- clicks

@pytest.fixture
def ct_small(models_):
    return load(models_, [ct_small_path()])[0]


def test_click_before_upload_and_outside(models_, ct_small):
    out = app.api_click(None, 10, 10, app.FOREGROUND, models_[0], *W)
    assert is_problem(out[4]) and "Upload a CT" in out[4] and out[0] is None
    out = app.api_click(ct_small, 128, 10, app.FOREGROUND, models_[0], *W)
    assert is_problem(out[4]) and "outside the image" in out[4]
    out = app.on_select(ct_small, app.FOREGROUND, models_[0], *W, *CLICK, gr.SelectData(None, {"index": None, "value": None}))
    assert is_problem(out[4]) and "inside the image" in out[4]
    out = app.api_click(ct_small, -0.5, 10, app.FOREGROUND, models_[0], *W)  # left of pixel 0, not on it
    assert is_problem(out[4]) and "outside the image" in out[4]
    assert ct_small.clicks == ()


def test_values_out_of_the_controls_range_get_the_apps_words(models_, ct_small):
    """A number typed outside a slider's or box's range reaches the handler (Gradio's own range
    error would blank the picture), which says what is wrong and changes nothing; a display
    window that cannot be drawn refuses the action before it happens."""
    assert app.TypedSlider(1, 24, value=3).preprocess(0) == 0
    assert app.TypedSlider(1, 24, value=3).preprocess(None) is None
    assert app.TypedNumber(30, minimum=1, maximum=500, precision=0).preprocess(501.4) == 501
    assert app.TypedSlider(1, 2).get_block_name() == "slider" and not list(Path(app.__file__).parent.glob("*.pyi"))
    with pytest.raises(gr.Error):
        gr.Slider(1, 24, value=3).preprocess(0)  # what it replaces
    evt = gr.SelectData(None, {"index": [243, 101], "value": None, "selected": True})
    for level, width, words in ((40.0, 0.0, "more than 0 HU"), (None, 400.0, "Enter a number for the window level")):
        out = app.on_select(ct_small, app.FOREGROUND, models_[0], level, width, *CLICK, evt)
        assert is_problem(out[4]) and words in out[4] and out[1] is not None  # the picture is kept (a skip)
        out = app.on_undo(ct_small, models_[0], level, width)
        assert is_problem(out[4]) and words in out[4]
    assert ct_small.clicks == ()
    out = app.on_select(ct_small, app.FOREGROUND, models_[0], *W, app.FIXED, "1/800", 40, True, evt)
    assert is_problem(out[4]) and "click radius must be between" in out[4] and ct_small.clicks == ()
    out = app.on_window(ct_small, models_[0], -1500.0, 5000.0)  # beyond the sliders, still a window
    assert not is_problem(out[4]) and out[1].endswith(".png")


def test_select_converts_display_xy_to_slice_yx_once(models_, ct_small):
    # CT_small (128 px) is shown 4× larger: displayed (x=243, y=101) is slice pixel (y=25, x=60).
    evt = gr.SelectData(None, {"index": [243, 101], "value": None, "selected": True})
    state, image, heat, info, status = app.on_select(ct_small, app.FOREGROUND, models_[0], *W, *CLICK, evt)
    assert not is_problem(status), status
    (click,) = state.clicks
    assert (click.y, click.x, click.positive) == (25, 60, True)
    assert "row 25, column 60" in status
    # the centre of the click is drawn there in the displayed image (foreground green)
    assert tuple(pixels(image)[25 * 4 + 2, 60 * 4 + 2]) == rendering.POSITIVE_RGB


def test_click_updates_mask_area_and_latency(models_):
    ct_small = load(models_, [ct_small_path()], show_weights=True)[0]
    state, image0, *_ = app._view(ct_small, models_[0], *W, "")
    state, image, heat, info, status = app.api_click(ct_small, 60, 50, app.FOREGROUND, models_[0], *W)
    mask = state.mask()
    sy, sx = state.volume.spacing_mm[1:]
    assert mask.shape == (128, 128)
    assert f"{int(mask.sum()):,} px = **{mask.sum() * sy * sx:,.1f} mm²**" in info
    assert "ms model time" in info and "CPU" in info and "fp32" in info and "test model A" in info
    assert state.last_latency_ms > 0
    assert state.vs.zoom_out is not None  # a large organ's first click is seen zoomed out, as iunet-zoomout
    assert not np.array_equal(pixels(image), pixels(image0))  # click marker (and mask, if any) drawn
    expected = rendering.render_slice(state.image_hu, *W, mask, state.clicks, 4)
    np.testing.assert_array_equal(pixels(image), expected)
    np.testing.assert_array_equal(pixels(heat), rendering.render_weight_map(mask, state.clicks, 4))


def test_weight_map_is_computed_only_while_shown(models_, ct_small, monkeypatch):
    calls = []
    real = rendering.render_weight_map
    monkeypatch.setattr(rendering, "render_weight_map", lambda *a: calls.append(1) or real(*a))
    s, _, heat, _, _ = app.api_click(ct_small, 60, 50, app.FOREGROUND, models_[0], *W)
    assert heat == gr.skip() and calls == []
    s, _, heat, _, _ = app.on_weight_map(s, True, models_[0], *W)
    assert heat["visible"] is True and pixels(heat["value"]).shape == (512, 512, 3) and len(calls) == 1
    s, _, heat, _, _ = app.api_click(s, 62, 52, app.FOREGROUND, models_[0], *W)
    assert pixels(heat).shape == (512, 512, 3) and len(calls) == 2
    s, _, heat, _, _ = app.on_weight_map(s, False, models_[0], *W)
    assert heat["visible"] is False and heat["value"] is None and len(calls) == 2


def test_background_click_and_undo_restores_exactly(models_, ct_small):
    s = app.api_click(ct_small, 60, 50, app.FOREGROUND, models_[0], *W)[0]
    first = s.mask().copy()
    s = app.api_click(s, 20, 100, app.BACKGROUND, models_[0], *W)[0]
    assert [c.positive for c in s.clicks] == [True, False]
    s, _, _, info, status = app.on_undo(s, models_[0], *W)
    assert status == "Undid the last action." and len(s.clicks) == 1
    np.testing.assert_array_equal(s.mask(), first)
    s = app.on_undo(s, models_[0], *W)[0]
    assert s.clicks == () and not s.mask().any()
    assert app.on_undo(s, models_[0], *W)[4] == "Nothing to undo."


def test_wider_and_closer_view_of_a_first_click_and_undo(models_, ct_small):
    """Wider / Closer view predict the slice's only click again zoomed out / in (the closer
    view's mask stays inside a square a third of the slice wide around the click); each is
    undone like a click; with no click, two clicks or a background click the page says why and
    the state is kept."""
    from iunet.inference import ZoomOut

    out = app.on_view_in(ct_small, models_[0], *W)
    assert is_problem(out[4]) and "this one has no click" in out[4]
    s, _, _, _, status = app.api_click(ct_small, 60, 50, app.FOREGROUND, models_[0], *W)
    assert status.endswith("Not the structure you meant? Try Wider view or Closer view.")  # a first click says so
    first = s.mask().copy()
    s, image, _, info, status = app.on_view_in(s, models_[0], *W)
    assert status == "This slice's click seen zoomed in: the spot itself (Undo goes back)."
    y0, x0, side = ZoomOut()._view(s.clicks[0], s.shape)  # the click is at row 50, column 60
    assert side == round(max(s.shape) / 3) and y0 <= 50 < y0 + side and x0 <= 60 < x0 + side
    outside = np.ones(s.shape, bool)
    outside[y0 : y0 + side, x0 : x0 + side] = False
    assert s.mask().any() and not (s.mask() & outside).any() and len(s.clicks) == 1
    s, _, _, _, status = app.on_view_out(s, models_[0], *W)
    assert status.startswith("This slice's click seen zoomed out")
    s = app.on_undo(s, models_[0], *W)[0]
    s = app.on_undo(s, models_[0], *W)[0]
    np.testing.assert_array_equal(s.mask(), first)
    s, _, _, _, status = app.api_click(s, 20, 100, app.BACKGROUND, models_[0], *W)
    assert "Not the structure" not in status  # not after a second click
    kept = s.mask().copy()
    out = app.on_view_out(s, models_[0], *W)
    assert is_problem(out[4]) and "this one has 2 clicks" in out[4] and out[0] is s
    np.testing.assert_array_equal(s.mask(), kept)


def test_clear_empties_the_mask_and_undo_brings_it_back(models_, ct_small):
    s = app.api_click(ct_small, 60, 50, app.FOREGROUND, models_[0], *W)[0]
    s = app.api_click(s, 70, 55, app.FOREGROUND, models_[0], *W)[0]
    kept = s.mask().copy()
    s, image, _, info, status = app.on_clear(s, models_[0], *W)
    assert status.startswith("Cleared the mask on every slice") and s.clicks == () and not s.mask().any()
    assert "0 px" in info
    s = app.on_undo(s, models_[0], *W)[0]
    assert len(s.clicks) == 2 and np.array_equal(s.mask(), kept)
    s = app.on_clear(s, models_[0], *W)[0]
    assert app.on_clear(s, models_[0], *W)[4] == "There is no mask to clear."


def test_fixed_and_dynamic_click_size(models_, ct_small):
    s = app.on_click_size(ct_small, app.FIXED, "1/800", 9, models_[0], *W)[0]
    s = app.api_click(s, 60, 50, app.FOREGROUND, models_[0], *W)[0]
    s = app.api_click(s, 62, 52, app.FOREGROUND, models_[0], *W)[0]
    assert [c.radius_px for c in s.clicks] == [9.0, 9.0]
    s = app.on_clear(s, models_[0], *W)[0]
    s = app.on_click_size(s, app.DYNAMIC, "1/500", 4, models_[0], *W)[0]
    s = app.api_click(s, 60, 50, app.FOREGROUND, models_[0], *W)[0]
    area = int(s.mask().sum())
    s, image, _, info, _ = app.api_click(s, 62, 52, app.FOREGROUND, models_[0], *W)
    first, second = s.clicks
    assert first.radius_px == 4.0  # no mask yet: the first-click radius
    assert second.radius_px == pytest.approx(min(max(area / 500, 1.0), 15.0))
    assert "dynamic α=1/500" in info
    # the circle of the first click is drawn at its radius (4 px × 4 on screen = 16 px)
    cy, cx = (50 + 0.5) * 4, (60 + 0.5) * 4
    assert tuple(pixels(image)[int(cy), int(cx + 4 * 4.0)]) == rendering.POSITIVE_RGB


WINDOW_LUNG = (-600.0, 1500.0)


def test_window_changes_the_picture_not_the_model(models_, ct_small):
    s = app.api_click(ct_small, 60, 50, app.FOREGROUND, models_[0], *W)[0]
    m = s.mask().copy()
    s2, img_bone, _, _, _, preset = app.on_window(s, models_[0], 400, 1800)
    assert preset == app.CUSTOM_WINDOW
    img_abd = app._view(s, models_[0], *W, "")[1]
    assert not np.array_equal(pixels(img_bone), pixels(img_abd))
    np.testing.assert_array_equal(s2.mask(), m)
    out = app.on_window_preset(s, "lung", models_[0], *W)
    assert out[-2:] == WINDOW_LUNG
    # the same click under another display window predicts the same mask
    other = load(models_, [ct_small_path()])[0]
    other = app.api_click(other, 60, 50, app.FOREGROUND, models_[0], -600, 1500)[0]
    np.testing.assert_array_equal(other.mask(), m)
    assert is_problem(app.on_window(s, models_[0], 40, 0)[4])


def test_switching_model_replays_the_clicks(models_, ct_small):
    s = app.api_click(ct_small, 60, 50, app.FOREGROUND, models_[0], *W)[0]
    s = app.api_click(s, 30, 90, app.BACKGROUND, models_[0], *W)[0]
    s, _, _, info, status, *_ = app.on_model(s, models_[1], *W)
    assert "replayed" in status and "test model B" in info
    assert [(c.y, c.x, c.positive) for c in s.clicks] == [(50, 60, True), (90, 30, False)]
    expected = models.get_predictor(app._checkpoint(models_[1]).path).predict(s.image_hu, s.clicks) >= 0.5
    np.testing.assert_array_equal(s.mask(), expected)  # the new model's answer to both clicks
    # a click with a model that is not in the menu (e.g. the automatic U-Net's file)
    for name in ("/nope.safetensors", "c_auto.safetensors"):
        out = app.api_click(s, 60, 50, app.FOREGROUND, name, *W)
        assert is_problem(out[4]) and "Model" in out[4]


@pytest.mark.parametrize("side_px", [512, 2048])
def test_outline_survives_the_pages_downscaling(side_px):
    """Slices of 512 px and more are drawn 1:1 and shown smaller with nearest-neighbour
    scaling (about 470 px high): the outline is wide enough that every display row crossing the
    mask still shows it on both sides."""
    yy, xx = np.mgrid[:side_px, :side_px]
    c, r = side_px / 2, side_px / 4
    disk = (yy - c) ** 2 + (xx - c) ** 2 <= r * r
    hu = np.where(disk, 60.0, -100.0).astype(np.float32)
    rgb = rendering.render_slice(hu, *W, disk, (), rendering.display_scale(hu.shape))
    pick = np.floor((np.arange(470) + 0.5) * side_px / 470).astype(int)  # the browser's nearest rows / columns
    shown = rgb[pick][:, pick]
    outline = (shown == rendering.CONTOUR_RGB).all(axis=-1)
    rows = np.flatnonzero(disk[pick][:, pick].any(axis=1))[2:-2]  # rows through the disk (not its tangent ends)
    assert all(outline[y].sum() >= 2 for y in rows), [int(outline[y].sum()) for y in rows if outline[y].sum() < 2]
    assert rendering.line_px((side_px, side_px), 1) == {512: 2, 2048: 5}[side_px] and rendering.line_px((128, 128), 4) == 2


def test_pictures_are_files_of_each_tab(models_):
    """Two tabs showing the same picture get files of their own (Gradio rewrites a cached file
    that two answers share while serving it), and a tab keeps only its last few pictures."""
    a, b = (load(models_, [ct_small_path()])[0] for _ in range(2))
    ia, ib = app._view(a, models_[0], *W, "")[1], app._view(b, models_[0], *W, "")[1]
    assert ia != ib and Path(ia).parent.parent == a.export_dir()
    np.testing.assert_array_equal(pixels(ia), pixels(ib))
    for _ in range(6):
        app._view(a, models_[0], *W, "")
    assert len(list((a.export_dir() / "view").glob("slice_*.png"))) == 4


def test_users_never_share_state(models_):
    a = load(models_, [ct_small_path()])[0]
    b = load(models_, [ct_small_path()])[0]
    a = app.api_click(a, 60, 50, app.FOREGROUND, models_[0], *W)[0]
    assert len(a.clicks) == 1 and b.clicks == () and not b.mask().any()
    assert a.export_dir() != b.export_dir()


def test_concurrent_clicks_share_forward_passes(models_):
    """Eight users click at once: their clicks run in fewer forward passes than clicks, and each
    user gets the mask the model gives for their own click alone."""
    users = [load(models_, [ct_small_path()])[0] for _ in range(8)]
    points = [(40 + 3 * i, 50 + 2 * i) for i in range(8)]
    before = (batching.BATCHER.n_passes, batching.BATCHER.n_requests)
    gate = threading.Barrier(8)
    results = [None] * 8

    def click(i):
        gate.wait()
        results[i] = app.api_click(users[i], points[i][1], points[i][0], app.FOREGROUND, models_[0], *W)

    threads = [threading.Thread(target=click, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    n_passes = batching.BATCHER.n_passes - before[0]
    n_requests = batching.BATCHER.n_requests - before[1]
    predictor = models.get_predictor(app._checkpoint(models_[0]).path)
    class Counting:  # counts the slices the first-click rule predicts (a zoomed-in look, kept or not)
        n = 0

        def __getattr__(self, name):
            return getattr(predictor, name)

        def predict_prepared(self, images, *a, **k):
            self.n += len(images)
            return predictor.predict_prepared(images, *a, **k)

    counting = Counting()
    for i, (y, x) in enumerate(points):
        assert not is_problem(results[i][4]) and (users[i].clicks[0].y, users[i].clicks[0].x) == (y, x)
        prob = predictor.predict(users[i].image_hu, users[i].clicks)
        zoomed = ZOOM_OUT.zoom_in(counting, users[i].image_hu, prob, users[i].clicks)  # the app's first-click rule
        alone = (prob if zoomed is None else zoomed) >= 0.5
        assert np.count_nonzero(users[i].mask() != alone) <= 2  # batch neighbours change nothing but rounding
    # one request per click (two where the first click is looked at again zoomed in), in fewer passes
    assert n_requests == 8 + counting.n and n_passes < n_requests, (n_requests, n_passes)


def test_unexpected_errors_become_messages(models_, ct_small, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(batching.BATCHER, "predict_prepared", boom)
    out = app.api_click(ct_small, 60, 50, app.FOREGROUND, models_[0], *W)
    assert is_problem(out[4]) and "Something went wrong (RuntimeError: kaboom)" in out[4]
    assert out[0] is ct_small and ct_small.clicks == () and not ct_small.mask().any()


def test_a_failing_request_in_a_batch_does_not_fail_the_others():
    class Stub:
        calls = 0

        def forward_inputs(self, x, shapes, boxes=None):
            Stub.calls += 1
            if (x < 0).any():  # the broken request's input
                raise RuntimeError("broken request")
            return [np.full(sh, 0.75, np.float32) for sh in shapes]

    stub = Stub()
    good = batching._Request(stub, torch.zeros((1, 3, 8, 8)), [(4, 5)])
    bad = batching._Request(stub, -torch.ones((1, 3, 8, 8)), [(4, 5)])
    batching.ForwardBatcher()._run([good, bad])
    assert good.error is None and good.result[0].shape == (4, 5)
    assert isinstance(bad.error, RuntimeError) and bad.result is None
    assert Stub.calls == 3  # the shared pass, then each request alone


def test_batched_requests_of_two_grid_sizes_run_in_a_pass_each():
    """A zoomed-out first click (a smaller grid, with its box) queued beside full-grid requests:
    one forward pass per grid size, each request gets its own results and boxes."""
    seen = []

    class Stub:
        def forward_inputs(self, x, shapes, boxes=None):
            seen.append((tuple(x.shape), list(boxes)))
            return [np.full(sh, float(x.shape[-1]), np.float32) for sh in shapes]

    stub = Stub()
    a = batching._Request(stub, torch.zeros((2, 3, 8, 8)), [(4, 5), (6, 6)])
    zoomed = batching._Request(stub, torch.zeros((1, 3, 6, 6)), [(4, 5)], [(1, 5, 1, 5)])
    b = batching._Request(stub, torch.zeros((1, 3, 8, 8)), [(3, 3)])
    batching.ForwardBatcher()._run([a, zoomed, b])
    assert sorted(seen) == [((1, 3, 6, 6), [(1, 5, 1, 5)]), ((3, 3, 8, 8), [None, None, None])]
    assert [r.shape for r in a.result] == [(4, 5), (6, 6)] and a.result[0][0, 0] == 8.0
    assert zoomed.result[0].shape == (4, 5) and zoomed.result[0][0, 0] == 6.0 and b.result[0].shape == (3, 3)


def test_batched_predictor_is_the_predictor_for_sessions(models_):
    predictor, path = app._predictor(models_[0])
    assert predictor is app._predictor(models_[0])[0]  # one proxy per model, shared by all users
    real = models.get_predictor(path)
    assert predictor.unwrapped is real and predictor.grid_px == real.grid_px and predictor.inputs is real.inputs
    img = np.zeros((40, 50), np.float32)
    np.testing.assert_allclose(predictor.predict(img), real.predict(img), atol=1e-6)


# --------------------------------------------------------------------------- volumes and export

class DiskModel:
    """A stand-in for the model with a known answer: probability 1 on the bright (> 100 HU)
    connected component under the foreground clicks, minus those under background clicks.
    The real VolumeSession, batcher and app run around it."""

    def __init__(self, real):
        self.inputs, self.config, self.device = real.inputs, real.config, real.device
        self.dtype, self.channels_last = "fp32", False

    def prepare(self, image_hu):
        import torch

        return torch.from_numpy(np.asarray(image_hu, np.float32))[None]

    def prepare_zoomed_out(self, image, factor, margin_px):
        return image, (0, image.shape[-2], 0, image.shape[-1])  # its answer does not depend on the field of view

    def build_inputs(self, images, shapes, clicks, prev_masks=None, boxes=None, prev_images=None):
        """(B, 3, Y, X): the slice, its foreground click points, its background click points."""
        import torch

        x = torch.zeros((len(images), 3, *images[0].shape[1:]))
        for i, (im, cl) in enumerate(zip(images, clicks)):
            x[i, 0] = im[0]
            for c in cl:
                x[i, 1 if c.positive else 2, c.y, c.x] = 1.0
        return x

    def forward_inputs(self, x, shapes, boxes=None):
        from scipy import ndimage

        out = []
        for xi in x.numpy():
            labels, _ = ndimage.label(xi[0] > 100)
            keep = set(labels[xi[1] > 0]) - set(labels[xi[2] > 0])
            out.append(np.isin(labels, sorted(keep - {0})).astype(np.float32))
        return out

    def predict_prepared(self, images, shapes, clicks, prev_masks=None, boxes=None, prev_images=None):
        return self.forward_inputs(self.build_inputs(images, shapes, clicks, prev_masks), shapes)


@pytest.fixture
def disk_model(models_, monkeypatch):
    """The app's model menu entry models_[0] answered by DiskModel (through the batcher)."""
    info = app._checkpoint(models_[0])
    stand_in = batching.BatchedPredictor(DiskModel(models.get_predictor(info.path)), info.path)
    monkeypatch.setattr(app, "_predictor", lambda model: (stand_in, info.path))
    return models_[0]


def test_volume_clicks_segment_in_3d_undo_and_clear(disk_model, tmp_path):
    """One click on a volume segments the object on every slice; the mask shows as the slider
    moves; a background click refines it in 3D; undo restores it exactly; clear empties it."""
    hu = series_volume(n=7)
    disk = hu > 100
    files = write_series(tmp_path / "s", hu)
    s = load([disk_model], [str(p) for p in files])[0]
    assert s.z == 3
    out = app.on_propagate(s, disk_model, 30, *W)
    assert is_problem(out[4]) and "Segment the object" in out[4] and out[5] is None
    s, _, _, info, status = app.api_click(s, 24, 18, app.FOREGROUND, disk_model, *W)  # the disk on slice 4
    assert "Slices changed: 1–7" in status
    np.testing.assert_array_equal(s.mask_volume(), disk)
    assert "7 of 7 slices with a mask (1–7)" in info
    ml = disk.sum() * 2.0 * 0.7 * 0.7 / 1000
    assert f"**{ml:,.2f} mL**" in info and "1 click in all" in info
    # the 3D mask is drawn on every slice as the slider moves (slider numbers count from 1)
    s, image, _, info, status = app.on_slice(s, 1, disk_model, *W)
    assert s.z == 0 and status == "Slice 1 of 7." and "Slice 1 / 7" in info
    assert f"**Mask area:** {int(disk[0].sum())} px" in info
    np.testing.assert_array_equal(pixels(image), rendering.render_slice(hu[0], *W, disk[0], (), 10))
    # a background click on slice 6 removes the disk there and beyond, not below the clicked slice 4
    s = app.on_slice(s, 6, disk_model, *W)[0]
    s, _, _, info, status = app.api_click(s, 32, 18, app.BACKGROUND, disk_model, *W)
    assert s.annotated_slices() == [0, 1, 2, 3, 4] and "Slices changed: 6–7" in status
    assert "5 of 7 slices with a mask (1–5)" in info and "2 clicks in all" in info
    s = app.on_undo(s, disk_model, *W)[0]
    np.testing.assert_array_equal(s.mask_volume(), disk)  # exactly the 3D mask before
    s = app.on_clear(s, disk_model, *W)[0]
    assert not s.mask_volume().any() and s.n_clicks == 0
    s = app.on_undo(s, disk_model, *W)[0]
    np.testing.assert_array_equal(s.mask_volume(), disk)
    # the 3D mask goes out as NIfTI on the input's grid
    nifti = app.export_nifti(s)[5]
    np.testing.assert_array_equal(read_nifti_mask(nifti, like=s.volume).astype(bool), disk)
    for bad in (0, 8, 2.5, "x"):
        assert is_problem(app.on_slice(s, bad, disk_model, *W)[4])


def test_clicks_on_one_slice_only_and_explicit_propagation(disk_model, tmp_path):
    hu = series_volume(n=7)
    disk = hu > 100
    s = load([disk_model], [str(p) for p in write_series(tmp_path / "s", hu)])[0]
    s = app.on_propagate_clicks(s, False, disk_model, *W)[0]
    s = app.api_click(s, 24, 18, app.FOREGROUND, disk_model, *W)[0]
    assert s.annotated_slices() == [3]  # only the clicked slice
    s, _, _, info, status, nifti = app.on_propagate(s, disk_model, 2, *W)  # at most 2 slices each way
    assert "Propagated: slices 2–6 have a mask" in status and nifti.endswith("_mask.nii.gz")
    assert s.annotated_slices() == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(read_nifti_mask(nifti, like=s.volume).astype(bool), s.mask_volume())
    s = app.on_propagate(s, disk_model, 30, *W)[0]
    np.testing.assert_array_equal(s.mask_volume(), disk)
    s = app.on_undo(s, disk_model, *W)[0]
    assert s.annotated_slices() == [1, 2, 3, 4, 5]  # propagation is undone as one action


def test_switching_model_replays_clicks_on_every_slice(disk_model, models_, tmp_path, monkeypatch):
    hu = series_volume(n=5)
    s = load([disk_model], [str(p) for p in write_series(tmp_path / "s", hu)])[0]
    s = app.api_click(s, 20, 18, app.FOREGROUND, disk_model, *W)[0]
    s = app.on_slice(s, 1, disk_model, *W)[0]
    s = app.api_click(s, 12, 18, app.BACKGROUND, disk_model, *W)[0]
    clicks = list(s.vs.clicks)
    # the second menu entry is the same stand-in under another name: the clicks are replayed on it
    info_b = app._checkpoint(models_[1])
    stand_in_b = batching.BatchedPredictor(DiskModel(models.get_predictor(info_b.path)), info_b.path)
    monkeypatch.setattr(app, "_predictor", lambda model: (stand_in_b, info_b.path))
    before = s.mask_volume()
    s, _, _, _, status, *_ = app.on_model(s, models_[1], *W)
    assert "replayed" in status and [(z, c.y, c.x, c.positive, c.radius_px) for z, c in s.vs.clicks] == [
        (z, c.y, c.x, c.positive, c.radius_px) for z, c in clicks
    ]
    np.testing.assert_array_equal(s.mask_volume(), before)


def test_switching_model_keeps_a_propagation_and_undo_goes_back_through_it(disk_model, models_, tmp_path, monkeypatch):
    """A model switch replays every action (clicks, the explicit propagation, a clear) on the new
    model, so a propagated 3D mask is not lost and Undo steps back through the same actions."""
    hu = series_volume(n=7)
    disk = hu > 100
    s = load([disk_model], [str(p) for p in write_series(tmp_path / "s", hu)])[0]
    s = app.on_propagate_clicks(s, False, disk_model, *W)[0]
    s = app.api_click(s, 24, 18, app.FOREGROUND, disk_model, *W)[0]
    s = app.on_propagate(s, disk_model, 2, *W)[0]
    s = app.on_clear(s, disk_model, *W)[0]
    s = app.on_undo(s, disk_model, *W)[0]  # an undone action is not replayed
    assert s.annotated_slices() == [1, 2, 3, 4, 5]
    info_b = app._checkpoint(models_[1])
    stand_in_b = batching.BatchedPredictor(DiskModel(models.get_predictor(info_b.path)), info_b.path)
    monkeypatch.setattr(app, "_predictor", lambda model: (stand_in_b, info_b.path))
    s, _, _, info, status, *_ = app.on_model(s, models_[1], *W)
    assert not is_problem(status) and "Your 2 actions so far" in status and "replayed" in status
    assert s.annotated_slices() == [1, 2, 3, 4, 5] and "5 of 7 slices with a mask" in info
    np.testing.assert_array_equal(s.mask_volume()[1:6], disk[1:6])
    s = app.on_undo(s, models_[1], *W)[0]
    assert s.annotated_slices() == [3]  # the propagation, undone as one step on the new model
    s = app.on_undo(s, models_[1], *W)[0]
    assert s.annotated_slices() == [] and s.n_clicks == 0
    assert "Nothing to undo" in app.on_undo(s, models_[1], *W)[4]


def test_a_page_click_uses_the_controls_as_shown(disk_model, tmp_path):
    """A click from the page carries the click controls as the page shows them: a change made
    while an image was loading (its event reached no image) still holds for the next click."""
    hu = series_volume(n=5)
    s = load([disk_model], [str(p) for p in write_series(tmp_path / "s", hu)])[0]
    assert s.propagate_clicks  # loaded with "Clicks also update the neighbouring slices" ticked
    scale = rendering.display_scale(s.shape)
    # the disk's centre on slice 3 (0-based 2): row 18, column 20; the event gives display (x, y)
    evt = gr.SelectData(None, {"index": [20 * scale + scale // 2, 18 * scale + scale // 2], "value": None, "selected": True})
    s, _, _, _, status = app.on_select(s, app.FOREGROUND, disk_model, *W, app.FIXED, "1/800", 3, False, evt)
    assert not is_problem(status), status
    assert s.annotated_slices() == [2] and not s.propagate_clicks  # only its own slice, as the box now says
    ((z, click),) = s.vs.clicks
    assert (z, click.y, click.x, click.radius_px) == (2, 18, 20, 3.0)


def test_nifti_export_says_what_the_geometry_assumes(disk_model, tmp_path):
    """A DICOM series with a missing slice is stacked evenly (a NIfTI has one slice spacing): the
    export says so; a series without gaps exports without the caveat."""
    import pydicom

    hu = series_volume(n=5)
    files = write_series(tmp_path / "s", hu)
    z_of = {p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in files}
    gap = [p for p in files if z_of[p] != 4.0]  # slice 3 of 5 (2 mm apart) missing
    s = load([disk_model], [str(p) for p in gap])[0]
    assert "uneven slice spacing" in s.volume.description and s.volume.notes
    s = app.api_click(s, 24, 18, app.FOREGROUND, disk_model, *W)[0]
    status = app.export_nifti(s)[4]
    assert "NIfTI in the input's geometry" in status and "as loaded: uneven slice spacing" in status
    s = load([disk_model], [str(p) for p in files])[0]
    s = app.api_click(s, 24, 18, app.FOREGROUND, disk_model, *W)[0]
    status = app.export_nifti(s)[4]
    assert "NIfTI in the input's geometry" in status and "as loaded" not in status and s.volume.notes == ()


def test_open_mask_from_an_earlier_export_to_correct_it(disk_model, tmp_path):
    """Open a mask: an earlier Export NIfTI (or DICOM-SEG) of a DICOM series comes back as the 3D mask exactly;
    a click then corrects it; Undo goes back to the mask before; a model switch replays the
    opened mask; a label number takes one label of several; wrong files get a message and the
    work is kept."""
    import nibabel as nib

    hu = series_volume(n=5)
    files = write_series(tmp_path / "s", hu, flip=True)  # stored mirrored and in reverse: the export undoes it
    s = load([disk_model], [str(p) for p in files])[0]
    s = app.api_click(s, 24, 18, app.FOREGROUND, disk_model, *W)[0]
    exported = s.mask_volume()
    path = app.export_nifti(s)[5]
    s = app.on_clear(s, disk_model, *W)[0]
    assert not s.mask_volume().any()
    s, _, _, info, status, download = app.on_open_mask(s, path, 0, disk_model, *W)
    assert not is_problem(status) and download is None
    np.testing.assert_array_equal(s.mask_volume(), exported)
    assert "Opened the mask of" in status and "(label 1)" in status and "slices 1–5" in status and "Undo goes back" in status
    assert "5 of 5 slices with a mask" in info and s.n_clicks == 0
    s = app.on_slice(s, 3, disk_model, *W)[0]
    s = app.api_click(s, 18, 20, app.BACKGROUND, disk_model, *W)[0]  # a correction on the opened mask
    assert s.mask_volume().sum() < exported.sum() and s.n_clicks == 1
    s = app.on_undo(s, disk_model, *W)[0]
    np.testing.assert_array_equal(s.mask_volume(), exported)
    s = app.on_undo(s, disk_model, *W)[0]  # back before the mask was opened: the cleared volume
    assert not s.mask_volume().any()
    s = app.on_open_mask(s, path, 0, disk_model, *W)[0]
    predictor, _ = app._predictor(disk_model)
    assert s.use_model(predictor, "another checkpoint") == 3  # click, clear, opened mask: replayed in order
    np.testing.assert_array_equal(s.mask_volume(), exported)
    # several labels: 0 takes them all, a number one of them
    img = nib.load(path)
    two = np.asarray(img.dataobj).astype(np.uint8)
    two[..., : two.shape[2] // 2] *= 2  # label 2 on some slices, 1 on the others
    nib.save(nib.Nifti1Image(two, img.affine), str(tmp_path / "two.nii.gz"))
    s, _, _, _, status, _ = app.on_open_mask(s, str(tmp_path / "two.nii.gz"), 0, disk_model, *W)
    assert "labels 1, 2 together" in status
    np.testing.assert_array_equal(s.mask_volume(), exported)
    s, _, _, _, status, _ = app.on_open_mask(s, str(tmp_path / "two.nii.gz"), 2, disk_model, *W)
    assert "(label 2)" in status and 0 < s.mask_volume().sum() < exported.sum()
    before = s.mask_volume()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.eye(4)), str(tmp_path / "small.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros_like(two), img.affine), str(tmp_path / "empty.nii.gz"))
    for f, label, needle in ((None, 0, "Choose a mask file first"), (str(tmp_path / "two.nii.gz"), 3, "has no voxel with label 3; its labels: 1, 2"),
                             (str(files[0]), 0, "could not be read as a DICOM Segmentation"),
                             ([str(tmp_path / "two.nii.gz"), path], 0, "Open one mask file at a time (2 were given)"),
                             (str(tmp_path / "small.nii.gz"), 0, "does not belong to this image"),
                             (str(tmp_path / "empty.nii.gz"), 0, "holds no label"), (path, 1.5, "whole number")):
        s, _, _, _, status, download = app.on_open_mask(s, f, label, disk_model, *W)
        assert is_problem(status) and needle in status and download is None, (needle, status)
        np.testing.assert_array_equal(s.mask_volume(), before)  # the work is kept
    assert is_problem(app.on_open_mask(None, path, 0, disk_model, *W)[4])
    # a DICOM-SEG of the series (the app's own export) opens the same way, with its segment's label
    s = app.on_open_mask(s, path, 0, disk_model, *W)[0]
    seg = app.export_dicom_seg_file(s)[5]
    s = app.on_clear(s, disk_model, *W)[0]
    s, _, _, _, status, _ = app.on_open_mask(s, seg, 0, disk_model, *W)
    assert "(segment 1 (Segmented region))" in status
    np.testing.assert_array_equal(s.mask_volume(), exported)
    # over a NIfTI volume only NIfTI labels are offered
    ph = app.load_example_phantom(None, disk_model, *settings())[0]
    status = app.on_open_mask(ph, seg, 0, disk_model, *W)[4]
    assert is_problem(status) and "a NIfTI label (.nii, .nii.gz) on this CT's voxel grid, such as" in status and "is not one" in status


def test_click_size_follows_the_models_own_inputs(weights, models_, tmp_path, monkeypatch):
    """The click-size controls start at, and on a change of model are reset to, the model's own
    input settings (Predictor.inputs: α, default radius): a model trained at α = 1/500 is clicked
    at 1/500, and at 1/800 only when the user picks it."""
    folder = tmp_path / "weights"
    folder.mkdir()
    m500 = make_checkpoint(folder / "a_500.safetensors", "alpha 1/500", 0, alpha=1 / 500, default_radius_px=3.0).name
    m800 = make_checkpoint(folder / "b_800.safetensors", "alpha 1/800", 1).name  # InputConfig's defaults
    mfixed = make_checkpoint(folder / "c_fixed.safetensors", "fixed clicks", 2, alpha=None, default_radius_px=7.0).name
    try:
        # the page opens with the first model's own click size, labelled as the model's
        demo = app.build_demo(app.AppConfig(weights_dir=str(folder), precision="fp32"))
        controls = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None) in ("size_mode", "alpha", "radius")}
        assert controls["size_mode"].value == app.DYNAMIC and controls["alpha"].value == "1/500"
        assert controls["alpha"].choices == [("the model's (1/500)", "1/500"), ("1/800", "1/800")]
        assert controls["radius"].value == 3.0 and "the model's: 3" in controls["radius"].label
        own = app._click_defaults(m500)
        assert (own.size_mode, own.alpha, own.radius_px) == (app.DYNAMIC, "1/500", 3.0)

        def disk_models(model):  # each menu entry answered by DiskModel, with its checkpoint's inputs
            info = app._checkpoint(model)
            if info is None:
                raise app.AppError("Choose a model in the **Model** menu first.")
            return batching.BatchedPredictor(DiskModel(models.get_predictor(info.path)), info.path), info.path

        monkeypatch.setattr(app, "_predictor", disk_models)
        yy, xx = np.mgrid[:64, :64]
        hu = np.where((yy - 32) ** 2 + (xx - 32) ** 2 <= 25**2, 200.0, -100.0).astype(np.float32)[None]
        area = int((hu[0] > 100).sum())  # 1,961 px: α = 1/500 gives 3.9 px, 1/800 gives 2.5 px
        files = [str(p) for p in write_series(tmp_path / "s", hu)]
        s = app.load_files(None, files, m500, own.size_mode, own.alpha, own.radius_px, *W)[0]
        s = app.api_click(s, 32, 32, app.FOREGROUND, m500, *W)[0]
        s, _, _, info, _ = app.api_click(s, 40, 30, app.FOREGROUND, m500, *W)
        assert [c.radius_px for c in s.clicks] == [3.0, pytest.approx(area / 500)]  # first click: the model's 3 px
        assert s.vs.click_size.alpha == pytest.approx(1 / 500) and "dynamic α=1/500, the model's" in info

        # another model: the controls and the next clicks take its own α and radius; old clicks keep theirs
        s, _, _, info, status, mode, alpha, radius = app.on_model(s, m800, *W)
        assert mode["value"] == app.DYNAMIC and alpha["value"] == "1/800" and radius["value"] == 5.0
        assert alpha["choices"] == [("the model's (1/800)", "1/800"), ("1/500", "1/500")]
        assert "the model's: 5" in radius["label"] and "dynamic α=1/800, the model's" in status
        assert [c.radius_px for c in s.clicks] == [3.0, pytest.approx(area / 500)]
        s = app.api_click(s, 30, 40, app.FOREGROUND, m800, *W)[0]
        assert s.clicks[-1].radius_px == pytest.approx(area / 800)
        # 1/500 on this model only when the user picks it, and the page says it is not the model's
        s, _, _, info, status = app.on_click_size(s, app.DYNAMIC, "1/500", 5, m800, *W)
        assert "the model was trained with dynamic α=1/800" in info and "trained with" in status
        s = app.api_click(s, 34, 28, app.FOREGROUND, m800, *W)[0]
        assert s.clicks[-1].radius_px == pytest.approx(area / 500)
        # a model trained with fixed clicks switches the controls to its fixed radius
        s, _, _, _, _, mode, alpha, radius = app.on_model(s, mfixed, *W)
        assert mode["value"] == app.FIXED and radius["value"] == 7.0 and s.click_size.alpha is None
        s = app.api_click(s, 28, 34, app.FOREGROUND, mfixed, *W)[0]
        assert s.clicks[-1].radius_px == 7.0
        # a model that is not there changes nothing
        out = app.on_model(s, "nope.safetensors", *W)
        assert is_problem(out[4]) and out[0] is s and len(out) == 8 and s.click_size.alpha is None
        # α is read by iunet.clicks.parse_alpha: any α it accepts, "none" for fixed clicks
        assert app._click_size(app.DYNAMIC, "0.002", 5).alpha == pytest.approx(0.002)
        assert app._click_size(app.DYNAMIC, "none", 5).alpha is None
        out = app.on_click_size(s, app.DYNAMIC, "big", 5, mfixed, *W)
        assert is_problem(out[4]) and "1/800" in out[4]
    finally:
        app.configure(weights, precision="fp32")


def test_propagation_with_the_real_model_runs(models_, tmp_path):
    """A random model carries the mask nowhere useful, but the real path runs end to end."""
    hu = series_volume(n=5)
    s = load(models_, [str(p) for p in write_series(tmp_path / "s", hu)])[0]
    put_masks(s, {2: hu[2] > 100}, models_[0])
    s, _, _, info, status, nifti = app.on_propagate(s, models_[0], 30, *W)
    assert "Propagated" in status and 2 in s.annotated_slices()
    np.testing.assert_array_equal(read_nifti_mask(nifti, like=s.volume).astype(bool), s.mask_volume())


def test_propagation_needs_a_volume(models_, ct_small):
    s = app.api_click(ct_small, 60, 50, app.FOREGROUND, models_[0], *W)[0]
    out = app.on_propagate(s, models_[0], 30, *W)
    assert is_problem(out[4]) and "volume" in out[4]


@pytest.mark.parametrize("flip", [False, True])
def test_exports_match_the_input_geometry(models_, tmp_path, flip):
    """NIfTI overlays the input, PNG is the slice, and DICOM-SEG frames sit on the right images."""
    import highdicom as hd
    import pydicom
    from PIL import Image

    hu = series_volume(n=5)
    files = write_series(tmp_path / "s", hu, flip=flip)
    s = load(models_, [str(p) for p in files])[0]
    np.testing.assert_allclose(s.volume.hu, hu, atol=0.5)
    # Masks with known content on three slices: the bright disk (asymmetric and slice-specific).
    put_masks(s, {z: s.volume.hu[z] > 100 for z in (0, 2, 3)}, models_[0])
    s.z = 2
    _, *_, status, nifti = app.export_nifti(s)
    assert "3 slices with a mask" in status
    np.testing.assert_array_equal(read_nifti_mask(nifti, like=s.volume).astype(bool), s.mask_volume())

    png = app.export_png(s)[5]
    assert png.endswith("_slice003_mask.png")  # slice numbers count from 1 in file names
    np.testing.assert_array_equal(np.asarray(Image.open(png)) > 0, s.mask())

    out = app.export_dicom_seg_file(s)
    seg_path, status = out[5], out[4]
    assert "3 frames" in status and "Assumed" not in status
    seg = hd.seg.segread(seg_path)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    sources = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in files}
    frames = seg.pixel_array if seg.pixel_array.ndim == 3 else seg.pixel_array[None]
    assert len(frames) == 3
    for item, frame in zip(seg.PerFrameFunctionalGroupsSequence, frames):
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        src = pydicom.dcmread(sources[uid])
        src_hu = src.pixel_array * float(src.RescaleSlope) + float(src.RescaleIntercept)
        np.testing.assert_array_equal(frame.astype(bool), src_hu > 100)


def test_exporting_nothing_says_so_for_every_format(models_, tmp_path):
    files = write_series(tmp_path / "s", series_volume(n=3))
    s = load(models_, [str(p) for p in files])[0]
    for export in (app.export_nifti, app.export_png, app.export_dicom_seg_file):
        out = export(s)
        assert is_problem(out[4]) and app.NOTHING_TO_EXPORT in out[4], out[4]
        assert out[5] is None  # the Download box is emptied, never left with an older file
    put_masks(s, {0: s.volume.hu[0] > 100}, models_[0])
    out = app.export_png(s)  # slice 2 on view has no mask, slice 1 has
    assert is_problem(out[4]) and "slice 2" in out[4] and "Slices with a mask: 1" in out[4] and out[5] is None


def test_failed_export_clears_the_download(models_, tmp_path):
    from PIL import Image

    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(tmp_path / "x.png")
    s = load(models_, [str(tmp_path / "x.png")])[0]
    put_masks(s, {0: np.ones((32, 32), bool)}, models_[0])
    ok = app.export_nifti(s)
    assert ok[5].endswith(".nii.gz")
    out = app.export_dicom_seg_file(s)
    assert is_problem(out[4]) and "DICOM input" in out[4] and out[5] is None


def test_dicom_seg_of_ct_small(models_, ct_small):
    put_masks(ct_small, {0: ct_small.volume.hu[0] > 300}, models_[0])
    path = app.export_dicom_seg_file(ct_small)[5]
    import highdicom as hd

    seg = hd.seg.segread(path)
    np.testing.assert_array_equal(np.squeeze(seg.pixel_array).astype(bool), ct_small.volume.hu[0] > 300)


def test_dicom_seg_of_the_real_ircadb_series(models_, shared_data):
    """3D-IRCADb has no Frame of Reference UID: the export derives one and says so in the page."""
    import highdicom as hd

    folder = shared_data / "ircadb_patient1" / "PATIENT_DICOM"
    if not folder.is_dir():
        pytest.skip("3D-IRCADb series absent")
    files = sorted(str(p) for p in folder.iterdir())
    s = load(models_, files)[0]
    assert s.volume.n_slices == 129
    put_masks(s, {64: s.volume.hu[64] > 200}, models_[0])
    _, _, _, _, status, seg_path = app.export_dicom_seg_file(s)
    assert not is_problem(status), status
    assert "Frame of Reference UID" in status and "Assumed" in status
    seg = hd.seg.segread(seg_path)
    assert seg.NumberOfFrames == 1 and "FrameOfReferenceUID" in seg


def test_examples_load_offline(models_):
    out = app.load_example_dicom(None, models_[0], *settings())
    assert out[0].volume.kind == "dicom" and out[0].name == "CT_small"
    out = app.load_example_phantom(None, models_[0], *settings())
    s = out[0]
    assert s.volume.kind == "nifti" and s.volume.n_slices == 24 and s.z == 12 and out[5]["visible"]
    assert s.volume.hu.shape == (24, 256, 256) and s.volume.hu.max() > 100


def test_release_removes_exports(models_, ct_small):
    put_masks(ct_small, {0: ct_small.volume.hu[0] > 300}, models_[0])
    path = Path(app.export_png(ct_small)[5])
    assert path.is_file()
    app._release_state(ct_small)
    assert not path.exists() and ct_small.released and ct_small not in app.SESSIONS


def test_fast_path_gives_the_same_dice(shared_data):
    """bf16 + channels-last (the default on CPUs with native bf16) and ONNX Runtime (the default
    on other CPUs) against fp32 on real CT."""
    from iunet_app.precision_check import compare

    data = shared_data / "Task09_Spleen_sample"
    weights = Path(app.REPO_DIR) / "weights" / "iunet_spleen.safetensors"
    if not (data / "imagesTr" / "spleen_8.nii.gz").is_file() or not weights.is_file():
        pytest.skip("spleen_8 or the shipped spleen weights absent")
    r = compare(data / "imagesTr" / "spleen_8.nii.gz", data / "labelsTr" / "spleen_8.nii.gz", weights, n_clicks=2, max_slices=3)
    assert r["slices"] == 3 and r["fp32"][0] > 50
    assert r["max_gap_points"] <= 1.0, r
    from iunet.inference import onnx_available

    if onnx_available():
        assert r["onnx_max_gap_points"] <= 0.1, r  # the same network in fp32: at most a boundary pixel


def test_closed_pages_give_their_memory_back(models_, tmp_path):
    """Load a 100-slice 512² volume (100 MB of HU) in a tab and close the page, three times: the
    server's resident memory does not grow from one round to the next."""
    import gc

    import nibabel as nib

    statm = Path("/proc/self/statm")
    if not statm.is_file():
        pytest.skip("needs Linux /proc")

    def rss_mb() -> float:
        gc.collect()
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6

    vol = np.full((512, 512, 100), -100, np.int16)
    vol[200:300, 200:300] = 60
    nib.save(nib.Nifti1Image(vol, np.diag([-0.7, -0.7, 2.0, 1.0])), str(tmp_path / "big.nii.gz"))
    del vol
    after = []
    for i in range(3):
        s = load(models_, [str(tmp_path / "big.nii.gz")], session_hash=f"big-{i}")[0]
        assert s.volume.nbytes == 512 * 512 * 100 * 4 and s in app.SESSIONS
        app.on_page_closed(types.SimpleNamespace(session_hash=f"big-{i}"))
        assert s.released and s not in app.SESSIONS
        status = app.on_undo(s, models_[0], *W)[4]
        assert "This tab's image was freed after the page was closed. Load it again" in status, status
        del s
        after.append(rss_mb())
    assert after[2] - after[0] < 40, after  # a leak would add about 100 MB per round


def test_models_that_propagate_are_listed_first(tmp_path):
    import torch

    from iunet.model import Checkpoint, InputConfig, ModelConfig, UNet, save_checkpoint

    for fname, prev in (("a_click.safetensors", False), ("b_volume.safetensors", True), ("c_click.safetensors", False)):
        mc = ModelConfig(base_channels=4, depth=2, use_prev_mask=prev)
        torch.manual_seed(0)
        save_checkpoint(Checkpoint(UNet(mc), mc, InputConfig(grid_px=32), name=fname), tmp_path / fname)
    found, _ = models.find_checkpoints(tmp_path)
    assert [Path(c.path).name for c in found] == ["b_volume.safetensors", "a_click.safetensors", "c_click.safetensors"]
