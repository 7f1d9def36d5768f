"""Dice and weighted Dice losses (paper eqs. 1 and 3), differentiable, on torch tensors.

Shapes: ``probs``, ``target`` and ``weight`` are (B, 1, Y, X) or (B, Y, X); probabilities in
[0, 1], target 0/1, weights >= 0. Losses are averaged over the batch.
"""
from __future__ import annotations

import torch

SMOOTH = 1.0


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).float()


def dice_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = SMOOTH) -> torch.Tensor:
    """Soft Dice loss ``1 - (2 Σ p g + eps) / (Σ (p + g) + eps)`` per sample, batch mean."""
    p, g = _flat(probs), _flat(target)
    num = 2.0 * (p * g).sum(1) + eps
    den = (p + g).sum(1) + eps
    return (1.0 - num / den).mean()


def weighted_dice_loss(
    probs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, eps: float = SMOOTH
) -> torch.Tensor:
    """Weighted Dice loss (paper eq. 3, as docs/design.md §1 reads it).

    ``W = 1 + weight`` (so interior pixels with weight 0 still count) and
    ``L = 1 - (2 Σ W p g + eps) / (Σ W (p + g) + eps)`` per sample, batch mean.
    ``weight`` is ``max(d, w)``: boundary map and click weights (see ``weight_maps``).
    """
    p, g, w = _flat(probs), _flat(target), 1.0 + _flat(weight)
    num = 2.0 * (w * p * g).sum(1) + eps
    den = (w * (p + g)).sum(1) + eps
    return (1.0 - num / den).mean()
