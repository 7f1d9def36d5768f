import pytest
import torch

from iunet.losses import dice_loss, weighted_dice_loss


def test_dice_loss_hand_computed():
    p = torch.tensor([[[1.0, 0.5], [0.0, 0.0]]])
    g = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    # 1 - (2 * 1.5 + 1) / (1.5 + 2 + 1) = 1 - 4 / 4.5
    assert float(dice_loss(p, g)) == pytest.approx(1 - 4 / 4.5)
    assert float(dice_loss(g, g)) == pytest.approx(0.0)


def test_weighted_dice_loss_hand_computed():
    p = torch.tensor([[[1.0, 0.0]]])
    g = torch.tensor([[[1.0, 1.0]]])
    w = torch.tensor([[[0.0, 9.0]]])  # W = 1 + w = [1, 10]
    # num = 2 * (1*1*1) + 1 = 3 ; den = 1*(1+1) + 10*(0+1) + 1 = 13
    assert float(weighted_dice_loss(p, g, w)) == pytest.approx(1 - 3 / 13)
    # zero weights reduce to plain Dice
    assert float(weighted_dice_loss(p, g, torch.zeros_like(w))) == pytest.approx(float(dice_loss(p, g)))


def test_weighted_loss_penalises_boundary_errors_more():
    g = torch.zeros(1, 1, 1, 4)
    g[..., :2] = 1
    w = torch.tensor([[[[0.0, 10.0, 10.0, 0.0]]]])
    miss_edge = g.clone()
    miss_edge[..., 1] = 0
    miss_centre = g.clone()
    miss_centre[..., 0] = 0
    assert weighted_dice_loss(miss_edge, g, w) > weighted_dice_loss(miss_centre, g, w)


def test_losses_are_differentiable():
    logits = torch.zeros(2, 1, 8, 8, requires_grad=True)
    g = (torch.rand(2, 1, 8, 8) > 0.5).float()
    loss = weighted_dice_loss(torch.sigmoid(logits), g, torch.rand(2, 1, 8, 8) * 10)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
