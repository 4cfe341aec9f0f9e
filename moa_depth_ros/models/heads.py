"""Depth heads: bins + regression residual, FiLM context fusion, and upsampling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def make_bin_centers(
    num_bins: int, bin_min_depth: float, bin_max_depth: float, spacing: str
) -> torch.Tensor:
    """Fixed bin centres in metres, log- or linearly spaced over the bins' range (a model
    config's ``min_depth`` / ``max_depth``; not the output clamp, not a protocol's range)."""
    if spacing == "log":
        return torch.logspace(math.log10(bin_min_depth), math.log10(bin_max_depth), num_bins)
    return torch.linspace(bin_min_depth, bin_max_depth, num_bins)


def bin_confidence(probs: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """1 − normalized entropy of the bin distribution: 1 = one-hot, 0 = uniform."""
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=dim, keepdim=True)
    return (1.0 - entropy / math.log(probs.shape[dim])).clamp(0.0, 1.0)


class FiLM(nn.Module):
    """Feature-wise modulation by a context vector: x·(1+γ) + β, zero-initialized (identity)."""

    def __init__(self, context_dim: int, feature_dim: int):
        super().__init__()
        self.to_gamma_beta = nn.Linear(context_dim, 2 * feature_dim)
        nn.init.zeros_(self.to_gamma_beta.weight)
        nn.init.zeros_(self.to_gamma_beta.bias)

    def forward(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.to_gamma_beta(context).chunk(2, dim=-1)
        return tokens * (1.0 + gamma.unsqueeze(-2)) + beta.unsqueeze(-2)


class HybridBinHead(nn.Module):
    """Per token: K bin logits + 1 regression residual; depth = E_p[bins] · exp(residual)."""

    def __init__(
        self,
        dim: int,
        bin_centers: torch.Tensor,
        max_log_residual: float,
    ):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, bin_centers.numel() + 1)
        self.register_buffer("bin_centers", bin_centers.float(), persistent=True)
        self.max_log_residual = max_log_residual

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B×N×D → (bin logits B×N×K, depth B×N) with depth inside the bin range."""
        out = self.proj(self.norm(tokens))
        logits, raw_residual = out[..., :-1], out[..., -1]
        expected = (logits.softmax(dim=-1) * self.bin_centers).sum(dim=-1)
        # tanh bounds the residual so regression refines the bins instead of replacing them.
        log_depth = expected.log() + self.max_log_residual * torch.tanh(raw_residual)
        lo, hi = self.bin_centers[0], self.bin_centers[-1]
        return logits, log_depth.exp().clamp(lo, hi)


class ConvexUpsampler(nn.Module):
    """RAFT-style learned convex upsampling by `factor`: each fine pixel is a convex combination
    of its 3×3 coarse neighbours, with weights predicted from the token features."""

    def __init__(self, dim: int, factor: int):
        super().__init__()
        self.factor = factor
        self.mask = nn.Linear(dim, 9 * factor * factor)

    def forward(self, values: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """values B×C×h×w, tokens B×(h·w)×D → B×C×(h·f)×(w·f)."""
        B, C, h, w = values.shape
        f = self.factor
        mask = self.mask(tokens).transpose(1, 2).reshape(B, 1, 9, f, f, h, w).softmax(dim=2)
        # Replicate padding: zero padding would pull border depths towards 0.
        padded = F.pad(values, (1, 1, 1, 1), mode="replicate")
        neighbours = F.unfold(padded, kernel_size=3).reshape(B, C, 9, 1, 1, h, w)
        up = (mask * neighbours).sum(dim=2)  # B×C×f×f×h×w
        return up.permute(0, 1, 4, 2, 5, 3).reshape(B, C, h * f, w * f)
