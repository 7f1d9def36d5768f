"""Handler-level tests of the web app: each action called as the plain function Gradio calls.

A handler returns (state, image, weight map, info, status, extras…); problems come back as a
status starting with ⚠️ and the previous state, never as an exception.
"""
import os
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

import app  # noqa: E402
import app_support as sup  # noqa: E402
from iunet.ct_io import read_nifti_mask  # noqa: E402
from conftest import ct_dataset  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a server warns
W = (40.0, 400.0)  # display window used by most calls


def make_checkpoint(path: Path, name: str, seed: int) -> Path:
    """A random IU-Net on a 128-px grid: fast on CPU, enough to exercise the plumbing."""
    import torch

    from iunet.model import Checkpoint, InputConfig, ModelConfig, UNet, save_checkpoint

    torch.manual_seed(seed)
    mc = ModelConfig(base_channels=4, depth=4)
    return save_checkpoint(Checkpoint(UNet(mc), mc, InputConfig(grid_px=128), name=name), path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("weights")
    make_checkpoint(d / "a_agnostic.safetensors", "test model A", 0)
    make_checkpoint(d / "b_spleen.safetensors", "test model B", 1)
    (d / "notes.safetensors").write_bytes(b"not a checkpoint")
    return d


@pytest.fixture(scope="module")
def models(weights):
    m = app.configure(weights)
    return [c.file_name for c in m.checkpoints]


def settings(size_mode=app.DYNAMIC, alpha="1/800", radius=5):
    return (size_mode, alpha, radius, *W)


def load(models, files, state=None):
    return app.load_files(state, files, models[0], *settings())


def ct_small_path() -> str:
    from pydicom.data import get_testdata_file

    return str(get_testdata_file("CT_small.dcm"))


def is_problem(status) -> bool:
    return isinstance(status, str) and status.startswith("⚠️")


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

def test_checkpoints_listed_by_header_name_and_junk_skipped(weights, models):
    found, problems = sup.find_checkpoints(weights)
    assert [c.name for c in found] == ["test model A", "test model B"]
    assert found[0].label == "test model A (a_agnostic.safetensors)"
    assert len(problems) == 1 and problems[0].startswith("notes.safetensors")
    assert len(models) == 2
    # the predictor is loaded once and shared
    assert models == ["a_agnostic.safetensors", "b_spleen.safetensors"]  # the menu sends file names
    assert sup.PREDICTORS.get(found[0].path) is sup.PREDICTORS.get(found[0].path)


def test_no_checkpoints_gives_a_clear_message(tmp_path, weights):
    try:
        demo = app.build_demo(app.AppConfig(weights_dir=str(tmp_path)))
        assert isinstance(demo, gr.Blocks)
        out = app.load_example_dicom(None, None, *settings())
        assert not is_problem(out[4]) and "No model found" in out[4]  # viewing still works
        state = out[0]
        out = app.api_click(state, 60, 50, app.FOREGROUND, None, *W)
        assert is_problem(out[4]) and "No model found" in out[4] and str(tmp_path) in out[4]
        assert out[0] is state and state.clicks == ()
    finally:
        app.configure(weights)


def test_build_demo_and_api_names(weights):
    demo = app.build_demo(app.AppConfig(weights_dir=str(weights)))
    names = {d.api_name for d in demo.fns.values() if d.api_name}
    assert {"load", "click", "undo", "reset", "propagate", "export_nifti", "export_png", "export_dicom_seg"} <= names


def test_parse_args_flags_and_env(monkeypatch):
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("IUNET_WEIGHTS_DIR", "/somewhere")
    cfg = app.parse_args([])
    assert (cfg.host, cfg.weights_dir, cfg.port, cfg.share) == ("0.0.0.0", "/somewhere", 7860, False)
    cfg = app.parse_args(["--host", "127.0.0.1", "--port", "9000", "--share", "--weights-dir", "w"])
    assert (cfg.host, cfg.port, cfg.share, cfg.weights_dir) == ("127.0.0.1", 9000, True, "w")
    assert cfg.max_file_size == "200mb"


def test_gpu_task_uses_spaces_when_importable(monkeypatch):
    fn = lambda: 1  # noqa: E731
    assert sup.gpu_task(5)(fn) is fn  # no `spaces` package here: unchanged
    seen = {}
    fake = types.SimpleNamespace(GPU=lambda duration: (seen.setdefault("duration", duration), lambda f: ("wrapped", f))[1])
    monkeypatch.setitem(sys.modules, "spaces", fake)
    assert sup.gpu_task(7)(fn) == ("wrapped", fn) and seen["duration"] == 7


# --------------------------------------------------------------------------- loading

def test_load_dicom_file_shows_slice_and_info(models):
    state, image, heat, info, status, slider, download = load(models, [ct_small_path()])
    assert isinstance(state, sup.Annotation) and state.volume.kind == "dicom"
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8  # 128 px shown 4× larger
    assert heat.shape == image.shape
    assert "CT_small" in status and "128×128" in info and "0 px" in info
    assert slider["visible"] is False and download is None


@pytest.mark.parametrize("kind", ["files", "folder_zip", "nifti", "png", "jpeg"])
def test_load_each_input_kind(models, tmp_path, kind):
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
    else:
        from PIL import Image

        files = [tmp_path / ("img.png" if kind == "png" else "img.jpg")]
        Image.fromarray(np.clip(hu[2] + 160, 0, 255).astype(np.uint8)).save(files[0])
    state, image, _, info, status, slider, _ = load(models, [str(f) for f in files])
    assert not is_problem(status), status
    n = 1 if kind in ("png", "jpeg") else 5
    assert state.volume.n_slices == n and state.z == n // 2  # volumes start in the middle
    assert slider["visible"] is (n > 1) and slider["value"] == n // 2
    assert image.shape[:2] == (40 * 10, 48 * 10)  # 48 px wide → 10× on screen
    if kind in ("files", "folder_zip", "nifti"):
        np.testing.assert_allclose(state.volume.hu, hu, atol=0.5)


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: d / "empty.dcm", "empty"),
        (lambda d: d / "junk.bin", "not a recognised"),
        (lambda d: d / "broken.dcm", "DICOM"),
        (lambda d: d / "four_d.nii.gz", "4D"),
        (lambda d: d / "huge.png", "largest slice"),
    ],
)
def test_bad_inputs_give_a_message_and_keep_the_state(models, tmp_path, make, fragment):
    import nibabel as nib
    from PIL import Image

    path = make(tmp_path)
    if path.name == "empty.dcm":
        path.write_bytes(b"")
    elif path.name == "junk.bin":
        path.write_bytes(os.urandom(2000))
    elif path.name == "broken.dcm":
        good = Path(ct_small_path()).read_bytes()
        path.write_bytes(good[: len(good) // 2])  # truncated in the pixel data
    elif path.name == "four_d.nii.gz":
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.int16), np.eye(4)), str(path))
    else:
        Image.new("L", (3000, 40)).save(path)
    before = load(models, [ct_small_path()])[0]
    out = load(models, [str(path)], state=before)
    assert is_problem(out[4]) and fragment.lower() in out[4].lower(), out[4]
    assert out[0] is before and all(o == gr.skip() for o in out[1:4])


def test_too_many_voxels_is_refused(models, monkeypatch):
    monkeypatch.setattr(app, "MAX_VOXELS", 100 * 100)
    out = load(models, [ct_small_path()])
    assert is_problem(out[4]) and "too large" in out[4] and out[0] is None


def test_no_file_and_wrong_settings(models):
    out = load(models, None)
    assert is_problem(out[4]) and "No file" in out[4]
    out = app.load_files(None, [ct_small_path()], models[0], app.FIXED, "1/800", 99, *W)
    assert is_problem(out[4]) and "radius" in out[4]


# --------------------------------------------------------------------------- clicks

@pytest.fixture
def ct_small(models):
    return load(models, [ct_small_path()])[0]


def test_click_before_upload_and_outside(models, ct_small):
    out = app.api_click(None, 10, 10, app.FOREGROUND, models[0], *W)
    assert is_problem(out[4]) and "Upload a CT" in out[4] and out[0] is None
    out = app.api_click(ct_small, 128, 10, app.FOREGROUND, models[0], *W)
    assert is_problem(out[4]) and "outside the image" in out[4]
    out = app.on_select(ct_small, app.FOREGROUND, models[0], *W, gr.SelectData(None, {"index": None, "value": None}))
    assert is_problem(out[4]) and "inside the image" in out[4]
    assert ct_small.clicks == ()


def test_select_converts_display_xy_to_slice_yx_once(models, ct_small):
    # CT_small (128 px) is shown 4× larger: displayed (x=243, y=101) is slice pixel (y=25, x=60).
    evt = gr.SelectData(None, {"index": [243, 101], "value": None, "selected": True})
    state, image, heat, info, status = app.on_select(ct_small, app.FOREGROUND, models[0], *W, evt)
    assert not is_problem(status), status
    (click,) = state.clicks
    assert (click.y, click.x, click.positive) == (25, 60, True)
    assert "row 25, column 60" in status
    # the centre of the click is drawn there in the displayed image (foreground green)
    assert tuple(image[25 * 4 + 2, 60 * 4 + 2]) == sup.POSITIVE_RGB


def test_click_updates_mask_area_and_latency(models, ct_small):
    state, image0, *_ = app._view(ct_small, models[0], *W, "")
    state, image, heat, info, status = app.api_click(ct_small, 60, 50, app.FOREGROUND, models[0], *W)
    mask = state.mask()
    sy, sx = state.volume.spacing_mm[1:]
    assert mask.shape == (128, 128)
    assert f"{int(mask.sum()):,} px = **{mask.sum() * sy * sx:,.1f} mm²**" in info
    assert "ms model time" in info and "CPU" in info and "test model A" in info
    assert state.session.last_latency_ms > 0
    assert not np.array_equal(image, image0)  # click marker (and mask, if any) drawn
    # the mask is drawn: a masked pixel is tinted towards the mask colour, the rest is grey
    expected = sup.render_slice(state.image_hu, *W, mask, state.clicks, 4)
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_array_equal(heat, sup.render_weight_map(mask, state.clicks, 4))


def test_background_click_and_undo_restores_exactly(models, ct_small):
    s = app.api_click(ct_small, 60, 50, app.FOREGROUND, models[0], *W)[0]
    first = s.mask().copy()
    p_first = s.session.probability.copy()
    s = app.api_click(s, 20, 100, app.BACKGROUND, models[0], *W)[0]
    assert [c.positive for c in s.clicks] == [True, False]
    s, _, _, info, status = app.on_undo(s, models[0], *W)
    assert status == "Undid the last click." and len(s.clicks) == 1
    np.testing.assert_array_equal(s.mask(), first)
    np.testing.assert_array_equal(s.session.probability, p_first)
    s = app.on_undo(s, models[0], *W)[0]
    assert s.clicks == () and not s.mask().any()
    assert app.on_undo(s, models[0], *W)[4] == "Nothing to undo on this slice."


def test_reset_clears_the_slice(models, ct_small):
    s = app.api_click(ct_small, 60, 50, app.FOREGROUND, models[0], *W)[0]
    s = app.api_click(s, 70, 55, app.FOREGROUND, models[0], *W)[0]
    s, image, _, info, status = app.on_reset(s, models[0], *W)
    assert status == "Cleared this slice." and s.clicks == () and not s.mask().any()
    assert "0 px" in info


def test_fixed_and_dynamic_click_size(models, ct_small):
    s = app.on_click_size(ct_small, app.FIXED, "1/800", 9, models[0], *W)[0]
    s = app.api_click(s, 60, 50, app.FOREGROUND, models[0], *W)[0]
    s = app.api_click(s, 62, 52, app.FOREGROUND, models[0], *W)[0]
    assert [c.radius_px for c in s.clicks] == [9.0, 9.0]
    s = app.on_reset(s, models[0], *W)[0]
    s = app.on_click_size(s, app.DYNAMIC, "1/500", 4, models[0], *W)[0]
    s = app.api_click(s, 60, 50, app.FOREGROUND, models[0], *W)[0]
    area = int(s.mask().sum())
    s, image, _, info, _ = app.api_click(s, 62, 52, app.FOREGROUND, models[0], *W)
    first, second = s.clicks
    assert first.radius_px == 4.0  # no mask yet: the first-click radius
    assert second.radius_px == pytest.approx(min(max(area / 500, 1.0), 15.0))
    assert "dynamic α=1/500" in info
    # the circle of the first click is drawn at its radius (4 px × 4 on screen = 16 px)
    cy, cx = (50 + 0.5) * 4, (60 + 0.5) * 4
    assert tuple(image[int(cy), int(cx + 4 * 4.0)]) == sup.POSITIVE_RGB


def test_window_changes_the_picture_not_the_model(models, ct_small):
    s = app.api_click(ct_small, 60, 50, app.FOREGROUND, models[0], *W)[0]
    p = s.session.probability.copy()
    s2, img_bone, _, _, _, preset = app.on_window(s, models[0], 400, 1800)
    assert preset == app.CUSTOM_WINDOW
    img_abd = app._view(s, models[0], *W, "")[1]
    assert not np.array_equal(img_bone, img_abd)
    np.testing.assert_array_equal(s2.session.probability, p)
    out = app.on_window_preset(s, "lung", models[0], *W)
    assert out[-2:] == WINDOW_LUNG
    # the same click under another display window predicts the same mask
    other = load(models, [ct_small_path()])[0]
    other = app.api_click(other, 60, 50, app.FOREGROUND, models[0], -600, 1500)[0]
    np.testing.assert_array_equal(other.session.probability, p)
    assert is_problem(app.on_window(s, models[0], 40, 0)[4])


WINDOW_LUNG = (-600.0, 1500.0)


def test_switching_model_replays_the_clicks(models, ct_small):
    s = app.api_click(ct_small, 60, 50, app.FOREGROUND, models[0], *W)[0]
    s = app.api_click(s, 30, 90, app.BACKGROUND, models[0], *W)[0]
    s, _, _, info, status = app.on_model(s, models[1], *W)
    assert "replayed" in status and "test model B" in info
    assert [(c.y, c.x, c.positive) for c in s.clicks] == [(50, 60, True), (90, 30, False)]
    expected = sup.PREDICTORS.get(app._checkpoint(models[1]).path).predict(s.image_hu, s.clicks)  # no previous-mask channel
    np.testing.assert_array_equal(s.session.probability, expected)
    # a click with a model that is not in the menu
    out = app.api_click(s, 60, 50, app.FOREGROUND, "/nope.safetensors", *W)
    assert is_problem(out[4]) and "Model" in out[4]


def test_users_never_share_state(models):
    a = load(models, [ct_small_path()])[0]
    b = load(models, [ct_small_path()])[0]
    a = app.api_click(a, 60, 50, app.FOREGROUND, models[0], *W)[0]
    assert len(a.clicks) == 1 and b.clicks == () and not b.mask().any()
    assert a.export_dir() != b.export_dir()


def test_unexpected_errors_become_messages(models, ct_small, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(sup, "infer_click", boom)
    out = app.api_click(ct_small, 60, 50, app.FOREGROUND, models[0], *W)
    assert is_problem(out[4]) and "Something went wrong (RuntimeError: kaboom)" in out[4]
    assert out[0] is ct_small and ct_small.clicks == ()


# --------------------------------------------------------------------------- volumes and export

def test_slices_and_propagation(models, tmp_path, monkeypatch):
    files = write_series(tmp_path / "s", series_volume(n=7))
    s = load(models, [str(p) for p in files])[0]
    assert s.z == 3
    out = app.on_propagate(s, models[0], 30, *W)
    assert is_problem(out[4]) and "Segment the object" in out[4]
    # a click on slice 5, then back to slice 3, which gets a known mask (the disk)
    s = app.on_slice(s, 5, models[0], *W)[0]
    assert s.z == 5 and s.clicks == ()
    s = app.api_click(s, 32, 18, app.FOREGROUND, models[0], *W)[0]
    manual = s.mask().copy()
    s = app.on_slice(s, 3, models[0], *W)[0]
    s.base_masks[3] = s.volume.hu[3] > 100
    # the real propagation runs (a random model carries the mask nowhere useful)
    s, _, _, info, status, nifti = app.on_propagate(s, models[0], 30, *W)
    assert "Propagated" in status and nifti.endswith("_mask.nii.gz")
    np.testing.assert_array_equal(read_nifti_mask(nifti, like=s.volume).astype(bool), s.mask_volume())
    # the app's merge rule, with a stand-in propagation that finds the disk everywhere
    calls = []

    def fake(checkpoint, volume_hu, z, mask, click_size, max_slices):
        calls.append((z, int(mask.sum()), max_slices))
        return volume_hu > 100

    monkeypatch.setattr(sup, "infer_propagate", fake)
    s, _, _, info, status, nifti = app.on_propagate(s, models[0], 4, *W)
    assert calls == [(3, int((s.volume.hu[3] > 100).sum()), 4)]
    assert "slices 1 to 7" in status and "7 of 7" in info
    for z in (0, 1, 2, 3, 4, 6):
        np.testing.assert_array_equal(s.mask(z), s.volume.hu[z] > 100)
    np.testing.assert_array_equal(s.mask(5), manual)  # a slice the user clicked keeps its mask
    np.testing.assert_array_equal(read_nifti_mask(nifti, like=s.volume).astype(bool), s.mask_volume())
    # a propagated slice can be corrected: the session starts from the propagated mask
    s = app.on_slice(s, 1, models[0], *W)[0]
    s = app.api_click(s, 10, 10, app.BACKGROUND, models[0], *W)[0]
    assert len(s.clicks) == 1 and app.on_undo(s, models[0], *W)[0].mask(1).sum() == (s.volume.hu[1] > 100).sum()
    assert is_problem(app.on_slice(s, 7, models[0], *W)[4])


def test_propagation_needs_a_volume(models, ct_small):
    s = app.api_click(ct_small, 60, 50, app.FOREGROUND, models[0], *W)[0]
    out = app.on_propagate(s, models[0], 30, *W)
    assert is_problem(out[4]) and "volume" in out[4]


@pytest.mark.parametrize("flip", [False, True])
def test_exports_match_the_input_geometry(models, tmp_path, flip):
    """NIfTI overlays the input, PNG is the slice, and DICOM-SEG frames sit on the right images."""
    import highdicom as hd
    import pydicom
    from PIL import Image

    hu = series_volume(n=5)
    files = write_series(tmp_path / "s", hu, flip=flip)
    s = load(models, [str(p) for p in files])[0]
    np.testing.assert_allclose(s.volume.hu, hu, atol=0.5)
    # Masks with known content on three slices: the bright disk (asymmetric and slice-specific).
    for z in (0, 2, 3):
        s.base_masks[z] = s.volume.hu[z] > 100
    s.z = 2
    _, *_, status, nifti = app.export_nifti(s)
    assert "3 slices with a mask" in status
    np.testing.assert_array_equal(read_nifti_mask(nifti, like=s.volume).astype(bool), s.mask_volume())

    png = app.export_png(s)[5]
    np.testing.assert_array_equal(np.asarray(Image.open(png)) > 0, s.mask())

    seg_path = app.export_dicom_seg(s)[5]
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


def test_dicom_seg_of_ct_small_and_its_limits(models, ct_small, tmp_path):
    out = app.export_dicom_seg(ct_small)
    assert is_problem(out[4]) and "empty" in out[4]
    ct_small.base_masks[0] = ct_small.volume.hu[0] > 300
    path = app.export_dicom_seg(ct_small)[5]
    import highdicom as hd

    seg = hd.seg.segread(path)
    np.testing.assert_array_equal(np.squeeze(seg.pixel_array).astype(bool), ct_small.volume.hu[0] > 300)
    from PIL import Image

    png = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(png)
    s = load(models, [str(png)])[0]
    s.base_masks[0] = np.ones((32, 32), bool)
    out = app.export_dicom_seg(s)
    assert is_problem(out[4]) and "DICOM input" in out[4]
    assert app.export_nifti(s)[5].endswith(".nii.gz")


def test_examples_load_offline(models):
    out = app.load_example_dicom(None, models[0], *settings())
    assert out[0].volume.kind == "dicom" and out[0].name == "CT_small"
    out = app.load_example_phantom(None, models[0], *settings())
    s = out[0]
    assert s.volume.kind == "nifti" and s.volume.n_slices == 24 and s.z == 12 and out[5]["visible"]
    assert s.volume.hu.shape == (24, 256, 256) and s.volume.hu.max() > 100


def test_cleanup_removes_exports(models, ct_small):
    ct_small.base_masks[0] = ct_small.volume.hu[0] > 300
    path = Path(app.export_png(ct_small)[5])
    assert path.is_file()
    app._cleanup(ct_small)
    assert not path.exists()
