"""python -m iunet.average: the equal-weight mean of checkpoints of one architecture."""
import numpy as np
import pytest
import torch

from iunet.average import average_checkpoints, main
from iunet.inference import Predictor
from iunet.model import Checkpoint, InputConfig, ModelConfig, UNet, load_checkpoint, read_header, save_checkpoint


def _ckpt(path, seed, mc=None, **inputs):
    torch.manual_seed(seed)
    mc = mc or ModelConfig(base_channels=4, depth=2, use_prev_mask=True)
    model = UNet(mc)
    with torch.no_grad():  # batch-norm statistics that differ between the two, as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(seed)
    return save_checkpoint(Checkpoint(model, mc, InputConfig(grid_px=32, **inputs), {"seed": seed}, {"dice@1": seed / 10}, "tiny"), path)


def test_average_is_the_mean_of_every_float_tensor(tmp_path):
    a, b = _ckpt(tmp_path / "a.safetensors", 1), _ckpt(tmp_path / "b.safetensors", 2, geodesic_noise_ref=0.0)
    assert main([str(tmp_path / "m.safetensors"), str(a), str(b), "--geodesic-noise-ref", "0.012"]) == 0
    sa, sb = load_checkpoint(a).model.state_dict(), load_checkpoint(b).model.state_dict()
    out = load_checkpoint(tmp_path / "m.safetensors")
    sm = out.model.state_dict()
    assert sa.keys() == sm.keys()
    floats = [k for k in sa if sa[k].is_floating_point()]
    assert any("running_var" in k for k in floats) and not all(torch.equal(sa[k], sb[k]) for k in floats)
    for k in floats:
        torch.testing.assert_close(sm[k], (sa[k] + sb[k]) / 2)
    assert all(torch.equal(sm[k], sa[k]) for k in sa if not sa[k].is_floating_point())  # step counters: the first's
    # the header: the noise rule asked for, what was averaged, no metrics of the inputs as its own
    h = read_header(tmp_path / "m.safetensors")
    assert h["input_config"]["geodesic_noise_ref"] == 0.012 and h["metrics"] == {}
    assert [(x["path"], x["seed"]) for x in h["train_config"]["averaged_from"]] == [(str(a), 1), (str(b), 2)]
    # and it runs as a predictor
    prob = Predictor(tmp_path / "m.safetensors").predict(np.zeros((40, 40), np.float32))
    assert prob.shape == (40, 40)


def test_average_of_one_network_with_itself_is_that_network(tmp_path):
    a = _ckpt(tmp_path / "a.safetensors", 3)
    m = average_checkpoints([a, a])
    assert m.input_config.geodesic_noise_ref == load_checkpoint(a).input_config.geodesic_noise_ref
    for k, v in load_checkpoint(a).model.state_dict().items():
        assert torch.equal(m.model.state_dict()[k], v)


def test_average_refuses_what_cannot_be_averaged(tmp_path, capsys):
    a = _ckpt(tmp_path / "a.safetensors", 1)
    wide = _ckpt(tmp_path / "w.safetensors", 2, mc=ModelConfig(base_channels=8, depth=2, use_prev_mask=True))
    grid = _ckpt(tmp_path / "g.safetensors", 2, level_hu=50.0)
    with pytest.raises(ValueError, match="another architecture.*base_channels"):
        average_checkpoints([a, wide])
    with pytest.raises(ValueError, match="input otherwise.*level_hu"):
        average_checkpoints([a, grid])
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints([a])
    # the command line says so in one line, writes nothing, and refuses to overwrite an input
    out = tmp_path / "m.safetensors"
    assert main([str(out), str(a), str(wide)]) == 2 and not out.exists()
    assert main([str(out), str(a), str(tmp_path / "missing.safetensors")]) == 2
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    assert main([str(out), str(a), str(tmp_path / "junk.safetensors")]) == 2
    (tmp_path / "file").write_text("x")
    assert main([str(tmp_path / "file" / "m.safetensors"), str(a), str(a)]) == 2  # no folder to write into
    err = capsys.readouterr().err
    assert "another architecture" in err and "not found" in err and "not a safetensors checkpoint" in err
    assert "Traceback" not in err and not out.exists()
    with pytest.raises(SystemExit):
        main([str(a), str(a), str(grid)])
