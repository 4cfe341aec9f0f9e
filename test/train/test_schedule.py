"""Learning-rate schedules, by hand."""

from __future__ import annotations

import pytest
import torch

from moa_depth_train.config import ConfigError, TrainingConfig
from moa_depth_train.schedule import LrSchedule, lr_schedule, step_decay, warmup_cosine


def _optim(*overrides: str):
    return TrainingConfig.load("demo_synthetic", [f"optim.{o}" for o in overrides]).optim


def test_warmup_cosine_schedule():
    factor = warmup_cosine(warmup=4, total=14, min_ratio=0.1)
    assert [factor(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factor(9) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert factor(14) == pytest.approx(0.1) and factor(100) == pytest.approx(0.1)


def test_step_decay_multiplies_by_gamma_every_period():
    factor = step_decay(every=3, gamma=0.5)
    assert [factor(s) for s in range(7)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_lr_schedule_reads_the_optim_section_and_names_a_bad_schedule():
    optim = _optim("schedule=step", "step_epochs=2", "step_gamma=0.1")
    factor = lr_schedule(optim, total=100, steps_per_epoch=5)
    assert factor(9) == 1.0 and factor(10) == pytest.approx(0.1)
    # warmup_ratio overrides warmup_steps: 10 % of 50 steps.
    ratio = lr_schedule(_optim("warmup_ratio=0.1", "min_lr_ratio=0"), total=50, steps_per_epoch=5)
    assert [ratio(s) for s in (0, 4)] == pytest.approx([0.2, 1.0])
    with pytest.raises(ConfigError, match="optim.schedule must be one of warmup_cosine, step"):
        _optim("schedule=linear")


def test_the_rate_follows_the_step_count_without_a_torch_scheduler():
    """Setting the rate of step k directly (what the trainer does after every step, skipped or
    not) gives LambdaLR's rates, and emits none of its ordering warnings."""
    factor = warmup_cosine(warmup=2, total=6, min_ratio=0.0)
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [weight], "lr": 0.5}])
    schedule = LrSchedule(optimizer, factor)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * factor(0))
    reference_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    reference = torch.optim.lr_scheduler.LambdaLR(reference_opt, factor)
    for step in range(1, 7):
        reference_opt.step()
        reference.step()
        schedule.apply(step)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(reference_opt.param_groups[0]["lr"])
