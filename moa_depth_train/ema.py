"""Exponential moving average of a model's weights (SPACE-CLIP's ``ExponentialMovingAverage``).

The average covers the whole state of the trained part: trainable parameters **and** float
buffers such as BatchNorm running statistics; integer buffers (``num_batches_tracked``) are
copied. Frozen parameters never change, so they are not tracked (no second copy of a frozen
backbone). Updated after every optimizer step: shadow ← decay·shadow + (1 − decay)·current.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"optim.ema_decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        self.shadow = {
            name: tensor.detach().clone()
            for name, tensor in model.state_dict().items()
            if name not in frozen
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        state = model.state_dict()
        for name, average in self.shadow.items():
            current = state[name].detach()
            if average.is_floating_point():
                average.mul_(self.decay).add_(current, alpha=1.0 - self.decay)
            else:
                average.copy_(current)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Run the block with the averaged weights in ``model``, then restore the raw ones."""
        state = model.state_dict()
        backup = {name: state[name].detach().clone() for name in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield
        finally:
            model.load_state_dict(backup, strict=False)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"EMA state lacks '{missing[0]}'")
        for name, average in self.shadow.items():
            average.copy_(state[name])
