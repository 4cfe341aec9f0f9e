"""The composite depth loss: w_ce·CE(bin logits, GT bin) + w_l1·L1 + w_silog·SILog(λ).

All terms use valid pixels only (min_depth < gt < max_depth) at the ground truth's resolution
(the training input resolution); bin logits are bilinearly upsampled to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moa_depth_ros.models import DepthOutput


def depth_to_bin_index(depth: torch.Tensor, bin_centers: torch.Tensor) -> torch.Tensor:
    """Index of the nearest bin centre in log space (bins are log-spaced by default)."""
    log_centers = bin_centers.log()
    boundaries = 0.5 * (log_centers[1:] + log_centers[:-1])
    return torch.bucketize(depth.clamp_min(1e-6).log(), boundaries)


def silog_loss(pred: torch.Tensor, gt: torch.Tensor, lam: float = 0.85) -> torch.Tensor:
    """sqrt(mean(e²) − λ·mean(e)²), e = ln pred − ln gt, over the given (valid) pixels."""
    e = pred.log() - gt.log()
    return (e.pow(2).mean() - lam * e.mean().pow(2)).clamp_min(1e-12).sqrt()


class DepthLoss:
    """Callable returning a dict of named terms and `total` (what backward() is called on)."""

    def __init__(
        self,
        bin_centers: torch.Tensor | None,
        w_ce: float = 0.5,
        w_l1: float = 1.0,
        w_silog: float = 1.0,
        silog_lambda: float = 0.85,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
    ):
        self.bin_centers = bin_centers
        self.w_ce, self.w_l1, self.w_silog = w_ce, w_l1, w_silog
        self.silog_lambda = silog_lambda
        self.min_depth, self.max_depth = min_depth, max_depth

    def __call__(self, output: DepthOutput, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        pred = output.depth.float()
        if pred.shape[-2:] != gt.shape[-2:]:
            pred = F.interpolate(pred, size=gt.shape[-2:], mode="bilinear", align_corners=False)
        valid = (gt > self.min_depth) & (gt < self.max_depth) & torch.isfinite(gt)
        zero = pred.sum() * 0.0  # keeps the graph when a batch has no valid pixel
        if not valid.any():
            return {"total": zero, "ce": zero, "l1": zero, "silog": zero}
        p, g = pred[valid], gt[valid]
        terms = {"l1": (p - g).abs().mean(), "silog": silog_loss(p, g, self.silog_lambda)}
        terms["ce"] = zero
        if self.w_ce > 0 and output.bin_logits is not None and self.bin_centers is not None:
            logits = F.interpolate(
                output.bin_logits.float(), size=gt.shape[-2:], mode="bilinear", align_corners=False
            )
            target = depth_to_bin_index(gt, self.bin_centers.to(gt.device))[:, 0]
            per_pixel = F.cross_entropy(logits, target, reduction="none")
            terms["ce"] = per_pixel[valid[:, 0]].mean()
        total = self.w_ce * terms["ce"] + self.w_l1 * terms["l1"] + self.w_silog * terms["silog"]
        if output.aux_loss is not None:
            terms["aux"] = output.aux_loss
            total = total + output.aux_loss
        terms["total"] = total
        return terms
