"""Learning-rate schedules of a probe run, by name (`ProbeConfig.schedule`).

The paper's released training loop (constantinpape/deap, train.py `train`) builds AdamW and steps it with
no scheduler: the learning rate stays constant, so "constant" is the reference protocol and the default.
"cosine" decays to 0 over the run, a common alternative recorded in every result that uses it.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LRScheduler

from maxa.probe.config import SCHEDULES

__all__ = ["SCHEDULES", "build_schedule"]


def build_schedule(name: str, optimizer: torch.optim.Optimizer, iterations: int) -> LRScheduler:
    """A scheduler stepped once per optimisation step; its state_dict makes resumed runs exact."""
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=iterations)
    raise ValueError(f"unknown schedule {name!r} (known: {', '.join(SCHEDULES)})")
