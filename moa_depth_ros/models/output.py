"""What every depth model returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DepthOutput:
    """Model output.

    depth: B×1×h×w metres (h×w is the requested output size, by default the input size).
    confidence: B×1×h×w in [0, 1], or None where the method has no bins.
    bin_logits: B×K×h'×w' at the model's native (token) grid, or None.
    aux_loss: a scalar regularizer the training loss adds, or None.
    aux_depths: auxiliary depth predictions B×1×h×w (deep supervision), in training mode only.
    """

    depth: torch.Tensor
    confidence: torch.Tensor | None = None
    bin_logits: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None  # optional regularizer (e.g. MoA load balance)
    aux_depths: list[torch.Tensor] | None = None
