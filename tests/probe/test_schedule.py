"""LR schedules: the reference's constant rate and the cosine option, against their closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from maxa.core.errors import MaxaError
from maxa.probe.config import ProbeConfig
from maxa.probe.schedule import build_schedule


def _rates(name: str, steps: int, lr: float = 1e-3) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    schedule = build_schedule(name, optimizer, steps)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_constant_is_the_default_and_never_changes_the_rate() -> None:
    assert ProbeConfig().schedule == "constant"  # deap train.py: AdamW stepped with no scheduler
    assert _rates("constant", 50) == [1e-3] * 50


def test_cosine_follows_the_closed_form() -> None:
    steps = 40
    expected = [0.5 * 1e-3 * (1 + math.cos(math.pi * t / steps)) for t in range(steps)]
    assert _rates("cosine", steps) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_unknown_schedule_is_a_one_line_error() -> None:
    with pytest.raises(MaxaError, match=r"--schedule: unknown schedule .linear. \(known: constant, cosine\)"):
        ProbeConfig(schedule="linear")


def test_optimiser_defaults_are_the_papers() -> None:
    """deap experiments.py `default`: lr 0.001, wd 0.01, bs 32 (AdamW in train.py)."""
    config = ProbeConfig()
    assert (config.lr, config.weight_decay, config.batch_size) == (0.001, 0.01, 32)
