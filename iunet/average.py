"""Average the weights of checkpoints of one architecture (a "model soup", Wortsman et al. 2022).

    python -m iunet.average OUT.safetensors A.safetensors B.safetensors [...] [--geodesic-noise-ref X]

Meant for runs that start from the same weights and differ in their draw (seed), such as two
continuations of the shipped weights with the encoder frozen (docs/design.md, "Averaging
continuations"): their weights stay close enough that the mean is a network of its own (as
measured there: at or a little above its inputs on some rows, between them on others; no
free gain). Floating-point tensors (weights, batch-norm running statistics) are
averaged with equal weight; integer buffers (batch-norm's step counters) are taken from the
first. Every input must have the same model config and input config; the run-time noise rule
(``InputConfig.geodesic_noise_ref``) may differ and is set for the output with
``--geodesic-noise-ref`` (default: the first input's). The header says what was averaged.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import torch

from .model import Checkpoint, load_checkpoint, save_checkpoint


def _differing_fields(a, b, skip: frozenset[str] = frozenset()) -> list[str]:
    """The names of the fields in which dataclasses ``a`` and ``b`` (of one type) differ."""
    return [f.name for f in dataclasses.fields(a) if f.name not in skip and getattr(a, f.name) != getattr(b, f.name)]


def average_checkpoints(paths: Sequence[str | Path], geodesic_noise_ref: float | None = None) -> Checkpoint:
    """The equal-weight mean of the checkpoints at ``paths`` (at least two), as a new Checkpoint.

    Raises ValueError naming the first difference when the architectures or input settings
    differ (apart from ``geodesic_noise_ref``, which the output takes from the argument or the
    first input)."""
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two checkpoints, got {len(paths)}")
    cks = [load_checkpoint(p) for p in paths]
    first = cks[0]
    for p, c in zip(paths[1:], cks[1:]):
        if diff := _differing_fields(first.model_config, c.model_config):
            raise ValueError(f"{p} has another architecture than {paths[0]} ({', '.join(diff)}): only one architecture can be averaged")
        if diff := _differing_fields(first.input_config, c.input_config, frozenset({"geodesic_noise_ref"})):
            raise ValueError(f"{p} prepares its input otherwise than {paths[0]} ({', '.join(diff)}): they cannot be averaged")
    states = [c.model.state_dict() for c in cks]
    mean = {k: (torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v.clone())
            for k, v in states[0].items()}
    first.model.load_state_dict(mean, strict=True)
    ref = first.input_config.geodesic_noise_ref if geodesic_noise_ref is None else float(geodesic_noise_ref)
    train_config = dict(first.train_config)
    train_config["averaged_from"] = [
        {"path": str(p), "name": c.name, "seed": c.train_config.get("seed"), "metrics": c.metrics} for p, c in zip(paths, cks)
    ]
    return Checkpoint(first.model, first.model_config, dataclasses.replace(first.input_config, geodesic_noise_ref=ref),
                      train_config, {}, first.name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m iunet.average", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the averaged checkpoint to write (.safetensors)")
    p.add_argument("inputs", nargs="+", help="two or more checkpoints of one architecture")
    p.add_argument("--geodesic-noise-ref", type=float, default=None,
                   help="the noise rule the output runs with (InputConfig.geodesic_noise_ref; default: the first input's)")
    a = p.parse_args(argv)
    if a.geodesic_noise_ref is not None and not a.geodesic_noise_ref >= 0:
        p.error(f"--geodesic-noise-ref must be >= 0 (0 = no noise rule), got {a.geodesic_noise_ref}")
    if Path(a.out).resolve() in {Path(x).resolve() for x in a.inputs}:
        p.error(f"{a.out} is also an input: write the average to a new file")
    try:
        ck = average_checkpoints(a.inputs, a.geodesic_noise_ref)
        save_checkpoint(ck, a.out)
    except (ValueError, OSError, RuntimeError) as e:  # OSError: a missing input, an output folder that cannot be written
        print(f"python -m iunet.average: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out}: the mean of {len(a.inputs)} checkpoints ({ck.model_config.in_channels} input channels, "
          f"geodesic_noise_ref {ck.input_config.geodesic_noise_ref:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
