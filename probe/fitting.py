"""How an adapter gets its weights: the one interface `maxa probe` calls, whatever the adapter.

Each adapter's strategy checks a config before any store is read and then fits from the joined stores:
every trained adapter goes through the training engine (probe/engine.py `GradientFit`, K members on
shared batches, a single run being K = 1); the k-NN baseline fills a memory bank (probe/bank_fit.py
`BankFit`). The trainer (probe/train.py) writes what a strategy returns without knowing which it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

from maxa.probe.config import ProbeConfig
from maxa.probe.inputs import RunSetup
from maxa.probe.tasks import Task

StepCallback = Callable[[int, float], None]
"""`callback(step, loss)` after every optimisation step of a single run."""


@dataclass
class Job:
    """What a strategy fits: the run's config, one config per member (`config.members()`, or `[config]`
    for a single run), the joined stores and the task; `out` names the resumable state beside it."""

    config: ProbeConfig
    members: list[ProbeConfig]
    setup: RunSetup
    task: Task
    out: str
    progress: bool = True
    callback: StepCallback | None = None


@dataclass
class Fitted:
    """One adapter with its weights: what its checkpoint records."""

    config: ProbeConfig
    model: nn.Module
    losses: list[float]
    val_loss: float | None  # mean loss on the validation hold-out (None: nothing held out)
    adapter_options: dict[str, Any]


@dataclass
class Fit:
    """Every adapter a run fitted (one, or a sweep's members in grid order) and how the run went."""

    fitted: list[Fitted]
    info: dict[str, Any]


class Strategy(Protocol):
    def check(self, config: ProbeConfig, task: Task) -> None:
        """Refuse what this adapter cannot do with `config`, before any store is read."""

    def fit(self, job: Job) -> Fit:
        """Fit one adapter per member config of `job`."""


def run_info(
    loader: str, load_seconds: float, elapsed: float, steps: int, config: ProbeConfig
) -> dict[str, Any]:
    """How a run (or a sweep) read and trained: the loader, its load time, training time and rate."""
    return {
        "loader": loader,
        "load_seconds": load_seconds,
        "train_seconds": elapsed,
        "samples_per_second": steps * config.batch_size / elapsed if elapsed > 0 else math.nan,
        "resumed_from_step": 0,
    }
