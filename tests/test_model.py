import json

import pytest
import torch
from safetensors.torch import save_file

from iunet.model import Checkpoint, InputConfig, ModelConfig, UNet, load_checkpoint, read_header, save_checkpoint


@pytest.mark.parametrize("mc,channels", [(ModelConfig(), 3), (ModelConfig(interactive=False), 1), (ModelConfig(use_prev_mask=True), 4),
                                        (ModelConfig(use_prev_mask=True, geodesic=True), 6), (ModelConfig(geodesic=True), 5)])
def test_input_channels(mc, channels):
    assert mc.in_channels == channels


def test_unet_shapes_and_depth():
    mc = ModelConfig(base_channels=4, depth=4)
    m = UNet(mc)
    assert len(m.down) == 4 and len(m.up) == 4  # 4 down, bottleneck, 4 up (paper)
    y = m(torch.zeros(2, 3, 64, 64))
    assert y.shape == (2, 1, 64, 64)


def test_checkpoint_round_trip_is_exact(tmp_path):
    mc, ic = ModelConfig(base_channels=4, depth=2), InputConfig(grid_px=64, alpha=None)
    m = UNet(mc).eval()
    p = save_checkpoint(Checkpoint(m, mc, ic, {"epochs": 3}, {"dice@1": 0.5}, "demo"), tmp_path / "m.safetensors")
    ck = load_checkpoint(p)
    assert ck.model_config == mc and ck.input_config == ic and ck.name == "demo"
    assert ck.train_config == {"epochs": 3} and ck.metrics == {"dice@1": 0.5}
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), ck.model(x))
    assert read_header(p)["format_version"] == 1


def test_loading_is_strict(tmp_path):
    mc = ModelConfig(base_channels=4, depth=2)
    sd = UNet(mc).state_dict()
    sd.pop("head.bias")
    header = {"format_version": 1, "name": "", "model_config": mc.__dict__, "input_config": InputConfig().__dict__}
    p = tmp_path / "broken.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(p), metadata={"iunet": json.dumps(header)})
    with pytest.raises(RuntimeError, match="head.bias"):
        load_checkpoint(p)


def test_foreign_files_are_refused(tmp_path):
    p = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(1)}, str(p))
    with pytest.raises(ValueError, match="not a checkpoint"):
        read_header(p)
    q = tmp_path / "pickle.pt"
    q.write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(ValueError):
        read_header(q)


def test_adapt_input_channels_keeps_the_source_function():
    import torch

    from iunet.model import ModelConfig, UNet, adapt_input_channels

    torch.manual_seed(0)
    src = UNet(ModelConfig(base_channels=4, depth=2)).eval()
    dst = UNet(ModelConfig(base_channels=4, depth=2, use_prev_mask=True)).eval()
    dst.load_state_dict(adapt_input_channels(src.state_dict(), dst), strict=True)
    x = torch.randn(2, 3, 32, 32)
    prev = torch.zeros(2, 1, 32, 32)
    torch.testing.assert_close(dst(torch.cat([x, prev], 1)), src(x))  # a zero-weight new channel


def test_adapt_input_channels_adds_geodesic_channels_last():
    """A previous-mask model gains the two geodesic channels after its four: same function while
    their weights are zero, whatever the maps hold."""
    import torch

    from iunet.model import ModelConfig, UNet, adapt_input_channels

    torch.manual_seed(0)
    src = UNet(ModelConfig(base_channels=4, depth=2, use_prev_mask=True)).eval()
    dst = UNet(ModelConfig(base_channels=4, depth=2, use_prev_mask=True, geodesic=True)).eval()
    dst.load_state_dict(adapt_input_channels(src.state_dict(), dst), strict=True)
    x = torch.randn(2, 4, 32, 32)
    geo = torch.rand(2, 2, 32, 32)
    torch.testing.assert_close(dst(torch.cat([x, geo], 1)), src(x))


def test_prev_image_channel_comes_last_and_needs_the_previous_mask():
    """The 2.5D channel is the last input; a model widened with it computes what it computed
    while its weights are zero; without the previous-mask channel it is refused."""
    import pytest
    import torch

    from iunet.model import ModelConfig, UNet, adapt_input_channels

    with pytest.raises(ValueError, match="use_prev_mask"):
        ModelConfig(prev_image=True)
    mc = ModelConfig(base_channels=4, depth=2, use_prev_mask=True, geodesic=True, geodesic_soft=True, prev_image=True)
    assert mc.in_channels == 9 and mc.geodesic_channels == slice(4, 8)
    assert ModelConfig(use_prev_mask=True, geodesic=True).geodesic_channels == slice(4, 6)
    torch.manual_seed(0)
    src = UNet(ModelConfig(base_channels=4, depth=2, use_prev_mask=True, geodesic=True)).eval()
    dst = UNet(ModelConfig(base_channels=4, depth=2, use_prev_mask=True, geodesic=True, prev_image=True)).eval()
    dst.load_state_dict(adapt_input_channels(src.state_dict(), dst), strict=True)
    x = torch.randn(2, 6, 32, 32)
    torch.testing.assert_close(dst(torch.cat([x, torch.rand(2, 1, 32, 32)], 1)), src(x))
