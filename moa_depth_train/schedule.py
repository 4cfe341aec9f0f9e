"""Learning-rate schedules: multipliers of the base rate per optimizer step, and the one object
that sets them on the optimizer."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from moa_depth_train.config import SCHEDULES, OptimConfig

__all__ = ["SCHEDULES", "LrSchedule", "lr_schedule", "step_decay", "warmup_cosine", "warmup_steps"]


def warmup_cosine(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up to 1, then cosine down to `min_ratio` at `total` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def step_decay(every: int, gamma: float) -> Callable[[int], float]:
    """LR multiplier: ×gamma every ``every`` steps (StepLR, stepped per iteration)."""
    return lambda step: gamma ** (step // max(1, every))


def warmup_steps(optim: OptimConfig, total: int) -> int:
    """``optim.warmup_steps``, or ``optim.warmup_ratio`` of ``total`` (at least 1, and short of
    the end) when that is set."""
    if optim.warmup_ratio is None:
        return optim.warmup_steps
    return max(1, min(int(total * optim.warmup_ratio), total - 1))


def lr_schedule(optim: OptimConfig, total: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier ``optim.schedule`` names, for a run of ``total`` steps."""
    if optim.schedule == "step":
        return step_decay(optim.step_epochs * steps_per_epoch, optim.step_gamma)
    if optim.schedule == "warmup_cosine":
        return warmup_cosine(warmup_steps(optim, total), total, optim.min_lr_ratio)
    raise ValueError(
        f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {optim.schedule!r}"
    )


class LrSchedule:
    """Sets every parameter group's learning rate to its base rate × ``factor(step)``.

    The rate is a function of the step count alone, so a skipped step (a non-finite loss)
    moves the schedule on without stepping a torch scheduler before its optimizer, and a
    resumed run needs no scheduler state: ``apply(step)`` gives the rate of that step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, factor: Callable[[int], float]) -> None:
        self.optimizer, self.factor = optimizer, factor
        self.base = [group["lr"] for group in optimizer.param_groups]
        self.apply(0)

    def apply(self, step: int) -> None:
        """The learning rates of step ``step`` (0-based: the next optimizer step's)."""
        scale = self.factor(step)
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * scale
