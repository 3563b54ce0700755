"""What a probe run trains from: the joined stores, the device, the validation hold-out, the target
statistics of the training rows, and the batches (one read shared by every member of a sweep)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from maxa.core.device import resolve_device
from maxa.core.errors import MaxaError
from maxa.probe.config import ProbeConfig
from maxa.probe.data import StorePair, open_pair
from maxa.probe.loader import Loader, blocks_of_rows, holdout_rows, make_loader
from maxa.probe.tasks import Stats, Task, fit_stats


@dataclass
class RunSetup:
    """What a run (or every member of a sweep) trains from."""

    pair: StorePair
    device: torch.device
    holdout: np.ndarray | None
    stats: Stats


def setup_run(
    config: ProbeConfig, features_url: str, targets_url: str, task: Task, layers: str | list[str]
) -> RunSetup:
    """Join the stores (refusing empty ones, or ones whose provenance lacks what checkpoints record),
    resolve the device, hold out the validation rows and fit the target statistics on the others."""
    pair = open_pair(features_url, targets_url, layers, task.target)
    if len(pair) == 0:
        raise MaxaError(f"feature store {features_url} holds no samples")
    for name in ("model", "backbone_params"):  # what every checkpoint records of the backbone
        pair.fprov.need(name, f"feature store {features_url}")
    holdout = holdout_of(config, pair, task)
    return RunSetup(pair, resolve_device(config.device), holdout, training_stats(task, pair, holdout))


def loader_for(
    config: ProbeConfig,
    pair: StorePair,
    task: Task,
    device: torch.device,
    holdout: np.ndarray | None,
    *,
    progress: bool = True,
) -> Loader:
    """The batches a run (or a whole sweep: one read for every member) trains on, held-out rows excluded."""
    return make_loader(
        pair,
        task,
        batch_size=config.batch_size,
        seed=config.batch_seed(),
        exclude=holdout,
        device=device,
        mode=config.loader,
        memory_budget_gb=config.memory_budget_gb,
        shuffle_shards=config.shuffle_shards,
        prefetch=config.prefetch,
        threads=config.read_threads,
        progress=progress,
    )


def training_stats(task: Task, pair: StorePair, holdout: np.ndarray | None) -> Stats:
    """Target statistics (output bias, constant baseline) of the training rows only."""
    blocks = blocks_of_rows(pair, holdout, keep=False, features=False)
    return fit_stats(task, (raw for _, raw in blocks), pair.num_classes)


def holdout_of(config: ProbeConfig, pair: StorePair, task: Task) -> np.ndarray | None:
    """The training rows held out for model selection (none without --val-fraction)."""
    if config.val_fraction <= 0:
        return None
    if not task.validates:
        raise MaxaError(
            f"--val-fraction: the {task.name} task has no loss on held-out images ({task.validates_why}); "
            "set val_fraction 0 for it (a seeds-only sweep needs none)"
        )
    return holdout_rows(len(pair), config.val_fraction, config.val_seed)
