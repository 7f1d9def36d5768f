"""Shared fixtures: a tiny random checkpoint, the real-data folder (tests skip without it)."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("real data folder ../shared/data is absent")
    return SHARED_DATA


def make_checkpoint(path: Path, name: str = "test model", grid_px: int = 128, depth: int = 4) -> Path:
    """A small IU-Net with random (seeded) weights, written as a real checkpoint."""
    import torch

    from iunet.model import Checkpoint, InputConfig, ModelConfig, UNet, save_checkpoint

    torch.manual_seed(0)
    mc = ModelConfig(base_channels=4, depth=depth)
    return save_checkpoint(Checkpoint(UNet(mc), mc, InputConfig(grid_px=grid_px), name=name), path)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A 64-px-grid IU-Net with random weights: enough for plumbing tests."""
    import torch

    from iunet.model import Checkpoint, InputConfig, ModelConfig, UNet, save_checkpoint

    torch.manual_seed(0)
    mc = ModelConfig(base_channels=4, depth=2)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(Checkpoint(UNet(mc), mc, InputConfig(grid_px=64), name="tiny"), path)
    return path
