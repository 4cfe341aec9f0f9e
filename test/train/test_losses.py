"""The composite loss: CE on the GT bin + L1 + SILog(λ=0.85), valid pixels only."""

from __future__ import annotations

import math

import pytest
import torch

from moa_depth_ros.models import DepthOutput, build_model
from moa_depth_train.losses import DepthLoss, depth_to_bin_index, silog_loss


def test_bin_index_is_nearest_in_log_space():
    centers = torch.tensor([1.0, 2.0, 4.0, 8.0])
    depth = torch.tensor([0.5, 1.3, 1.5, 2.9, 3.0, 100.0])
    # log midpoint of 1 and 2 is sqrt(2) ≈ 1.414; of 2 and 4 is 2.83
    assert depth_to_bin_index(depth, centers).tolist() == [0, 0, 1, 2, 2, 3]


def test_silog_hand_computed():
    pred = torch.tensor([2.0, 1.0])
    gt = torch.tensor([1.0, 1.0])
    e = torch.tensor([math.log(2.0), 0.0])
    expected = math.sqrt((e**2).mean() - 0.85 * e.mean() ** 2)
    assert silog_loss(pred, gt).item() == pytest.approx(expected, rel=1e-6)
    # λ = 1 makes it invariant to a global scale
    assert silog_loss(3.0 * gt, gt, lam=1.0).item() == pytest.approx(0.0, abs=1e-5)


def _output(depth: torch.Tensor, logits: torch.Tensor | None = None) -> DepthOutput:
    return DepthOutput(depth=depth, confidence=None, bin_logits=logits)


def test_terms_use_only_valid_pixels():
    gt = torch.tensor([[[[1.0, 2.0], [0.0, 20.0]]]])  # 0 and 20 m are invalid (max 10)
    pred = torch.tensor([[[[1.5, 2.0], [5.0, 5.0]]]])
    loss = DepthLoss(None, w_ce=0.0, min_depth=1e-3, max_depth=10.0)
    terms = loss(_output(pred), gt)
    assert terms["l1"].item() == pytest.approx(0.25)
    expected_silog = silog_loss(torch.tensor([1.5, 2.0]), torch.tensor([1.0, 2.0]))
    assert terms["silog"].item() == pytest.approx(expected_silog.item())
    pred_changed_at_invalid = pred.clone()
    pred_changed_at_invalid[..., 1, :] = 9.0
    assert loss(_output(pred_changed_at_invalid), gt)["total"].item() == pytest.approx(
        terms["total"].item()
    )


def test_ce_targets_the_ground_truth_bin():
    centers = torch.tensor([1.0, 2.0, 4.0])
    gt = torch.full((1, 1, 4, 4), 2.0)
    right = torch.tensor([-5.0, 5.0, -5.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    wrong = torch.tensor([5.0, -5.0, -5.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    loss = DepthLoss(centers, w_ce=1.0, w_l1=0.0, w_silog=0.0)
    depth = torch.full((1, 1, 4, 4), 2.0)
    assert loss(_output(depth, right), gt)["ce"] < 0.01
    assert loss(_output(depth, wrong), gt)["ce"] > 5.0


def test_no_valid_pixels_gives_zero_loss_with_graph():
    pred = torch.ones(1, 1, 2, 2, requires_grad=True)
    terms = DepthLoss(None)(_output(pred), torch.zeros(1, 1, 2, 2))
    assert terms["total"].item() == 0.0
    terms["total"].backward()


def test_loss_goes_down_when_training_tiny_model(tiny_moa_config):
    model = build_model(tiny_moa_config)
    loss_fn = DepthLoss(model.bin_centers)
    images = torch.randn(2, 3, 224, 224)
    gt = torch.linspace(1.0, 4.0, 224).view(1, 1, 1, 224).expand(2, 1, 224, 224).contiguous()
    params = [p for group in model.trainable_parameter_groups().values() for p in group]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    losses = []
    for _ in range(15):
        terms = loss_fn(model(images), gt)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        losses.append(terms["total"].item())
    assert losses[-1] < 0.5 * losses[0]
