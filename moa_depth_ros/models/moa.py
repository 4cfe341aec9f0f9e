"""Mixture-of-Adapters: a per-token soft mixture of bottleneck adapters (dense, no top-k)."""

from __future__ import annotations

import torch
from torch import nn


class Adapter(nn.Module):
    """Linear(dim→bottleneck) → GELU → Linear(bottleneck→dim); no internal residual."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class MixtureOfAdapters(nn.Module):
    """x + Σ_e g_e(x)·E_e(x) with a per-token softmax gate Linear→ReLU→Linear→softmax."""

    def __init__(
        self, dim: int, num_experts: int = 4, bottleneck: int = 64, gate_hidden: int = 128
    ):
        super().__init__()
        self.experts = nn.ModuleList(Adapter(dim, bottleneck) for _ in range(num_experts))
        self.gate = nn.Sequential(
            nn.Linear(dim, gate_hidden), nn.ReLU(), nn.Linear(gate_hidden, num_experts)
        )

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """B×L×D tokens → B×L×E mixture weights (each token's weights sum to one)."""
        return self.gate(x).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the adapted tokens and the gate weights (for the optional balance loss)."""
        gates = self.gate_weights(x)
        expert_out = torch.stack([expert(x) for expert in self.experts], dim=-1)  # B×L×D×E
        mixed = (expert_out * gates.unsqueeze(-2)).sum(dim=-1)
        return x + mixed, gates


def load_balance_loss(gates: torch.Tensor) -> torch.Tensor:
    """E·Σ_e (mean gate_e)² − 1: zero when experts are used equally, E − 1 when one takes all."""
    importance = gates.reshape(-1, gates.shape[-1]).mean(dim=0)
    return gates.shape[-1] * (importance**2).sum() - 1.0
