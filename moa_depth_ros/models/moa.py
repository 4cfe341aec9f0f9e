"""Mixture-of-Adapters: a per-token soft mixture of bottleneck adapters (dense, no top-k).

Expert e is Linear(dim→bottleneck) → GELU → Linear(bottleneck→dim) with no internal residual.
All experts are stored fused (one down-projection for all, one stacked up-projection), so the
mixture costs two matmuls instead of 2·E small ones; the maths and the parameter count are
exactly those of E separate experts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MixtureOfAdapters(nn.Module):
    """x + Σ_e g_e(x)·E_e(x) with a per-token softmax gate Linear→ReLU→Linear→softmax."""

    def __init__(
        self, dim: int, num_experts: int = 4, bottleneck: int = 64, gate_hidden: int = 128
    ):
        super().__init__()
        self.num_experts, self.bottleneck = num_experts, bottleneck
        self.down = nn.Linear(dim, num_experts * bottleneck)  # experts' down-projections
        self.up_weight = nn.Parameter(torch.empty(num_experts, bottleneck, dim))
        self.up_bias = nn.Parameter(torch.empty(num_experts, dim))
        bound = 1.0 / math.sqrt(bottleneck)  # nn.Linear's default init for fan_in=bottleneck
        nn.init.uniform_(self.up_weight, -bound, bound)
        nn.init.uniform_(self.up_bias, -bound, bound)
        self.gate = nn.Sequential(
            nn.Linear(dim, gate_hidden), nn.ReLU(), nn.Linear(gate_hidden, num_experts)
        )

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """B×L×D tokens → B×L×E mixture weights (each token's weights sum to one)."""
        return self.gate(x).softmax(dim=-1)

    def expert_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """B×L×D → B×L×E×D: every expert's output, unmixed (for tests and analysis)."""
        hidden = F.gelu(self.down(x)).unflatten(-1, (self.num_experts, self.bottleneck))
        return torch.einsum("bleh,ehd->bled", hidden, self.up_weight) + self.up_bias

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the adapted tokens and the gate weights (for the optional balance loss)."""
        gates = self.gate_weights(x)
        hidden = F.gelu(self.down(x)).unflatten(-1, (self.num_experts, self.bottleneck))
        # Σ_e g_e (W_e h_e + b_e) as one matmul over the gate-scaled hidden units.
        weighted = (hidden * gates.unsqueeze(-1)).flatten(-2)
        mixed = weighted @ self.up_weight.flatten(0, 1) + gates @ self.up_bias
        return x + mixed, gates


def load_balance_loss(gates: torch.Tensor) -> torch.Tensor:
    """E·Σ_e (mean gate_e)² − 1: zero when experts are used equally, E − 1 when one takes all."""
    importance = gates.reshape(-1, gates.shape[-1]).mean(dim=0)
    return gates.shape[-1] * (importance**2).sum() - 1.0
