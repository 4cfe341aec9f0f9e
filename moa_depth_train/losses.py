"""Training losses, chosen by the config's ``loss.type``:

- ``hybrid`` (MoA-DepthCLIP): w_ce·CE(bin logits, GT bin) + w_l1·L1 + w_silog·SILog(λ), at the
  training input resolution (bin logits bilinearly upsampled to it);
- ``space_clip``: SPACE-CLIP's 0.5·SILog + 0.5·SSIM + auxiliary SILog terms, at the ground
  truth's resolution;
- ``mae_rmse``: DepthBLIP-2's 0.5·MAE + 0.5·RMSE for its learned bins.

All terms use valid pixels only (min_depth < gt < max_depth).
"""

from __future__ import annotations

import inspect

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


def _at_ground_truth(
    output: DepthOutput,
    gt: torch.Tensor,
    min_depth: float,
    max_depth: float,
    align_corners: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prediction resized to the ground truth, min_depth < gt < max_depth mask, a zero that
    keeps the graph when a batch has no valid pixel)."""
    pred = output.depth.float()
    if pred.shape[-2:] != gt.shape[-2:]:
        pred = F.interpolate(pred, size=gt.shape[-2:], mode="bilinear", align_corners=align_corners)
    valid = (gt > min_depth) & (gt < max_depth) & torch.isfinite(gt)
    return pred, valid, pred.sum() * 0.0


class DepthLoss:
    """Callable returning a dict of named terms and `total` (what backward() is called on)."""

    #: Where the loss is computed: the model's input grid (the ground truth is resized to it).
    resolution = "input"

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
        pred, valid, zero = _at_ground_truth(output, gt, self.min_depth, self.max_depth)
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


# ------------------------------------------------------------------ SPACE-CLIP


def space_clip_silog(
    pred: torch.Tensor, gt: torch.Tensor, variance_focus: float = 0.85, eps: float = 1e-7
) -> torch.Tensor:
    """SPACE-CLIP's SILog: 10·√(Var(e) + (1 − λ)·mean(e)²), e = ln pred − ln gt over the given
    pixels of the whole batch, population variance; pred clamped to ≥ eps (ReLU output)."""
    e = pred.float().clamp_min(eps).log() - gt.float().clamp_min(eps).log()
    variance = e.new_zeros(()) if e.numel() < 2 else e.var(unbiased=False)
    d = variance + (1.0 - variance_focus) * e.mean().pow(2)
    return 10.0 * d.clamp_min(eps).sqrt()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalized size×size Gaussian (outer product of the 1-D kernel), 1×1×size×size."""
    coords = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] @ g[None, :])[None, None]


def ssim_map(
    a: torch.Tensor, b: torch.Tensor, window: torch.Tensor, c1: float = 0.01**2, c2: float = 0.03**2
) -> torch.Tensor:
    """Per-pixel SSIM of B×1×H×W images in [0, 1] (zero padding, as the reference)."""
    pad = window.shape[-1] // 2
    mu_a, mu_b = F.conv2d(a, window, padding=pad), F.conv2d(b, window, padding=pad)
    var_a = F.conv2d(a * a, window, padding=pad) - mu_a**2
    var_b = F.conv2d(b * b, window, padding=pad) - mu_b**2
    cov = F.conv2d(a * b, window, padding=pad) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )


def ssim_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Masked mean of 1 − SSIM after per-sample min-max normalization of both maps by the
    ground truth's valid range, clamped to [0, 1] (SPACE-CLIP ``SSIMLoss``)."""
    pred, gt = pred.float(), gt.float()
    pred_n, gt_n = torch.zeros_like(pred), torch.zeros_like(gt)
    for i in range(gt.shape[0]):
        if not valid[i].any():
            continue  # an image without ground truth stays all zero, as in the reference
        values = gt[i][valid[i]]
        low, scale = values.min(), (values.max() - values.min()).clamp_min(1e-6)
        pred_n[i], gt_n[i] = (pred[i] - low) / scale, (gt[i] - low) / scale
    window = gaussian_window().to(pred.device)
    loss = 1.0 - ssim_map(pred_n.clamp(0, 1), gt_n.clamp(0, 1), window)
    return loss[valid].mean() if valid.any() else pred.sum() * 0.0


class SpaceClipLoss:
    """w_silog·SILog + w_ssim·(1 − SSIM) on the main output, plus Σ aux_weights[i]·SILog on the
    auxiliary outputs (0.5, 0.5, [0.10, 0.05, 0.00] in the reference), at the ground truth's
    resolution; valid pixels are min_depth < gt < max_depth."""

    resolution = "ground_truth"  # the prediction is resized to the full ground truth

    def __init__(
        self,
        w_silog: float = 0.5,
        w_ssim: float = 0.5,
        aux_weights: tuple[float, ...] = (0.10, 0.05, 0.0),
        variance_focus: float = 0.85,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
    ):
        self.w_silog, self.w_ssim = w_silog, w_ssim
        self.aux_weights = tuple(aux_weights)
        self.variance_focus = variance_focus
        self.min_depth, self.max_depth = min_depth, max_depth

    def __call__(self, output: DepthOutput, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        pred, valid, zero = _at_ground_truth(output, gt, self.min_depth, self.max_depth)
        if not valid.any():
            return {"total": zero, "silog": zero, "ssim": zero, "aux": zero}
        silog = space_clip_silog(pred[valid], gt[valid], self.variance_focus)
        ssim = ssim_loss(pred, gt, valid)
        aux = zero
        for weight, aux_pred in zip(self.aux_weights, output.aux_depths or (), strict=False):
            if weight > 0:
                aux = aux + weight * space_clip_silog(
                    aux_pred.float()[valid], gt[valid], self.variance_focus
                )
        total = self.w_silog * silog + self.w_ssim * ssim + aux
        return {"total": total, "silog": silog, "ssim": ssim, "aux": aux}


# ------------------------------------------------------------------ DepthBLIP-2


class MaeRmseLoss:
    """DepthBLIP-2's learned-bin loss: alpha·MAE + (1 − alpha)·RMSE over the valid pixels of the
    whole batch (min_depth < gt < max_depth, pred > min_depth, inside ``valid_crop`` =
    (top, bottom, left, right) of the ground truth), both clamped to the depth range."""

    resolution = "ground_truth"

    def __init__(
        self,
        alpha: float = 0.5,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        valid_crop: tuple[int, int, int, int] | None = None,
    ):
        self.alpha, self.min_depth, self.max_depth = alpha, min_depth, max_depth
        self.valid_crop = tuple(valid_crop) if valid_crop is not None else None

    def __call__(self, output: DepthOutput, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        # align_corners=True: DepthBLIP-2's reference upsampling.
        pred, valid, zero = _at_ground_truth(
            output, gt, self.min_depth, self.max_depth, align_corners=True
        )
        valid &= pred > self.min_depth
        if self.valid_crop is not None:
            top, bottom, left, right = self.valid_crop
            crop = torch.zeros_like(valid)
            crop[..., top:bottom, left:right] = True
            valid &= crop
        if not valid.any():
            return {"total": zero, "mae": zero, "rmse": zero}
        p = pred[valid].clamp(self.min_depth, self.max_depth)
        g = gt[valid].clamp(self.min_depth, self.max_depth)
        mae, rmse = (p - g).abs().mean(), (p - g).pow(2).mean().sqrt()
        return {"total": self.alpha * mae + (1 - self.alpha) * rmse, "mae": mae, "rmse": rmse}


LOSS_TYPES = {"hybrid": DepthLoss, "space_clip": SpaceClipLoss, "mae_rmse": MaeRmseLoss}


def build_loss(
    config: dict, bin_centers: torch.Tensor | None
) -> DepthLoss | SpaceClipLoss | MaeRmseLoss:
    """The loss named by ``config["type"]`` with the other keys as its settings; ValueError
    naming an unknown type or setting."""
    settings = dict(config)
    kind = settings.pop("type", "hybrid")
    if kind not in LOSS_TYPES:
        raise ValueError(f"loss.type must be one of {', '.join(LOSS_TYPES)}, got {kind!r}")
    cls = LOSS_TYPES[kind]
    known = set(inspect.signature(cls).parameters) - {"bin_centers"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(
            f"unknown config key 'loss.{unknown[0]}' for loss type '{kind}' "
            f"(known: {', '.join(sorted(known))})"
        )
    if kind == "hybrid":
        return DepthLoss(bin_centers, **settings)
    if "aux_weights" in settings:
        settings["aux_weights"] = tuple(settings["aux_weights"])
    return cls(**settings)
