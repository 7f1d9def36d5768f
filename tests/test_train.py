import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from dataclasses import asdict, replace

from iunet.data import SampleConfig
from iunet.model import InputConfig, load_checkpoint
from iunet.train import PRESETS, TrainConfig, parse_args, sample_config, train, upgrade_train_config

REPO = Path(__file__).resolve().parents[1]


def tiny(tmp_path, **kw):
    base = dict(out=str(tmp_path), inputs=InputConfig(grid_px=64), base_channels=8, depth=3, batch_size=4, steps=12, epochs=3, val_slices=4,
                workers=0, iterative_clicks=1, lr=3e-3)
    base.update(kw)
    return TrainConfig(**base)


def test_weighted_dice_training_loss_falls(tmp_path):
    cfg = tiny(tmp_path)
    best = train(cfg)
    assert best.exists()
    ck = load_checkpoint(tmp_path / "last.safetensors")
    hist = ck.train_config["history"]
    assert len(hist) == 3
    assert hist[-1]["loss"] < hist[0]["loss"]  # the weighted Dice loss falls
    assert (tmp_path / "last.safetensors").exists() and (tmp_path / "last.optim.safetensors").exists()
    assert ck.input_config == cfg.inputs and ck.train_config["inputs"] == asdict(cfg.inputs)  # one source, nested
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["held_out"] == ["spleen_8"] and "synthetic" in split["train"]


def test_msd_folder_training_writes_case_split(tmp_path):
    """An MSD task folder (Task10 colon naming) trains; spleen_8 style held-out cases are skipped."""
    import nibabel as nib

    task = tmp_path / "Task10_Colon"
    for sub in ("imagesTr", "labelsTr"):
        (task / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in (1, 2):
        img = rng.normal(0, 30, (64, 64, 4)).astype(np.int16)
        lab = np.zeros((64, 64, 4), np.uint8)
        lab[20:40, 25:45, 1:3] = 1
        img[lab > 0] += 150
        nib.save(nib.Nifti1Image(img, np.eye(4)), task / "imagesTr" / f"colon_00{i}.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), task / "labelsTr" / f"colon_00{i}.nii.gz")
    train(tiny(tmp_path / "run", msd=(str(task),), synthetic_weight=0.0, epochs=1, steps=2, val_slices=2))
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["train"] == {"msd:Task10_Colon": ["colon_001", "colon_002"]}


def test_resume_continues_from_last_epoch(tmp_path):
    train(tiny(tmp_path, epochs=1, steps=3))
    train(tiny(tmp_path, epochs=2, steps=3, resume=True))
    hist = load_checkpoint(tmp_path / "last.safetensors").train_config["history"]
    assert [h["epoch"] for h in hist] == [1, 2]


def test_ema_update_is_a_moving_average_of_weights_and_batchnorm_statistics():
    from iunet.model import ModelConfig, UNet
    from iunet.train import ema_copy, ema_update

    torch.manual_seed(0)
    model = UNet(ModelConfig(base_channels=4, depth=2))
    ema = ema_copy(model, None, "cpu")
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for q in model.parameters():
            q.add_(1.0)
    model.train()
    model(torch.randn(2, model.config.in_channels, 16, 16))  # moves BatchNorm's running statistics
    ema_update(ema, model, 0.75)
    now, src = ema.state_dict(), model.state_dict()
    for k, v in now.items():
        if v.dtype.is_floating_point:
            assert torch.allclose(v, 0.75 * before[k] + 0.25 * src[k], atol=1e-6), k
        else:
            assert torch.equal(v, src[k]), k  # batches seen: copied
    assert not any(q.requires_grad for q in ema.parameters())


def test_ema_run_writes_a_validated_average_and_resumes_it(tmp_path):
    train(tiny(tmp_path, epochs=1, steps=3, ema=0.5))
    ck = load_checkpoint(tmp_path / "ema.safetensors")
    last = load_checkpoint(tmp_path / "last.safetensors")
    assert ck.model_config == last.model_config and ck.train_config["ema"] == 0.5
    assert {"dice@1", "dice@5"} <= set(ck.metrics)
    assert "ema" in ck.train_config["history"][-1]
    diff = [not torch.equal(a, b) for a, b in zip(ck.model.state_dict().values(), last.model.state_dict().values())]
    assert any(diff)  # an average, not the last weights
    train(tiny(tmp_path, epochs=2, steps=3, ema=0.5, resume=True))
    hist = load_checkpoint(tmp_path / "ema.safetensors").train_config["history"]
    assert [h["epoch"] for h in hist] == [1, 2] and all("ema" in h for h in hist)
    assert parse_args(["--ema", "0.999"]).ema == 0.999 and parse_args([]).ema == 0.0
    with pytest.raises(SystemExit):
        parse_args(["--ema", "1.0"])


def test_freeze_encoder_trains_the_decoder_only(tmp_path):
    """--freeze-encoder: from --init, the down path and bottleneck keep their weights and
    batch-norm statistics bit for bit; the decoder and head change."""
    train(tiny(tmp_path / "src", epochs=1, steps=2))
    src = load_checkpoint(tmp_path / "src" / "last.safetensors").model.state_dict()
    train(tiny(tmp_path / "fz", epochs=1, steps=3, freeze_encoder=True, init=str(tmp_path / "src" / "last.safetensors")))
    out = load_checkpoint(tmp_path / "fz" / "last.safetensors").model.state_dict()
    frozen = [k for k in src if k.startswith(("down.", "bottleneck."))]
    learned = [k for k in src if k.startswith(("up", "head.")) and src[k].dtype.is_floating_point]
    assert any("running_mean" in k for k in frozen) and learned
    assert all(torch.equal(src[k], out[k]) for k in frozen if "num_batches" not in k)
    assert any(not torch.equal(src[k], out[k]) for k in learned)
    assert parse_args(["--freeze-encoder"]).freeze_encoder and not parse_args([]).freeze_encoder


def test_spill_parts_reach_the_samples():
    """--spill-parts is passed on to the samples' config, and a leak into no structure is refused."""
    from iunet.train import sample_config

    assert sample_config(parse_args(["--spill-p", "0.3", "--spill-parts", "3"])).spill_parts == 3
    assert sample_config(parse_args([])).spill_parts == 1
    with pytest.raises(SystemExit):
        parse_args(["--spill-parts", "0"])


def test_geodesic_noise_reference_is_an_input_setting(tmp_path):
    """--geodesic-noise-ref sets the run's InputConfig (so its checkpoint carries it and training
    draws the maps a Predictor of it draws); a checkpoint written without it (version 5's) loads
    with the default; a negative level is refused."""
    from iunet.clicks import DEFAULT_GEODESIC_NOISE_REF
    from iunet.model import read_header
    from safetensors import safe_open
    from safetensors.torch import save_file

    assert parse_args([]).inputs.geodesic_noise_ref == DEFAULT_GEODESIC_NOISE_REF
    cfg = parse_args(["--geodesic-noise-ref", "0", "--alpha", "1/500"])
    assert cfg.inputs.geodesic_noise_ref == 0.0 and cfg.inputs.alpha == pytest.approx(1 / 500)
    with pytest.raises(SystemExit):
        parse_args(["--geodesic-noise-ref", "-0.1"])
    run = tiny(tmp_path / "off", epochs=1, steps=1, use_prev_mask=True, geodesic=True)
    run = replace(run, inputs=replace(run.inputs, geodesic_noise_ref=0.0))
    train(run)
    path = tmp_path / "off" / "last.safetensors"
    assert load_checkpoint(path).input_config.geodesic_noise_ref == 0.0
    # the same checkpoint with the key dropped from its header, as written before it existed
    header = read_header(path)
    del header["input_config"]["geodesic_noise_ref"]
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata={"iunet": json.dumps(header)})
    assert load_checkpoint(old).input_config.geodesic_noise_ref == DEFAULT_GEODESIC_NOISE_REF


def test_bf16_defaults_to_the_hardware(tmp_path, monkeypatch):
    """Unset, bf16 autocast is used on a CPU only where it computes bf16 natively (emulated bf16
    is slower than fp32); a flag given wins."""
    import iunet.train as tr

    assert parse_args([]).bf16 is None and parse_args(["--bf16"]).bf16 is True and parse_args(["--no-bf16"]).bf16 is False
    for native in (False, True):
        monkeypatch.setattr(tr, "cpu_has_native_bf16", lambda native=native: native)
        train(tiny(tmp_path / str(native), epochs=1, steps=1, iterative_clicks=0, device="cpu"))
        env = load_checkpoint(tmp_path / str(native) / "last.safetensors").train_config["env"]
        assert env["bf16"] is native
    train(tiny(tmp_path / "forced", epochs=1, steps=1, iterative_clicks=0, device="cpu", bf16=True))
    assert load_checkpoint(tmp_path / "forced" / "last.safetensors").train_config["env"]["bf16"] is True


def test_seeded_runs_reproduce(tmp_path):
    a = train(tiny(tmp_path / "a", epochs=1, steps=3, bf16=False, iterative_clicks=0))
    b = train(tiny(tmp_path / "b", epochs=1, steps=3, bf16=False, iterative_clicks=0))
    sa, sb = load_checkpoint(a).model.state_dict(), load_checkpoint(b).model.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_table_one_variants_parse():
    assert parse_args(["--model", "unet"]).interactive is False
    c = parse_args(["--loss", "dice", "--no-boundary-weights", "--click-weights", "gaussian", "--alpha", "none", "--radius-px", "2"])
    assert (c.loss, c.boundary_weights, c.click_weights, c.inputs.alpha, c.inputs.default_radius_px) == ("dice", False, "gaussian", None, 2.0)
    assert parse_args(["--alpha", "1/500"]).inputs.alpha == pytest.approx(1 / 500)
    assert parse_args(["--preset", "spleen"]).label_ids == (1,)
    with pytest.raises(SystemExit):
        parse_args(["--grid-px", "100"])
    with pytest.raises(SystemExit):
        parse_args(["--alpha", "-1"])


def test_input_settings_have_one_source():
    """The run's InputConfig is InputConfig's own defaults unless a flag or preset sets a field;
    the sample config holds the same object; presets keep working with the input flags."""
    assert parse_args([]).inputs == InputConfig() == TrainConfig().inputs
    c = parse_args(["--preset", "agnostic3d", "--grid-px", "128", "--alpha", "none", "--radius-px", "3"])
    assert c.use_prev_mask and c.propagate_p == PRESETS["agnostic3d"]["propagate_p"] and c.name == "iunet-agnostic-3d"
    assert c.inputs == InputConfig(grid_px=128, default_radius_px=3.0, alpha=None)
    assert sample_config(c).inputs is c.inputs and sample_config(c).propagate_p == c.propagate_p
    assert sample_config(c).centre_click_p == SampleConfig().centre_click_p  # the default reaches the samples
    assert sample_config(parse_args(["--centre-click-p", "0.8"])).centre_click_p == 0.8
    assert sample_config(parse_args(["--seam-p", "0.5"])).seam_p == 0.5 and sample_config(parse_args([])).seam_p == 0.0
    assert sample_config(parse_args(["--sinus-wide-p", "0.7"])).sinus_wide_p == 0.7
    assert sample_config(parse_args(["--clear-boundary-p", "1"])).clear_boundary_p == 1.0
    assert sample_config(parse_args([])).clear_boundary_p == 0.0
    assert parse_args(["--preset", "agnostic3d"]).inputs == InputConfig()


def test_older_train_configs_upgrade_to_nested_inputs():
    old = {"epochs": 3, "grid_px": 128, "level_hu": 50.0, "width_hu": 350.0, "radius_px": 2.0, "alpha": None, "history": []}
    assert upgrade_train_config(old) == {
        "epochs": 3, "history": [], "inputs": asdict(InputConfig(50.0, 350.0, 128, "disk", 2.0, None)),
    }
    new = json.loads(json.dumps(asdict(TrainConfig())))
    assert upgrade_train_config(new) == new and upgrade_train_config({}) == {}


def test_unet_baseline_trains(tmp_path):
    ck = load_checkpoint(train(tiny(tmp_path, interactive=False, epochs=1, steps=2)))
    assert ck.model_config.in_channels == 1


def test_ddp_two_processes_gloo(tmp_path):
    """torchrun with 2 CPU processes (gloo): the run finishes and writes one checkpoint."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    def run(out: Path) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "iunet.train",
               "--out", str(out), "--grid-px", "64", "--base-channels", "4", "--depth", "2", "--epochs", "1", "--steps", "2",
               "--batch-size", "2", "--val-slices", "2", "--workers", "0", "--no-bf16"]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    out = tmp_path / "a"
    r = run(out)
    if r.returncode != 0 and "terminate called without an active exception" in r.stderr:
        # Seen once in about 30 CI runs, never in 40 tries here (loaded or not): a rank aborted in
        # gloo's C++ teardown after the epoch was done. One retry into a fresh folder; a second
        # failure, or a failure of any other kind, fails the test.
        out = tmp_path / "b"
        r = run(out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert load_checkpoint(out / "best.safetensors").train_config["env"]["world_size"] == 2


def test_prev_mask_model_trains_on_propagation_pairs_from_a_click_model(tmp_path):
    """--init from a 3-channel click model into a previous-mask model: the new channel is added,
    propagation pairs are drawn from label volumes, and validation reports propagation Dice."""
    import nibabel as nib

    click = tiny(tmp_path / "click", epochs=1, steps=2)
    train(click)
    lab = np.zeros((64, 64, 10), np.uint8)
    lab[20:44, 20:44, 2:8] = 1
    nib.save(nib.Nifti1Image(lab, np.diag([2.0, 2.0, 5.0, 1.0])), str(tmp_path / "vol_1.nii.gz"))
    cfg = tiny(tmp_path / "prop", epochs=1, steps=2, use_prev_mask=True, propagate_p=0.5, first_click_default=True,
               single_click_p=0.5, wide_shapes=True, labels=(str(tmp_path / "vol_1.nii.gz"),),
               init=str(tmp_path / "click" / "last.safetensors"))
    train(cfg)
    ck = load_checkpoint(tmp_path / "prop" / "last.safetensors")
    assert ck.model_config.in_channels == 4
    assert "prop_dice" in ck.metrics and 0.0 <= ck.metrics["prop_dice"] <= 1.0


def test_geodesic_model_trains_from_a_previous_mask_model_and_predicts(tmp_path):
    """--geodesic --init from a previous-mask model: two zero-weight channels are added last,
    training feeds the geodesic maps (iterative clicks included), and a Predictor on the result
    computes them from the clicks."""
    from iunet.inference import Predictor, Session

    base = tiny(tmp_path / "prev", epochs=1, steps=2, use_prev_mask=True)
    train(base)
    cfg = tiny(tmp_path / "geo", epochs=1, steps=2, use_prev_mask=True, geodesic=True, iterative_clicks=2,
               init=str(tmp_path / "prev" / "last.safetensors"))
    train(cfg)
    ck = load_checkpoint(tmp_path / "geo" / "last.safetensors")
    assert ck.model_config.geodesic and ck.model_config.in_channels == 6
    assert parse_args(["--geodesic", "--prev-mask"]).geodesic
    img = np.full((80, 80), -100.0, np.float32)
    img[20:60, 20:60] = 60.0
    s = Session(Predictor(ck), img)
    s.add_click(40, 40, True)
    assert s.probability.shape == (80, 80) and np.isfinite(s.probability).all()


def test_soft_geodesic_model_starts_as_its_source_and_trains_on_four_maps(tmp_path):
    """--geodesic-soft --init from a geodesic model: two more zero-weight channels (the maps at
    the smaller edge weight) come last, so the widened model predicts what its source did; the
    samples and the iterative clicks carry four maps; a Predictor computes them; a soft model
    cannot be narrowed again."""
    import torch

    from iunet.clicks import Click, geodesic_maps
    from iunet.inference import Predictor, Session

    base = tiny(tmp_path / "geo", epochs=1, steps=2, use_prev_mask=True, geodesic=True)
    train(base)
    src = load_checkpoint(tmp_path / "geo" / "last.safetensors")
    cfg = tiny(tmp_path / "soft", epochs=1, steps=2, use_prev_mask=True, geodesic=True, geodesic_soft=True, iterative_clicks=2,
               init=str(tmp_path / "geo" / "last.safetensors"), lr=0.0)
    train(cfg)
    ck = load_checkpoint(tmp_path / "soft" / "last.safetensors")
    assert ck.model_config.geodesic_soft and ck.model_config.in_channels == 8
    assert parse_args(["--geodesic", "--geodesic-soft", "--prev-mask"]).geodesic_soft
    w = ck.model.state_dict()["down.0.0.weight"]
    assert w.shape[1] == 8 and not w[:, 6:].any()  # lr 0: still the zero weights it started with
    img = np.full((80, 80), -100.0, np.float32)
    img[20:60, 20:60] = 60.0
    soft, plain = Predictor(ck), Predictor(src)
    x = soft.build_inputs([soft.prepare(img)], [img.shape], [[Click(40, 40, True, 5.0)]])
    assert x.shape[1] == 8
    grid_img = x[0, 0].numpy()
    click = soft._to_grid([Click(40, 40, True, 5.0)], img.shape, (0, 64, 0, 64))
    want = geodesic_maps(grid_img, click, (ck.input_config.geodesic_lambda, ck.input_config.geodesic_soft_lambda),
                         ck.input_config.geodesic_tau_px, noise_ref=ck.input_config.geodesic_noise_ref)
    np.testing.assert_allclose(x[0, 4:].numpy(), want, atol=1e-6)
    assert not np.allclose(want[0], want[2])  # the soft pair is another map
    from iunet.model import Checkpoint, UNet, adapt_input_channels

    widened = UNet(ck.model_config)  # what --init made of the source, before any step
    widened.load_state_dict(adapt_input_channels(src.model.state_dict(), widened))
    start = Predictor(Checkpoint(widened, ck.model_config, ck.input_config))
    np.testing.assert_allclose(start.predict(img, [Click(40, 40, True, 5.0)]), plain.predict(img, [Click(40, 40, True, 5.0)]), atol=1e-5)
    from iunet.data import SampleConfig, SliceBank, make_sample

    bank = SliceBank(64)
    bank.add_synthetic()
    rng = np.random.default_rng(0)
    s = make_sample(bank.draw(rng), rng, SampleConfig(inputs=InputConfig(grid_px=64), geodesic=True, geodesic_soft=True, single_click_p=1.0))
    assert s.geodesic.shape == (4, 64, 64)
    with pytest.raises(SystemExit, match="soft geodesic"):
        train(tiny(tmp_path / "back", epochs=1, steps=2, use_prev_mask=True, geodesic=True, init=str(tmp_path / "soft" / "last.safetensors")))


def test_sample_stream_workers_share_an_epoch_in_whole_batches():
    """With several data-loader workers each makes its own samples (no copies) and the epoch
    keeps its number of full batches."""
    from iunet.data import SampleConfig, SliceBank
    from iunet.train import SampleStream

    bank = SliceBank(64)
    bank.add_synthetic()
    stream = SampleStream(bank, SampleConfig(inputs=InputConfig(grid_px=64)), [0, 0, 0], 5 * 4, 4)
    loader = torch.utils.data.DataLoader(stream, batch_size=4, num_workers=2)
    batches = [b[0] for b in loader]
    assert [len(b) for b in batches] == [4] * 5
    images = torch.cat(batches).flatten(1)
    assert len({tuple(r[::97].tolist()) for r in images}) == 20  # 20 different samples


def test_pooled_corrective_clicks_match_the_main_process(tmp_path):
    """--click-workers: the corrective clicks made in a process pool are those made in the
    main process (same seeds), clicks, disks, geodesic maps and weights alike."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from iunet.model import UNet
    from iunet.train import add_iterative_clicks, model_config
    from iunet.data import SliceBank
    from iunet.train import SampleStream

    cfg = tiny(tmp_path, use_prev_mask=True, geodesic=True, iterative_clicks=2)
    model = UNet(model_config(cfg)).eval()
    bank = SliceBank(64)
    bank.add_synthetic()
    stream = SampleStream(bank, sample_config(cfg), [1, 2, 3], 4, 4)
    img, guide, target, weight, native_px, clicks_t, prev, geo, _ = next(iter(torch.utils.data.DataLoader(stream, batch_size=4)))
    x = torch.cat([img, guide, prev, geo], 1)
    outs = []
    with ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as pool:
        for p in (None, pool):
            xx, ww = x.clone(), weight.clone()
            add_iterative_clicks(model, xx, target, ww, native_px, clicks_t, cfg, np.random.default_rng(3), lambda: torch.autocast("cpu", enabled=False), p)
            outs.append((xx, ww))
    assert not torch.equal(outs[0][0], x)  # clicks were added
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_iterative_paper_pairs_are_random_pairs_with_the_models_mask(tmp_path):
    """--iterative-paper-p: an iterative step adds one of the paper's random pairs (a positive
    click inside the target, a negative one in the band around it, whatever the errors), with
    the radius of the model's mask; without it, one ritm click on the largest error."""
    from iunet.clicks import Click
    from iunet.train import _corrective_click

    gt = np.zeros((64, 64), bool)
    gt[20:40, 20:44] = True
    pred = gt.copy()
    pred[20:40, 44:50] = True  # a leak on the right: the ritm click goes there
    first = [Click(30, 30, True, 2.0)]
    scfg = sample_config(tiny(tmp_path))
    band = int(round(20 * 64 / 256))  # the paper's 20 native px on the 64 px grid
    near = ndimage.binary_dilation(gt, iterations=band) & ~gt
    for seed in range(20):
        clicks, disks, geo, w = _corrective_click(gt, pred, first, None, 256, seed, scfg, "wdice", True, "equal", paper=True)
        pos, neg = clicks[1:]
        assert len(clicks) == 3 and pos.positive and not neg.positive and geo is None
        assert gt[pos.y, pos.x] and near[neg.y, neg.x]
        assert pos.radius_px == neg.radius_px == clicks_radius(scfg, pred)
        assert disks.shape == (2, 64, 64) and w.shape == (64, 64)
    clicks, *_ = _corrective_click(gt, pred, first, None, 256, 0, scfg, "wdice", True, "equal")
    (c,) = clicks[1:]
    assert not c.positive and pred[c.y, c.x] and not gt[c.y, c.x]  # ritm: on the leak
    # no target (a mask carried past the structure's end): no pair
    assert _corrective_click(np.zeros_like(gt), pred, first, None, 256, 0, scfg, "wdice", True, "equal", paper=True) is None
    # and a run with it trains
    train(tiny(tmp_path / "pp", epochs=1, steps=2, use_prev_mask=True, iterative_clicks=2, iterative_paper_p=1.0))
    assert parse_args(["--iterative-paper-p", "0.5", "--out", str(tmp_path)]).iterative_paper_p == 0.5


def clicks_radius(scfg, pred):
    from iunet.data import grid_radius

    return grid_radius(scfg, float(pred.sum()), 256)


def test_time_cosine_ends_the_run_when_the_budget_is_spent(tmp_path):
    """--time-cosine: the run stops once --max-minutes is spent, even in the middle of an epoch
    (which is validated and saved), with the learning rate annealed towards 0 over the budget."""
    cfg = tiny(tmp_path, epochs=1000, steps=10**6, max_minutes=0.05, time_cosine=True, iterative_clicks=0)
    train(cfg)
    hist = load_checkpoint(tmp_path / "last.safetensors").train_config["history"]
    assert len(hist) == 1 and 0 < hist[0]["steps"] < 10**6 and hist[0]["samples_per_s"] > 0
    from safetensors.torch import load_file  # noqa: F401  (the optimiser state is written too)
    assert (tmp_path / "last.optim.safetensors").exists()
    with pytest.raises(SystemExit):
        train(tiny(tmp_path / "x", time_cosine=True))  # needs a budget


def test_prev_image_training_widens_a_previous_mask_model_and_feeds_the_neighbour(tmp_path):
    """--prev-image: a geodesic previous-mask model gains the 2.5D channel last at zero weight
    (so it starts as the source), trains with it (the iterative clicks set it to the sample's
    own image with its own mask), validates propagation with the neighbour's image; it needs
    --prev-mask and cannot be widened or narrowed again."""
    from iunet.inference import Predictor

    base = tiny(tmp_path / "geo", epochs=1, steps=2, use_prev_mask=True, geodesic=True, propagate_p=0.5)
    train(base)
    cfg = tiny(tmp_path / "pi", epochs=1, steps=2, use_prev_mask=True, geodesic=True, prev_image=True, propagate_p=0.5,
               iterative_clicks=2, init=str(tmp_path / "geo" / "last.safetensors"), lr=0.0)
    train(cfg)
    ck = load_checkpoint(tmp_path / "pi" / "last.safetensors")
    assert ck.model_config.prev_image and ck.model_config.in_channels == 7
    w = ck.model.state_dict()["down.0.0.weight"]
    assert not w[:, 6:].any()  # lr 0: still the zero weight it started with
    from iunet.data import SliceBank, slices_from_volume
    from iunet.train import propagation_set, validate_propagation

    vol = np.zeros((8, 64, 64), np.int16)
    vol[2:6, 20:44, 20:44] = 1
    bank = SliceBank(64)
    bank.add("box", slices_from_volume(vol, 64, spacing_z_mm=5.0))
    pairs = propagation_set(cfg, bank, 4)
    assert len(pairs) == 4 and all(p[3] is not None and p[3].shape == (64, 64) for p in pairs)  # the neighbour's HU
    assert set(validate_propagation(ck.model, cfg, pairs, "cpu")) == {"prop_dice", "stop_rate"}
    src = load_checkpoint(tmp_path / "geo" / "last.safetensors")
    img = np.full((80, 80), -100.0, np.float32)
    img[20:60, 20:60] = 60.0
    prev = np.zeros((80, 80), bool)
    prev[25:55, 25:55] = True
    other = np.full((80, 80), 300.0, np.float32)  # what the previous image holds cannot matter yet
    widened = Predictor(ck)
    np.testing.assert_allclose(widened.predict(img, [], prev, prev_image_hu=other), widened.predict(img, [], prev), atol=1e-6)
    assert src.model_config.in_channels == 6
    with pytest.raises(SystemExit):
        parse_args(["--prev-image", "--no-prev-mask"])
    assert parse_args(["--prev-image", "--prev-mask"]).prev_image
    with pytest.raises(SystemExit, match="previous-image"):
        train(tiny(tmp_path / "back", epochs=1, steps=2, use_prev_mask=True, geodesic=True, init=str(tmp_path / "pi" / "last.safetensors")))
