"""IU-Net (interactive U-Net, Sakinis et al. 2019, as used by the paper) and the plain U-Net.

Input (B, C, G, G) float32 with C = 1 image channel (HU windowed to [0, 1])
+ 2 guidance channels (foreground / background clicks) for IU-Net
+ 1 previous-mask channel when ``use_prev_mask``
+ 2 geodesic click maps (foreground / background) when ``geodesic``
+ 2 more at a smaller edge weight when also ``geodesic_soft``
+ 1 previous-image channel when ``prev_image`` (2.5D: the slice the previous mask was drawn on,
  windowed as the image; the image itself when that mask is the slice's own); output (B, 1, G, G) logits.
G must be divisible by 2**depth.

Checkpoints are one ``.safetensors`` file: the weights plus a JSON header (``iunet`` key of
the safetensors metadata) with the model config, the HU window, the grid size, the click
settings, the training config and a format version. Loading is strict and never unpickles.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open
from torch import nn

from .clicks import (DEFAULT_ALPHA, DEFAULT_GEODESIC_LAMBDA, DEFAULT_GEODESIC_NOISE_REF, DEFAULT_GEODESIC_SOFT_LAMBDA,
                     DEFAULT_GEODESIC_TAU_PX, DEFAULT_RADIUS_PX)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelConfig:
    """Architecture. ``interactive=False`` is the automatic U-Net baseline (image only)."""

    interactive: bool = True
    use_prev_mask: bool = False
    base_channels: int = 16
    depth: int = 4
    dropout: float = 0.1
    batch_norm: bool = True
    geodesic: bool = False  # two more inputs, after the others: the clicks' geodesic maps (iunet.clicks)
    # two more after those (with geodesic): the same maps at InputConfig.geodesic_soft_lambda,
    # which cross weak edges that the first pair stops at (docs/design.md, "Geodesic click maps")
    geodesic_soft: bool = False
    # one more, the last (with use_prev_mask): the image of the slice the previous mask was drawn
    # on, so a carried mask comes with what it outlined (docs/design.md, "2.5D")
    prev_image: bool = False

    def __post_init__(self) -> None:
        if self.prev_image and not (self.interactive and self.use_prev_mask):
            raise ValueError("prev_image needs an interactive model with use_prev_mask (it is that mask's slice)")

    @property
    def in_channels(self) -> int:
        return self.geodesic_channels.stop + (1 if self.prev_image else 0)  # every input but the 2.5D one ends there

    @property
    def geodesic_channels(self) -> slice:
        """Where the geodesic maps sit in the input (an empty slice without them)."""
        if not self.interactive:
            return slice(1, 1)
        start = 3 + (1 if self.use_prev_mask else 0)
        return slice(start, start + (2 if self.geodesic else 0) + (2 if self.geodesic and self.geodesic_soft else 0))


@dataclass(frozen=True)
class InputConfig:
    """How a slice becomes a model input: HU window, grid, click drawing. The one place these
    defaults are written: training configs hold an ``InputConfig`` (``TrainConfig.inputs``,
    ``SampleConfig.inputs``), the checkpoint carries it, and its users default to it
    (docs/design.md §5, convention 5)."""

    level_hu: float = 40.0
    width_hu: float = 400.0
    grid_px: int = 256
    click_encoding: str = "disk"
    default_radius_px: float = DEFAULT_RADIUS_PX  # fixed click radius, and the first click's when dynamic
    alpha: float | None = DEFAULT_ALPHA  # dynamic click size the model was trained with; None = fixed
    # geodesic click maps (used by models with ModelConfig.geodesic): edge cost and decay length
    geodesic_lambda: float = DEFAULT_GEODESIC_LAMBDA
    geodesic_tau_px: float = DEFAULT_GEODESIC_TAU_PX
    geodesic_soft_lambda: float = DEFAULT_GEODESIC_SOFT_LAMBDA  # the second pair's (ModelConfig.geodesic_soft)
    # an image noisier than this gets its maps' edge cost from a smoother copy (clicks.geodesic_sigma_px;
    # 0 = never); checkpoints from before 2026-11-28 (version 5) carry no value and get this one
    geodesic_noise_ref: float = DEFAULT_GEODESIC_NOISE_REF

    def geodesic_lambdas(self, soft: bool) -> tuple[float, ...]:
        """The edge weights of a geodesic model's map pairs, in channel order."""
        return (self.geodesic_lambda, self.geodesic_soft_lambda) if soft else (self.geodesic_lambda,)


@dataclass
class Checkpoint:
    model: "UNet"
    model_config: ModelConfig
    input_config: InputConfig
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    name: str = ""


def _double_conv(cin: int, cout: int, bn: bool, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(((cin, cout), (cout, cout))):
        layers.append(nn.Conv2d(a, b, 3, padding=1, bias=not bn))
        if bn:
            layers.append(nn.BatchNorm2d(b))
        layers.append(nn.ReLU(inplace=True))
        if i == 0 and dropout > 0:
            layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """U-Net with ``depth`` down blocks, a bottleneck and ``depth`` up blocks (paper §II).

    Down: two 3×3 conv + ReLU (+ dropout) then 2×2 max-pool. Up: 2×2 transposed conv,
    concatenation with the skip, two 3×3 conv + ReLU. Head: 1×1 conv → 1 logit channel.
    Widths double per level from ``base_channels``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c, bn = config.base_channels, config.batch_norm
        widths = [c * 2**i for i in range(config.depth + 1)]
        self.down = nn.ModuleList()
        cin = config.in_channels
        for w in widths[:-1]:
            self.down.append(_double_conv(cin, w, bn, config.dropout))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _double_conv(widths[-2], widths[-1], bn, config.dropout)
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for w_hi, w_lo in zip(widths[:0:-1], widths[-2::-1]):
            self.up.append(nn.ConvTranspose2d(w_hi, w_lo, 2, stride=2))
            self.up_conv.append(_double_conv(2 * w_lo, w_lo, bn, 0.0))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips)):
            x = conv(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def adapt_input_channels(state: dict[str, torch.Tensor], model: "UNet") -> dict[str, torch.Tensor]:
    """``state`` (a state dict) with its first convolution widened or cut to ``model``'s input
    channels: new channels start at zero weight, so the adapted network computes exactly what
    the source computed until training teaches it to use them (e.g. the previous-mask channel)."""
    key = "down.0.0.weight"
    want = model.state_dict()[key].shape
    w = state[key]
    if w.shape == want:
        return state
    out = dict(state)
    new = torch.zeros(want, dtype=w.dtype)
    n = min(w.shape[1], want[1])
    new[:, :n] = w[:, :n]
    out[key] = new
    return out


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write weights + self-describing JSON header to ``path`` (.safetensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "format_version": FORMAT_VERSION,
        "name": ckpt.name,
        "model_config": asdict(ckpt.model_config),
        "input_config": asdict(ckpt.input_config),
        "train_config": ckpt.train_config,
        "metrics": ckpt.metrics,
    }
    state = {k: v.detach().to("cpu").contiguous() for k, v in ckpt.model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata={"iunet": json.dumps(header)})
    tmp.replace(path)  # atomic: a killed run never leaves half a checkpoint
    return path


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a checkpoint, without loading the weights."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a safetensors checkpoint: {e}") from e
    if "iunet" not in meta:
        raise ValueError(f"{path} has no iunet header: not a checkpoint written by iunet")
    header = json.loads(meta["iunet"])
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {header.get('format_version')}, this iunet reads {FORMAT_VERSION}"
        )
    return header


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint strictly (every tensor must match the config) onto ``device``."""
    header = read_header(path)
    mc = ModelConfig(**header["model_config"])
    ic = InputConfig(**header["input_config"])
    model = UNet(mc)
    model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    model.to(device).eval()
    return Checkpoint(model, mc, ic, header.get("train_config", {}), header.get("metrics", {}), header.get("name", ""))
