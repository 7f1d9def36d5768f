r"""Train U-Net / IU-Net variants of the paper (Table I) — ``python -m iunet.train``.

Examples::

    # no data needed: the built-in synthetic generator, a few minutes on a CPU
    python -m iunet.train --out runs/demo --epochs 2 --steps 50
    # the shipped class-agnostic model (see weights/*.md for the exact commands)
    python -m iunet.train --preset agnostic --labels ../shared/data/msd_spleen_labels \
        --totalseg ../shared/data/totalseg_example --out runs/agnostic
    # 2 processes with DDP (gloo on CPU, nccl on GPUs)
    torchrun --nproc_per_node 2 -m iunet.train --out runs/ddp --epochs 1 --steps 10

Each epoch is ``--steps`` batches of freshly simulated samples (seeded by seed, epoch and
rank, so a resumed run continues exactly), then a validation with the ``ritm`` robot on a
fixed set of held-out synthetic slices (Dice after 1 and 5 clicks). ``best.safetensors``
(by Dice@5 + Dice@1), ``last.safetensors`` and ``last.optim.safetensors`` are written to
``--out``; ``--resume`` continues from the last epoch. With ``--ema DECAY`` an exponential
moving average of the weights (and of BatchNorm's running statistics) is kept after every
optimiser step, validated after each epoch and written to ``ema.safetensors`` (a fine-tuning
run's smoothed end point; docs/design.md, "Training runs on the CPU").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .clicks import Click, encode_clicks, format_alpha, geodesic_maps, parse_alpha
from .ct_io import load_ct, read_nifti_mask
from .data import (
    SampleConfig, SliceBank, grid_band_px, grid_radius, label_files, load_image_label_pairs, load_label_volumes, make_sample, msd_pairs, slices_from_volume,
)
from .losses import dice_loss, weighted_dice_loss
from .inference import cpu_has_native_bf16
from .model import Checkpoint, InputConfig, ModelConfig, UNet, adapt_input_channels, save_checkpoint
from .robot import next_clicks, paper_pair
from .weight_maps import combined_weight_map

HELD_OUT = ("spleen_8",)  # the real check case: never train on it


@dataclass(frozen=True)
class TrainConfig:
    out: str = "runs/iunet"
    name: str = "iunet"
    # model (Table I: U-Net vs IU-Net)
    interactive: bool = True
    use_prev_mask: bool = False
    geodesic: bool = False  # two more inputs: the clicks' geodesic maps (iunet.clicks.geodesic_maps)
    geodesic_soft: bool = False  # two more: the same at inputs.geodesic_soft_lambda (with geodesic)
    prev_image: bool = False  # one more, last (with use_prev_mask): the slice the previous mask was drawn on (2.5D)
    near_end_p: float = 0.0  # of the propagation pairs at a structure's end, the share onto its last slice (small masks go on too)
    near_end_max_px: int = 0  # ... only for structures at most this large (grid px) to their end; 0: any structure
    base_channels: int = 16
    depth: int = 4
    dropout: float = 0.1
    # loss (Table I)
    loss: str = "wdice"  # dice | wdice
    boundary_weights: bool = True
    click_weights: str = "equal"  # none | gaussian | equal
    # the model's input settings (Table I's click size: default_radius_px, alpha; the HU window;
    # grid_px): written into the checkpoint as they are, the default wherever the model is used
    inputs: InputConfig = field(default_factory=InputConfig)
    # clicks (Table I)
    interactions: int = 1
    max_interactions: int = 3
    iterative_clicks: int = 0  # extra error-driven (ritm) clicks from the model's own predictions
    # of those steps, the share that add a random pair of the paper's instead (a positive click
    # anywhere inside the target, a negative one in the band around it), the model's own mask
    # still the previous mask: clicks that need not fall on its errors, as the paper's robot's
    iterative_paper_p: float = 0.0
    first_click_default: bool = False  # first interaction drawn at the default radius, as at test time
    single_click_p: float = 0.0  # first interaction is a single positive click
    centre_click_p: float = 0.5  # of those, at the target's deepest point (else anywhere inside it)
    propagate_p: float = 0.0  # propagation samples (neighbour's mask in, no click); needs --prev-mask
    wide_shapes: bool = False  # the generator adds large regions, vessels and small lesions
    similar_p: float = 0.0  # structures touching the target rendered at nearly its HU
    interior_p: float = 0.0  # per structure: a sinus or vessels inside it that its label includes
    large_target_p: float = 0.0  # targets chosen by area instead of uniformly (large organs more often)
    partial_prev_p: float = 0.0  # propagation samples whose previous mask is only a part of the neighbour's
    spill_p: float = 0.0  # click samples: previous mask spilt into a touching structure, a background click on it
    prop_spill_p: float = 0.0  # propagation samples: previous mask spilt into a touching structure, no click
    spill_parts: int = 1  # a --spill-p sample's leak runs into 1 to this many structures, one touching the next
    seam_p: float = 0.0  # renderings with a thin fat plane between touching structures
    clear_boundary_p: float = 0.0  # plain click samples whose target's border must show (drawn again while hidden)
    sinus_wide_p: float = 0.0  # of the sinus samples, the share with a wide sinus (first clicked anywhere half the time)
    sinus_soft_p: float = 0.0  # of the sinus samples, the share whose core is fluid or soft tissue, not fat
    sinus_mottled_p: float = 0.0  # of the other sinus samples, the share whose fat core has soft-tissue strands
    zoom_p: float = 0.0  # click samples seen zoomed in around the object (ZoomIn at inference)
    lesion_p: float = 0.0  # click samples with a faint lesion painted into the target organ (the target 60 % of the time)
    vessel_p: float = 0.0  # click samples with a vessel drawn into the target organ (the target 60 % of the time)
    vessel_pieces_p: float = 0.0  # of cross-section vessels, the share drawn as 2-4 cross-sections of one tree
    sinus_p: float = 0.0  # click samples whose target has a fat sinus at its core, first clicked there
    wrong_prev_p: float = 0.0  # click samples: previous mask on another structure, a background click on it
    # data
    labels: tuple[str, ...] = ()  # folders/files of label NIfTIs (rendered synthetically)
    label_ids: tuple[int, ...] = ()  # restrict targets to these label ids (e.g. 1 = spleen)
    msd: tuple[str, ...] = ()  # MSD task folders (real images + labels)
    totalseg: tuple[str, ...] = ()  # folders with ct.nii.gz + seg.nii.gz
    synthetic_weight: float = 0.3  # weight of the built-in generator in the mix (0 = off)
    real_fraction: float = 0.3
    flip: bool = False
    # optimisation
    epochs: int = 10
    steps: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-5
    seed: int = 0
    val_slices: int = 48
    workers: int = 1
    device: str = "auto"
    # bf16 autocast on CPU, fp16/bf16 mixed precision on CUDA; None = on CUDA, and on a CPU only
    # where it computes bf16 natively (elsewhere emulated bf16 is slower than fp32: 1.0 against
    # 2.5 samples/s for the agnostic3d preset on one core of an AVX-512 CPU without BF16)
    bf16: bool | None = None
    channels_last: bool = True
    resume: bool = False
    init: str | None = None  # start from these weights (fine-tuning), e.g. the agnostic model
    max_minutes: float | None = None  # stop (after finishing the epoch) when this budget is spent
    threads: int | None = None  # torch CPU threads; 1 avoids oversubscription beside other jobs
    click_workers: int = 0  # processes for the corrective clicks' CPU part (0 = in the main process)
    # the learning rate follows a cosine over the time budget (max_minutes), step by step, and the
    # run ends when the budget is spent, mid-epoch if need be (that epoch is validated and saved):
    # a schedule that completes on a machine of unknown speed, e.g. a GPU lent for minutes
    time_cosine: bool = False
    # exponential moving average of the weights after every step (0 = off), e.g. 0.999: an
    # average over about 1 / (1 - decay) steps, written to ema.safetensors with its own validation
    ema: float = 0.0
    # train the decoder only: the down path and the bottleneck keep the weights and batch-norm
    # statistics they start with (--init), so a continuation cannot drift there (docs/design.md)
    freeze_encoder: bool = False


PRESETS = {
    "agnostic": dict(name="iunet-agnostic", flip=True, synthetic_weight=0.4, iterative_clicks=2, use_prev_mask=False),
    "spleen": dict(name="iunet-spleen", label_ids=(1,), flip=True, synthetic_weight=0.0, iterative_clicks=2),
    # click + propagation model: previous-mask channel, test-time-consistent first clicks, every
    # size of structure, neighbouring-slice pairs where an empty mask can be the answer
    "agnostic3d": dict(
        name="iunet-agnostic-3d", flip=True, synthetic_weight=0.4, iterative_clicks=2, use_prev_mask=True,
        first_click_default=True, single_click_p=0.5, propagate_p=0.3, wide_shapes=True,
    ),
}


# ---------------------------------------------------------------------------------------
# data


def build_bank(cfg: TrainConfig) -> SliceBank:
    g = cfg.inputs.grid_px
    bank = SliceBank(g)
    for src in cfg.labels:
        bank.add(f"labels:{Path(src).name}", load_label_volumes(label_files(Path(src)), g, cfg.label_ids, HELD_OUT))
    for src in cfg.msd:
        bank.add(f"msd:{Path(src).name}", load_image_label_pairs(msd_pairs(Path(src)), g, cfg.label_ids, HELD_OUT))
    for src in cfg.totalseg:
        p = Path(src)
        vol = load_ct(p / "ct.nii.gz")
        lab = read_nifti_mask(p / "seg.nii.gz", like=vol).astype(np.int32)
        ts = slices_from_volume(lab, g, vol.hu, (), min_area_px=200, source="ct")
        if cfg.label_ids:  # organ-specific: its real slices of the organ are targets,
            bank.add(f"totalseg:{p.name}", slices_from_volume(lab, g, vol.hu, cfg.label_ids, source="ct"), weight=0.3)
            for sl in ts:  # and the context holds no second, unlabelled copy of the organ
                sl.labels[np.isin(sl.labels, cfg.label_ids)] = 0
        else:  # class-agnostic: its structures are targets too
            bank.add(f"totalseg:{p.name}", ts, weight=0.5)
        bank.context += ts  # real anatomy around label-only slices (e.g. MSD spleen labels)
    if cfg.synthetic_weight > 0 or not bank.groups:
        bank.add_synthetic(cfg.synthetic_weight if bank.groups else 1.0, wide=cfg.wide_shapes)
    return bank


def write_split(bank: SliceBank, path: Path) -> dict:
    """Write which cases each source trained on, and which were held out, as JSON (the case
    split that the benchmark's ``--split`` must avoid)."""
    split = {
        "train": {name: sorted({sl.source for sl in bank.groups.get(name, ())}) or [name] for name in bank.weights},
        "context": sorted({sl.source for sl in bank.context}),
        "held_out": list(HELD_OUT),
    }
    path.write_text(json.dumps(split, indent=2))
    return split


def sample_config(cfg: TrainConfig) -> SampleConfig:
    return SampleConfig(
        inputs=cfg.inputs, interactions=cfg.interactions, max_interactions=cfg.max_interactions,
        boundary_weights=cfg.boundary_weights, click_weights=cfg.click_weights,
        real_fraction=cfg.real_fraction, flip=cfg.flip, first_click_default=cfg.first_click_default,
        single_click_p=cfg.single_click_p, centre_click_p=cfg.centre_click_p, propagate_p=cfg.propagate_p if cfg.use_prev_mask else 0.0,
        similar_p=cfg.similar_p, geodesic=cfg.geodesic and cfg.interactive, geodesic_soft=cfg.geodesic and cfg.geodesic_soft,
        interior_p=cfg.interior_p, large_target_p=cfg.large_target_p, partial_prev_p=cfg.partial_prev_p,
        spill_p=cfg.spill_p if cfg.use_prev_mask else 0.0, prop_spill_p=cfg.prop_spill_p, spill_parts=cfg.spill_parts, zoom_p=cfg.zoom_p,
        wrong_prev_p=cfg.wrong_prev_p if cfg.use_prev_mask else 0.0, lesion_p=cfg.lesion_p, vessel_p=cfg.vessel_p, vessel_pieces_p=cfg.vessel_pieces_p, sinus_p=cfg.sinus_p,
        seam_p=cfg.seam_p, clear_boundary_p=cfg.clear_boundary_p, sinus_wide_p=cfg.sinus_wide_p, sinus_soft_p=cfg.sinus_soft_p, sinus_mottled_p=cfg.sinus_mottled_p, prev_image=model_config(cfg).prev_image,
        near_end_p=cfg.near_end_p, near_end_max_px=cfg.near_end_max_px,
    )


class SampleStream(torch.utils.data.IterableDataset):
    """Endless seeded stream of (input, target, weight, hu) tensors for one epoch and rank."""

    def __init__(self, bank: SliceBank, scfg: SampleConfig, seed_seq: list[int], n: int, batch_size: int = 1):
        self.bank, self.scfg, self.seed_seq, self.n, self.batch_size = bank, scfg, seed_seq, n, batch_size

    def __iter__(self):
        # Each data-loader worker makes its own share of the epoch, in whole batches (a loader
        # batches each worker's samples apart), from its own seed: without this, every worker
        # would yield the same n samples.
        info = torch.utils.data.get_worker_info()
        seed_seq, n = self.seed_seq, self.n
        if info is not None and info.num_workers > 1:
            seed_seq = [*seed_seq, 1000 + info.id]
            batches, rest = divmod(n // self.batch_size, info.num_workers)
            n = (batches + (1 if info.id < rest else 0)) * self.batch_size
        rng = np.random.default_rng(seed_seq)
        for _ in range(n):
            sl = self.bank.draw(rng)
            s = make_sample(sl, rng, self.scfg)
            empty = torch.zeros((0, *s.image.shape[1:]))
            geo = torch.from_numpy(s.geodesic) if s.geodesic is not None else empty
            yield (
                torch.from_numpy(s.image), torch.from_numpy(s.guidance), torch.from_numpy(s.target),
                torch.from_numpy(s.weight), torch.tensor(s.native_px), _clicks_tensor(s.clicks), torch.from_numpy(s.prev),
                geo, torch.from_numpy(s.prev_image) if s.prev_image is not None else empty,
            )


def _clicks_tensor(clicks: list[Click], k: int = 8) -> torch.Tensor:
    """Clicks packed as (k, 4) float: y, x, positive, radius (rows of -1 pad)."""
    t = -torch.ones((k, 4))
    for i, c in enumerate(clicks[:k]):
        t[i] = torch.tensor([c.y, c.x, float(c.positive), c.radius_px])
    return t


def _unpack_clicks(t: torch.Tensor) -> list[Click]:
    return [Click(int(r[0]), int(r[1]), bool(r[2] > 0.5), float(r[3])) for r in t if r[0] >= 0]


def _corrective_click(gt: np.ndarray, pred: np.ndarray, clicks: list[Click], image: np.ndarray | None, native_px: int,
                      seed: int, scfg: SampleConfig, loss: str, boundary_weights: bool, click_weights: str, paper: bool = False):
    """One simulated corrective click for one sample (the CPU part of ``add_iterative_clicks``):
    the ``ritm`` click on the largest error of ``pred`` (G, G) against ``gt`` (G, G) (``paper``:
    a random pair of the paper's instead, its band the 20 native pixels of the click samples'),
    then the new click disks (2, G, G), geodesic maps (2 or 4, G, G) when ``image`` (G, G) is
    given, and the loss weight map (G, G) for ``loss == "wdice"``. Returns ``None`` when there is
    no error left (``ritm``) or no target (``paper``). A plain function of its arguments, so that
    a process pool can run it."""
    rng = np.random.default_rng(seed)
    if paper:
        pts = paper_pair(gt, rng, band_px=grid_band_px(gt.shape[0], native_px)) if gt.any() else []
    else:
        pts = next_clicks("ritm", gt, pred, rng, [(k.y, k.x) for k in clicks])
    if not pts:
        return None
    r = grid_radius(scfg, float(pred.sum()), native_px)  # from the current prediction
    clicks = [*clicks, *(Click(c[0], c[1], c[2], r) for c in pts)]
    g = encode_clicks(clicks, gt.shape, scfg.inputs.click_encoding)
    geo = None if image is None else geodesic_maps(image, clicks, scfg.inputs.geodesic_lambdas(scfg.geodesic_soft), scfg.inputs.geodesic_tau_px,
                                                   noise_ref=scfg.inputs.geodesic_noise_ref)
    w = combined_weight_map(gt, clicks, boundary_weights, click_weights) if loss == "wdice" else None
    return clicks, g, geo, w


def add_iterative_clicks(model, x, target, weight, native_px, clicks_t, cfg: TrainConfig, rng, autocast, pool=None) -> None:
    """Let the model predict, then add ritm clicks on its errors (no gradient), in place.

    This trains the network for the clicks a corrective user makes after the first
    interaction, the regime the benchmark's ``ritm`` robot (and a person) is in. ``pool`` (a
    ``concurrent.futures`` executor, ``--click-workers``) runs the per-sample CPU part in
    parallel, so that a GPU is not left waiting on one CPU core."""
    n_iter = int(rng.integers(0, cfg.iterative_clicks + 1))
    if n_iter == 0:
        return
    scfg = sample_config(cfg)
    geo_ch = model_config(cfg).geodesic_channels
    was_training = model.training
    model.eval()
    clicks = [_unpack_clicks(c) for c in clicks_t]
    with torch.no_grad():
        for _ in range(n_iter):
            with autocast():
                pred = (model(x).float() > 0).cpu().numpy()[:, 0]
            gts = (target[:, 0] > 0.5).cpu().numpy()
            images = x[:, 0].float().cpu().numpy() if cfg.geodesic else [None] * x.shape[0]
            seeds = rng.integers(0, 2**31, x.shape[0])
            # (drawn only when asked for, so that runs without it draw as before)
            paper = rng.random(x.shape[0]) < cfg.iterative_paper_p if cfg.iterative_paper_p > 0 else np.zeros(x.shape[0], bool)
            jobs = [
                (gts[b], pred[b], clicks[b], images[b], int(native_px[b]), int(seeds[b]), scfg, cfg.loss, cfg.boundary_weights,
                 cfg.click_weights, bool(paper[b]))
                for b in range(x.shape[0])
            ]
            results = list((pool.map if pool is not None else map)(_corrective_click, *zip(*jobs)))
            for b, res in enumerate(results):
                if res is None:
                    continue
                clicks[b], g, geo, w = res
                x[b, 1:3] = torch.from_numpy(g).to(x.device)
                if cfg.use_prev_mask:  # the mask is now this slice's own: so is its image
                    x[b, 3] = torch.from_numpy(pred[b].astype(np.float32)).to(x.device)
                    if cfg.prev_image:
                        x[b, -1] = x[b, 0]
                if geo is not None:  # 2 maps, or 4 with the soft pair
                    x[b, geo_ch] = torch.from_numpy(geo).to(x.device)
                if w is not None:
                    weight[b, 0] = torch.from_numpy(w).to(x.device)
    model.train(was_training)


# ---------------------------------------------------------------------------------------
# validation


def validation_set(cfg: TrainConfig, bank: SliceBank, n: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Fixed held-out (hu, gt, native_px) grid slices, rendered with a seed that training never uses."""
    rng = np.random.default_rng([cfg.seed, 10**6])
    scfg = replace(sample_config(cfg), geometry=False, real_fraction=0.0, propagate_p=0.0)
    out = []
    for _ in range(n):
        s = make_sample(bank.draw(rng), rng, scfg)
        out.append((s.hu, s.target[0] > 0.5, s.native_px))
    return out


def propagation_set(cfg: TrainConfig, bank: SliceBank, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]:
    """Fixed held-out (hu, gt, previous mask, HU of the previous mask's slice or None) neighbour
    pairs, every (G, G), for models with the previous-mask channel; about one in five or more
    has an empty ``gt`` where the structure ends. The fourth is given with ``--prev-image``."""
    rng = np.random.default_rng([cfg.seed, 10**6 + 1])
    scfg = replace(sample_config(cfg), geometry=False, real_fraction=0.0, propagate_p=1.0)
    out = []
    for _ in range(20 * n):
        if len(out) == n:
            break
        s = make_sample(bank.draw(rng), rng, scfg)
        if s.prev[0].any() and not s.clicks:  # a real pair (not a fallback click sample)
            out.append((s.hu, s.target[0] > 0.5, s.prev[0] > 0.5, s.prev_hu))
    return out


def validate_propagation(model: UNet, cfg: TrainConfig, pairs, device) -> dict[str, float]:
    """Propagation without clicks: mean Dice on the neighbour (1 when both are empty), and how
    often an ended structure is predicted empty (``stop_rate``)."""
    from .inference import Predictor
    from .metrics import dice

    if not pairs:
        return {}
    pred = Predictor(Checkpoint(model, model_config(cfg), input_config(cfg)), device=device)
    model.eval()
    probs = pred.predict_batch([p[0] for p in pairs], [[] for _ in pairs], [p[2] for p in pairs],
                               [p[3] for p in pairs] if cfg.prev_image else None)
    model.train()
    ds, stops = [], []
    for (_, gt, *_), p in zip(pairs, probs):
        m = p >= 0.5
        ds.append(1.0 if not gt.any() and not m.any() else dice(m, gt))
        if not gt.any():
            stops.append(float(m.sum() < 10))
    return {"prop_dice": float(np.mean(ds)), "stop_rate": float(np.mean(stops)) if stops else float("nan")}


def validate(model: UNet, cfg: TrainConfig, val, device, clicks: int = 5, batch_size: int = 16) -> dict[str, float]:
    """Dice after 1 and ``clicks`` ritm clicks, through the same Session the app uses and the
    library's click loop (iunet.evaluation, the benchmark's loop), ``batch_size`` slices per forward."""
    from .inference import Predictor, Session
    from .clicks import ClickSize
    from .evaluation import Track, run_clicks

    ckpt = Checkpoint(model, model_config(cfg), input_config(cfg))
    pred = Predictor(ckpt, device=device)
    cs = ClickSize(cfg.inputs.default_radius_px, cfg.inputs.alpha)
    rng = np.random.default_rng(0)  # unused by ritm, which is deterministic
    tracks = [Track(gt, "ritm", rng, Session(pred, hu, cs)) for hu, gt, _ in val]
    model.eval()
    run_clicks(tracks, clicks, batch_size)
    model.train()
    arr = np.array([t.dice_curve for t in tracks])
    return {"dice@1": float(arr[:, 0].mean()), f"dice@{clicks}": float(arr[:, clicks - 1].mean())}


# ---------------------------------------------------------------------------------------
# training


def model_config(cfg: TrainConfig) -> ModelConfig:
    return ModelConfig(cfg.interactive, cfg.use_prev_mask, cfg.base_channels, cfg.depth, cfg.dropout, geodesic=cfg.geodesic and cfg.interactive,
                       geodesic_soft=cfg.geodesic and cfg.interactive and cfg.geodesic_soft,
                       prev_image=cfg.prev_image and cfg.interactive and cfg.use_prev_mask)


def input_config(cfg: TrainConfig) -> InputConfig:
    """The input settings the checkpoint carries: the run's own, as they are."""
    return cfg.inputs


# The input settings older checkpoints stored flat in their train_config, and the InputConfig
# field each became (``click_encoding`` was always "disk" then).
_FLAT_INPUTS = {"level_hu": "level_hu", "width_hu": "width_hu", "grid_px": "grid_px", "radius_px": "default_radius_px", "alpha": "alpha"}


def upgrade_train_config(tc: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint header's ``train_config`` in today's layout: the input settings nested under
    ``inputs`` (as ``asdict(TrainConfig)`` writes them). Older checkpoints kept ``level_hu``,
    ``width_hu``, ``grid_px``, ``radius_px`` and ``alpha`` as fields of their own; those move into
    ``inputs``. A ``train_config`` already in this layout (or empty) comes back unchanged."""
    if "inputs" in tc or not any(k in tc for k in _FLAT_INPUTS):
        return dict(tc)
    out = {k: v for k, v in tc.items() if k not in _FLAT_INPUTS}
    inputs = asdict(InputConfig())
    inputs.update({new: tc[old] for old, new in _FLAT_INPUTS.items() if old in tc})
    out["inputs"] = inputs
    return out


def _save_optim(opt: torch.optim.Optimizer, path: Path, meta: dict) -> None:
    tensors = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    save_file(tensors, str(path), metadata={"meta": json.dumps(meta)})


def _load_optim(opt: torch.optim.Optimizer, path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["meta"])
    flat = load_file(str(path))
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for key, v in flat.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    sd["state"] = state
    opt.load_state_dict(sd)
    return meta


def train(cfg: TrainConfig) -> Path:
    """Run training; returns the path of the best checkpoint."""
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", "0"))
    from .inference import resolve_device

    device = resolve_device(cfg.device)
    if ddp:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    main = rank == 0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = UNet(model_config(cfg)).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_epoch, best_score, history = 0, -1.0, []
    if cfg.resume and (out / "last.safetensors").exists():
        model.load_state_dict(load_file(str(out / "last.safetensors"), device=str(device)), strict=True)
        meta = _load_optim(opt, out / "last.optim.safetensors")
        start_epoch, best_score, history = meta["epoch"] + 1, meta["best_score"], meta["history"]
        if main:
            print(f"resumed from {out}/last.safetensors at epoch {start_epoch}", file=sys.stderr)
    if cfg.init and start_epoch == 0:
        from .model import load_checkpoint

        src = load_checkpoint(cfg.init)
        state = src.model.state_dict()
        if src.model_config != model_config(cfg):
            want = model_config(cfg)
            if src.model_config.prev_image:
                raise SystemExit(f"--init {cfg.init}: a model with the previous-image channel cannot change its inputs ({src.model_config} → {want})")
            if replace(src.model_config, use_prev_mask=want.use_prev_mask, geodesic=want.geodesic, geodesic_soft=want.geodesic_soft,
                       prev_image=False) != replace(want, prev_image=False):
                raise SystemExit(f"--init {cfg.init}: its model config {src.model_config} differs from this run's {want}")
            if src.model_config.geodesic and want.use_prev_mask != src.model_config.use_prev_mask:
                raise SystemExit(f"--init {cfg.init}: cannot add or drop the previous-mask channel of a geodesic model")
            if src.model_config.geodesic_soft and not want.geodesic_soft:
                raise SystemExit(f"--init {cfg.init}: cannot drop the soft geodesic maps of a model")
            # new input channels come last (previous mask, then geodesic maps, then the soft pair,
            # then the previous image) and start at zero weight
            state = adapt_input_channels(state, model)
        model.load_state_dict(state, strict=True)
    if cfg.freeze_encoder:
        freeze_encoder(model)
    ema = ema_copy(model, out / "ema.safetensors" if start_epoch > 0 else None, device) if cfg.ema > 0 else None
    net = model
    if ddp:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    bank = build_bank(cfg)
    if main:
        print(f"data: {bank.describe()}", file=sys.stderr)
        write_split(bank, out / "split.json")
    val = validation_set(cfg, bank, cfg.val_slices) if main else []
    val_prop = propagation_set(cfg, bank, cfg.val_slices) if main and cfg.use_prev_mask and cfg.propagate_p > 0 else []
    use_amp = cfg.bf16 if cfg.bf16 is not None else (device.type == "cuda" or cpu_has_native_bf16())
    amp_dtype = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    autocast = lambda: torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp)  # noqa: E731
    scfg = sample_config(cfg)
    pool = None
    if cfg.click_workers > 0 and cfg.interactive and cfg.iterative_clicks:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(cfg.click_workers, mp_context=mp.get_context("fork"))
    budget_s = (cfg.max_minutes or 0) * 60
    if cfg.time_cosine and budget_s <= 0:
        raise SystemExit("--time-cosine needs --max-minutes")

    def epoch_scores(m: UNet) -> dict[str, float]:
        """The epoch's validation of weights ``m`` (the model's, or their moving average)."""
        sc = validate(m, cfg, val, device) if cfg.interactive else validate_auto(m, cfg, val, device)
        sc.update(validate_propagation(m, cfg, val_prop, device))
        return sc

    t_start = time.time()
    out_of_time = False
    info = {"torch": torch.__version__, "device": str(device), "world_size": world, "host": platform.node(), "cpu": platform.processor(), "bf16": bool(use_amp)}
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        torch.manual_seed(cfg.seed * 1000 + epoch * 10 + rank)
        stream = SampleStream(bank, scfg, [cfg.seed, epoch, rank], cfg.steps * cfg.batch_size, cfg.batch_size)
        loader = torch.utils.data.DataLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.workers, persistent_workers=False)
        rng = np.random.default_rng([cfg.seed, epoch, rank, 7])
        bar = tqdm(loader, total=cfg.steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not main, dynamic_ncols=True)
        t0, losses = time.time(), []
        for step, (img, guide, target, weight, native_px, clicks_t, prev, geo, prev_img) in enumerate(bar):
            if cfg.time_cosine:
                frac = (time.time() - t_start) / budget_s
                if frac >= 1:
                    out_of_time = True
                    break
                warm = min(1.0, frac / 0.02)  # 2 % of the budget: linear warm-up of a fresh optimiser
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * warm * 0.5 * (1 + np.cos(np.pi * frac))
            img, target, weight = img.to(device), target.to(device), weight.to(device)
            parts = [img]
            if cfg.interactive:
                parts.append(guide.to(device))
                if cfg.use_prev_mask:
                    parts.append(prev.to(device))
                if cfg.geodesic:
                    parts.append(geo.to(device))
                if cfg.prev_image and cfg.use_prev_mask:
                    parts.append(prev_img.to(device))
            x = torch.cat(parts, 1)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if cfg.interactive and cfg.iterative_clicks:
                add_iterative_clicks(model, x, target, weight, native_px, clicks_t, cfg, rng, autocast, pool)
            with autocast():
                logits = net(x)
            probs = torch.sigmoid(logits.float())
            loss = weighted_dice_loss(probs, target, weight) if cfg.loss == "wdice" else dice_loss(probs, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema_update(ema, model, cfg.ema)
            losses.append(float(loss.detach()))
            speed = (step + 1) * cfg.batch_size * world / (time.time() - t0)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", slices_per_s=f"{speed:.1f}")
        if not cfg.time_cosine:
            for g in opt.param_groups:  # cosine-ish decay per epoch
                g["lr"] = cfg.lr * 0.5 * (1 + np.cos(np.pi * (epoch + 1) / cfg.epochs))
        train_speed = len(losses) * cfg.batch_size * world / max(time.time() - t0, 1e-9)
        del loader  # its workers end here
        if main and losses:
            scores = epoch_scores(model)
            score = scores.get("dice@1", 0) + scores.get("dice@5", 0) + scores.get("prop_dice", 0)
            rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "steps": len(losses), "samples_per_s": round(train_speed, 1), **scores, "minutes": (time.time() - t_start) / 60}
            history.append(rec)
            print(json.dumps(rec), file=sys.stderr)
            tc = {**asdict(cfg), "history": history, "env": info}
            ck = Checkpoint(model, model_config(cfg), input_config(cfg), tc, scores, cfg.name)
            if score > best_score:
                best_score = score
                save_checkpoint(ck, out / "best.safetensors")
            save_checkpoint(ck, out / "last.safetensors")
            if ema is not None:
                ema_scores = epoch_scores(ema)
                rec["ema"] = ema_scores  # tc holds this history, so the average's checkpoint records it
                print(json.dumps({"epoch": epoch + 1, "ema": ema_scores}), file=sys.stderr)
                save_checkpoint(Checkpoint(ema, model_config(cfg), input_config(cfg), tc, ema_scores, cfg.name), out / "ema.safetensors")
            _save_optim(opt, out / "last.optim.safetensors", {"epoch": epoch, "best_score": best_score, "history": history})
        if out_of_time or (cfg.max_minutes and (time.time() - t_start) / 60 > cfg.max_minutes):
            if main:
                print(f"time budget of {cfg.max_minutes} min spent after epoch {epoch + 1}", file=sys.stderr)
            break
    if pool is not None:
        pool.shutdown()
    if ddp:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return out / "best.safetensors"


def freeze_encoder(model: UNet) -> None:
    """Keep ``model``'s down path and bottleneck as they are, in place: no gradients for their
    weights (so no backward pass through them either) and batch-norm momentum 0, so that their
    running statistics, which inference uses, stay the starting weights' (in training mode the
    layers still normalise by the batch, as when those weights were trained). Dropout there
    stays as it was trained. The decoder and the head learn (``--freeze-encoder``)."""
    for part in (model.down, model.bottleneck):
        for q in part.parameters():
            q.requires_grad_(False)
        for m in part.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = 0.0


def ema_copy(model: UNet, path: Path | None, device) -> UNet:
    """The moving average's model: a copy of ``model`` (in eval mode, no gradients), or the
    weights in ``path`` when a run resumes with one."""
    import copy

    ema = copy.deepcopy(model).eval()
    for q in ema.parameters():
        q.requires_grad_(False)
    if path is not None and path.exists():
        ema.load_state_dict(load_file(str(path), device=str(device)), strict=True)
    return ema


@torch.no_grad()
def ema_update(ema: UNet, model: UNet, decay: float) -> None:
    """``ema ← decay · ema + (1 − decay) · model``, for every parameter and floating-point
    buffer (BatchNorm's running mean and variance); integer buffers (batches seen) are copied."""
    for e, m in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.dtype.is_floating_point:
            e.mul_(decay).add_(m.detach(), alpha=1.0 - decay)
        else:
            e.copy_(m)


def validate_auto(model: UNet, cfg: TrainConfig, val, device) -> dict[str, float]:
    """Automatic U-Net: Dice of its single prediction (the same value at every click count)."""
    from .inference import Predictor
    from .metrics import dice

    pred = Predictor(Checkpoint(model, model_config(cfg), input_config(cfg)), device=device)
    model.eval()
    d = float(np.mean([dice(pred.predict(hu) >= 0.5, gt) for hu, gt, _ in val]))
    model.train()
    return {"dice@1": d, "dice@5": d}


# ---------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(prog="python -m iunet.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainConfig()
    p.add_argument("--preset", choices=sorted(PRESETS), help="defaults of a shipped model (flags given still win)")
    p.add_argument("--out", default=None, help=f"folder for checkpoints, split.json and the optimiser state (default {d.out})")
    p.add_argument("--name", default=None, help=f"model name stored in the checkpoint (default {d.name})")
    p.add_argument("--model", choices=["iunet", "unet"], default=None, help="unet = automatic baseline, no clicks")
    p.add_argument("--prev-mask", action=argparse.BooleanOptionalAction, default=None, help="feed the previous mask as a 4th channel")
    p.add_argument("--geodesic", action=argparse.BooleanOptionalAction, default=None,
                   help="feed the clicks' geodesic distance maps as two more channels (iunet.clicks.geodesic_maps)")
    p.add_argument("--geodesic-noise-ref", type=float, default=None,
                   help=f"with --geodesic: an image noisier than this (windowed units) gets its maps' edge cost from a smoother "
                        f"copy (iunet.clicks.geodesic_sigma_px; default {d.inputs.geodesic_noise_ref:g}; 0 = never, as version 5 was trained)")
    p.add_argument("--prev-image", action=argparse.BooleanOptionalAction, default=None,
                   help="with --prev-mask: one more channel, the slice the previous mask was drawn on (2.5D: a propagation sample's neighbour)")
    p.add_argument("--geodesic-soft", action=argparse.BooleanOptionalAction, default=None,
                   help="with --geodesic: two more channels, the same maps at a smaller edge weight (InputConfig.geodesic_soft_lambda)")
    p.add_argument("--base-channels", type=int, default=None, help=f"channels of the first U-Net level, doubling per level (default {d.base_channels})")
    p.add_argument("--depth", type=int, default=None, help=f"down/up blocks of the U-Net (default {d.depth}, the paper's)")
    p.add_argument("--dropout", type=float, default=None, help=f"dropout in the encoder blocks (default {d.dropout})")
    p.add_argument("--loss", choices=["dice", "wdice"], default=None, help=f"plain Dice or the paper's weighted Dice (default {d.loss})")
    p.add_argument("--boundary-weights", action=argparse.BooleanOptionalAction, default=None, help="Gaussian boundary weight map")
    p.add_argument("--click-weights", choices=["none", "gaussian", "equal"], default=None,
                   help=f"loss weight under foreground clicks: none, Gaussian fall-off (G) or equal (EW) (default {d.click_weights})")
    p.add_argument("--radius-px", type=float, default=None, help=f"fixed click radius (and the first click's radius when dynamic) (default {d.inputs.default_radius_px:g})")
    p.add_argument("--alpha", default=None, help=f"dynamic click size α (radius = α · mask area), e.g. 1/800, or 'none' for fixed clicks (default {format_alpha(d.inputs.alpha)})")
    p.add_argument("--interactions", type=int, default=None, help="random (positive, negative) click pairs per sample")
    p.add_argument("--max-interactions", type=int, default=None,
                   help=f"draw between --interactions and this many click pairs per sample (default {d.max_interactions})")
    p.add_argument("--iterative-clicks", type=int, default=None, help="up to N extra ritm clicks from the model's own errors")
    p.add_argument("--iterative-paper-p", type=float, default=None,
                   help="of those steps, the share that add a random pair of the paper's (not on the errors), the model's mask as the previous mask")
    p.add_argument("--first-click-default", action=argparse.BooleanOptionalAction, default=None,
                   help="draw the first interaction at the default radius, as at test time (no mask yet)")
    p.add_argument("--single-click-p", type=float, default=None, help="probability that the first interaction is one positive click")
    p.add_argument("--centre-click-p", type=float, default=None,
                   help="probability that a single first click lies at the target's deepest point (where the ritm robot clicks), else anywhere inside")
    p.add_argument("--propagate-p", type=float, default=None,
                   help="fraction of propagation samples: a neighbouring slice's mask in the previous-mask channel, no click")
    p.add_argument("--similar-p", type=float, default=None,
                   help="probability that structures touching the target are rendered at nearly its HU")
    p.add_argument("--interior-p", type=float, default=None,
                   help="probability per structure of a fat/fluid sinus or vessels inside it, part of its label")
    p.add_argument("--large-target-p", type=float, default=None,
                   help="probability that the target is chosen by area (large organs more often) instead of uniformly")
    p.add_argument("--near-end-p", type=float, default=None,
                   help="of the propagation pairs taken at a structure's end (empty target), the share taken one step earlier, onto its last slice: a small carried mask goes on as often as it ends")
    p.add_argument("--near-end-max-px", type=int, default=None,
                   help="--near-end-p only for structures whose cross-sections up to their end are at most this many grid pixels (lesions, vessels); a large organ's tapering tip still ends (default 0: any structure)")
    p.add_argument("--partial-prev-p", type=float, default=None,
                   help="probability that a propagation sample's previous mask is only a part of the neighbour's (learn to complete it)")
    p.add_argument("--spill-p", type=float, default=None,
                   help="probability of a click sample whose previous mask spilt into a touching structure, with a background click on the spill")
    p.add_argument("--spill-parts", type=int, default=None,
                   help="a --spill-p sample's leak runs into 1 to this many structures, each touching the mask so far (default 1)")
    p.add_argument("--prop-spill-p", type=float, default=None,
                   help="probability that a propagation sample's previous mask spilt into a touching structure (a part of it); the target is the structure alone, so a leak is not carried on")
    p.add_argument("--sinus-wide-p", type=float, default=None,
                   help="of the --sinus-p samples, the share with a wide sinus and hilum (a kidney's middle slices, its parenchyma a C), first clicked anywhere in the target half the time")
    p.add_argument("--sinus-soft-p", type=float, default=None,
                   help="of the --sinus-p samples, the share whose sinus core is fluid or soft tissue (30-130 HU below the organ) instead of fat")
    p.add_argument("--sinus-mottled-p", type=float, default=None,
                   help="of the other --sinus-p samples (not --sinus-soft-p), the share whose fat core has soft-tissue strands (30-70 %% of it)")
    p.add_argument("--seam-p", type=float, default=None,
                   help="probability that a rendering has a thin fat plane (1-2 grid px) wherever two labelled structures touch, as CT shows between abutting organs")
    p.add_argument("--clear-boundary-p", type=float, default=None,
                   help="probability that a plain click sample's target must show its border: rendered again (up to 4 times) while over a quarter of it lies at nearly the HU of the tissue beside it")
    p.add_argument("--zoom-p", type=float, default=None,
                   help="probability that a click sample is seen zoomed in around the object, as ZoomIn shows it at inference")
    p.add_argument("--wrong-prev-p", type=float, default=None,
                   help="probability of a click sample whose previous mask is another structure (a touching organ), with a background click on it")
    p.add_argument("--lesion-p", type=float, default=None,
                   help="probability of a click sample with a faint lesion (12-70 HU from its organ) painted into the target organ; the lesion is then the target 60 %% of the time")
    p.add_argument("--vessel-pieces-p", type=float, default=None,
                   help="of --vessel-p's cross-sections, the share drawn with 1-3 more cross-sections of the same tree (one target of several pieces)")
    p.add_argument("--vessel-p", type=float, default=None,
                   help="probability of a click sample with a vessel (an in-plane tube or a cross-section, mostly enhanced) drawn into the target organ; the vessel is then the target 60 %% of the time")
    p.add_argument("--sinus-p", type=float, default=None,
                   help="probability of a click sample whose target has a fat sinus at its core (part of its label), with the first click there")
    p.add_argument("--wide-shapes", action=argparse.BooleanOptionalAction, default=None,
                   help="the built-in generator adds large regions, vessels and small lesions")
    p.add_argument("--grid-px", type=int, default=None, help=f"side of the model's square input grid in pixels (default {d.inputs.grid_px})")
    p.add_argument("--labels", action="append", default=None, help="folder or file of label NIfTIs to render (repeatable)")
    p.add_argument("--label-ids", type=int, nargs="*", default=None, help="target label ids (default: any structure)")
    p.add_argument("--msd", action="append", default=None, help="MSD task folder with real images (repeatable)")
    p.add_argument("--totalseg", action="append", default=None, help="folder with ct.nii.gz + seg.nii.gz (repeatable)")
    p.add_argument("--synthetic-weight", type=float, default=None,
                   help=f"share of the built-in synthetic generator in the training mix, 0 = off (default {d.synthetic_weight})")
    p.add_argument("--real-fraction", type=float, default=None,
                   help=f"probability of using a slice's real CT instead of a rendering, when it has one (default {d.real_fraction})")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random left-right flips (off by default: organ-specific models may use the side)")
    for name, text in (
        ("epochs", f"epochs to train (default {d.epochs})"),
        ("steps", f"batches per epoch (default {d.steps})"),
        ("batch-size", f"samples per batch and process (default {d.batch_size})"),
        ("seed", f"seed of the sampling, the validation set and the weights (default {d.seed})"),
        ("val-slices", f"held-out synthetic slices for the validation after each epoch (default {d.val_slices})"),
        ("workers", f"data-loader worker processes (default {d.workers})"),
        ("threads", "torch CPU threads (default: torch's choice; 1 avoids oversubscription beside other jobs)"),
        ("click-workers", f"processes for the corrective clicks' CPU work, for GPUs (default {d.click_workers}: in the main process)"),
    ):
        p.add_argument(f"--{name}", type=int, default=None, help=text)
    p.add_argument("--lr", type=float, default=None, help=f"AdamW learning rate, cosine decay per epoch (default {d.lr:g})")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast on CPU, mixed precision on CUDA (default: on CUDA, and on CPUs with native bf16 only)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format, faster on most CPUs and GPUs (default on)")
    p.add_argument("--resume", action="store_true", help="continue from --out/last.safetensors and its optimiser state")
    p.add_argument("--ema", type=float, default=None,
                   help="keep an exponential moving average of the weights with this decay per step (e.g. 0.999), validated and written to ema.safetensors after each epoch (default 0: off)")
    p.add_argument("--init", default=None, help="initialise from a checkpoint (fine-tuning)")
    p.add_argument("--freeze-encoder", action="store_true", default=None,
                   help="train the decoder only: the down path and bottleneck keep their (--init) weights and batch-norm statistics")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after the epoch in which this much time is spent")
    p.add_argument("--time-cosine", action=argparse.BooleanOptionalAction, default=None,
                   help="learning rate: cosine over the --max-minutes budget, step by step; stop when it is spent (mid-epoch)")
    a = p.parse_args(argv)
    kw: dict = dict(PRESETS[a.preset]) if a.preset else {}
    flags = {
        "out": a.out, "name": a.name, "use_prev_mask": a.prev_mask, "geodesic": a.geodesic, "geodesic_soft": a.geodesic_soft, "prev_image": a.prev_image, "base_channels": a.base_channels, "depth": a.depth,
        "dropout": a.dropout, "loss": a.loss, "boundary_weights": a.boundary_weights, "click_weights": a.click_weights,
        "interactions": a.interactions, "max_interactions": a.max_interactions,
        "iterative_clicks": a.iterative_clicks, "iterative_paper_p": a.iterative_paper_p, "first_click_default": a.first_click_default, "single_click_p": a.single_click_p, "centre_click_p": a.centre_click_p,
        "propagate_p": a.propagate_p, "wide_shapes": a.wide_shapes, "similar_p": a.similar_p, "interior_p": a.interior_p, "large_target_p": a.large_target_p, "partial_prev_p": a.partial_prev_p, "near_end_p": a.near_end_p, "near_end_max_px": a.near_end_max_px, "spill_p": a.spill_p, "prop_spill_p": a.prop_spill_p, "spill_parts": a.spill_parts, "seam_p": a.seam_p, "clear_boundary_p": a.clear_boundary_p, "sinus_wide_p": a.sinus_wide_p, "sinus_soft_p": a.sinus_soft_p, "sinus_mottled_p": a.sinus_mottled_p, "zoom_p": a.zoom_p, "wrong_prev_p": a.wrong_prev_p, "lesion_p": a.lesion_p, "vessel_p": a.vessel_p, "vessel_pieces_p": a.vessel_pieces_p, "sinus_p": a.sinus_p, "synthetic_weight": a.synthetic_weight,
        "real_fraction": a.real_fraction, "flip": a.flip, "epochs": a.epochs, "steps": a.steps,
        "batch_size": a.batch_size, "seed": a.seed, "val_slices": a.val_slices, "workers": a.workers, "lr": a.lr,
        "device": a.device, "bf16": a.bf16, "channels_last": a.channels_last, "max_minutes": a.max_minutes, "init": a.init, "threads": a.threads,
        "click_workers": a.click_workers, "time_cosine": a.time_cosine, "ema": a.ema, "freeze_encoder": a.freeze_encoder,
        "labels": tuple(a.labels) if a.labels else None, "msd": tuple(a.msd) if a.msd else None,
        "totalseg": tuple(a.totalseg) if a.totalseg else None,
        "label_ids": tuple(a.label_ids) if a.label_ids is not None else None,
    }
    kw.update({k: v for k, v in flags.items() if v is not None})
    if a.model:
        kw["interactive"] = a.model == "iunet"
    # the input flags set fields of the run's InputConfig (a preset's, when it has one)
    inputs = {k: v for k, v in (("grid_px", a.grid_px), ("default_radius_px", a.radius_px),
                                ("geodesic_noise_ref", a.geodesic_noise_ref)) if v is not None}
    if a.alpha is not None:
        try:
            inputs["alpha"] = parse_alpha(a.alpha)  # None for "none": fixed clicks
        except ValueError as e:
            p.error(f"--alpha: {e}")
    kw["inputs"] = replace(kw.get("inputs", d.inputs), **inputs)
    kw["resume"] = a.resume
    cfg = replace(d, **kw)
    if not 0.0 <= cfg.inputs.geodesic_noise_ref < float("inf"):
        p.error(f"--geodesic-noise-ref {cfg.inputs.geodesic_noise_ref}: a noise level >= 0 (0 = never smooth more)")
    if not 0.0 <= cfg.ema < 1.0:
        p.error(f"--ema {cfg.ema}: the decay must lie in [0, 1) (0 = off)")
    if cfg.prev_image and not (cfg.use_prev_mask and cfg.interactive):
        p.error("--prev-image needs --prev-mask (it is the image of that mask's slice)")
    if not 0.0 <= cfg.iterative_paper_p <= 1.0:
        p.error(f"--iterative-paper-p {cfg.iterative_paper_p}: a share, in [0, 1]")
    if cfg.spill_parts < 1:
        p.error(f"--spill-parts {cfg.spill_parts}: a leak runs into at least 1 structure")
    if cfg.inputs.grid_px % (2**cfg.depth):
        p.error(f"--grid-px {cfg.inputs.grid_px} must be divisible by 2**depth = {2**cfg.depth}")
    for src in (*cfg.labels, *cfg.msd, *cfg.totalseg):
        if not Path(src).exists():
            p.error(f"data path not found: {src}")
    return cfg


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    best = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"best checkpoint: {best}")


if __name__ == "__main__":
    main()
