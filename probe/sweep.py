"""`maxa probe` with a grid: K adapters (layers x learning rates x seeds) trained in one pass over the store.

Every batch read from the store (and its encoded targets) feeds all K members; each member steps on it
with its own model, optimiser and random stream (probe/train.py `Member`), so a member ends bit-for-bit
where training it alone with the same seed, data seed and hold-out ends. The batch order is seeded by
the grid's shared `data_seed` (default: `--seed`), recorded in every member's config.

How members share a step (`--sweep-mode`): `loop` steps them one after another; `parallel` steps them
on separate CPU cores, one intra-op thread each (members record `threads: 1`, which reproduces them
alone); `vmap` stacks them into one batched computation (probe/stacked.py; equal to rounding); `auto`
picks vmap on a GPU, parallel on a CPU with 2 to K cores (threads), else loop. On CPU a member's own
forward, backward and update are nearly all of a step (benchmarks/sweep.py measures the shared part),
so sharing the read saves little there; a GPU is where batching members pays.

Model selection is honest: a fraction of the *training* split (`--val-fraction`, `--val-seed`) is held
out of every batch; each member's mean task loss on it picks the (layer, lr) with the lowest mean over
seeds. The evaluated split is never looked at here.

On disk: every member is a normal checkpoint `<out>.sweep/<member>.pth` with its own run id and config;
`out` is a copy of the chosen member with the first seed, whose `meta["sweep"]` records the grid, every
member's validation loss and checkpoint, the choice, and the chosen member's checkpoints over all seeds
(which `maxa evaluate` scores to give mean, std and interval over seeds).
"""

from __future__ import annotations

import copy
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from maxa.core.checkpoint_meta import CheckpointMeta
from maxa.core.errors import MaxaError
from maxa.probe.adapters import is_trainable
from maxa.probe.config import ProbeConfig
from maxa.probe.constant import constant_val_loss
from maxa.probe.data import StorePair, resolve_layers
from maxa.probe.stacked import StackedMembers
from maxa.probe.tasks import Stats, Task, get_task
from maxa.probe.train import (
    Member,
    checkpoint_meta,
    cpu_threads,
    loader_for,
    loss_size,
    new_member,
    run_info,
    save_model,
    setup_run,
    train_step,
    validation_losses,
)

CRITERION = (
    "mean task loss on the validation hold-out of the training split (lower is better), mean over seeds"
)


MEMBER_SUFFIX = ".pth"
"""Member checkpoints are `.pth`, so tools collecting a folder's `*.pt` runs (`maxa plots --checkpoints
models`) see the chosen runs, not every member."""


def sweep_dir(out: str | Path) -> Path:
    """The folder holding every member checkpoint of the sweep writing `out`."""
    return Path(f"{Path(out).with_suffix('')}.sweep")


def member_name(config: ProbeConfig) -> str:
    layer = re.sub(r"[^A-Za-z0-9.-]+", "+", config.layer)
    return f"layer{layer}_lr{config.lr:g}_seed{config.seed}"


def _channels(pair: StorePair, names: list[str]) -> torch.Tensor | None:
    """Indices of `names`' channels in the pair's concatenated features (None: all, in order)."""
    if names == pair.layers:
        return None
    offsets, at = {}, 0
    for name in pair.layers:
        width = int(pair.features.array(name).shape[-1])
        offsets[name] = (at, at + width)
        at += width
    return torch.cat([torch.arange(*offsets[name]) for name in names])


@dataclass
class SweepRun:
    """The trained grid and what its members share."""

    members: list[Member]
    task: Task
    pair: StorePair  # opened with the union of the members' layers
    stats: Stats
    holdout: np.ndarray | None
    val_losses: list[float]
    info: dict[str, Any]


def train_members(
    config: ProbeConfig, features_url: str, targets_url: str, *, progress: bool = True
) -> SweepRun:
    """Train the whole grid on shared batches (one store read, one target encoding per batch)."""
    if config.resume:
        raise MaxaError("--resume is not supported with --sweep-*; rerun the sweep without --resume")
    if not is_trainable(config.adapter):
        raise MaxaError(f"--adapter {config.adapter} is not trained: there is nothing to sweep")
    task = get_task(config.task, **config.task_options())
    configs = config.members()
    setup = setup_run(config, features_url, targets_url, task, configs[0].layers())
    device, holdout, stats = setup.device, setup.holdout, setup.stats
    names = [resolve_layers(setup.pair.features, c.layers()) for c in configs]
    pair = setup.pair.with_layers(list(dict.fromkeys(n for group in names for n in group)))
    with cpu_threads(config.threads):
        members = []
        for member_config, group in zip(configs, names, strict=True):
            channels = _channels(pair, group)
            width = pair.feature_shape[2] if channels is None else len(channels)
            members.append(new_member(member_config, width, task, stats, pair.num_classes, device, channels))
        loaded = time.perf_counter()
        loader = loader_for(config, pair, task, device, holdout, progress=progress)
        load_seconds = time.perf_counter() - loaded
        heads = any(member.head is not None for member in members)
        mode = resolve_mode(config.sweep_mode, device, len(members), torch.get_num_threads(), heads=heads)
        batches = loader.batches(0)
        started = time.perf_counter()
        bar = tqdm(
            range(config.iterations),
            desc=f"sweep {len(members)} x {config.adapter}/{config.task} ({loader.kind}, {mode})",
            disable=not progress,
        )
        size = loss_size(task, members[0].model, pair.label_size)  # members differ in lr, seed, layer only
        stacks = _stacks(members) if mode == "vmap" else []
        parallel = ParallelMembers(members, task, torch.get_num_threads()) if mode == "parallel" else None
        try:
            for step in bar:
                x, y = next(batches)
                if stacks:
                    for stack in stacks:
                        stack.step(x, y, task, size, step)
                elif parallel is not None:
                    parallel.step(x, y, size, step)
                else:
                    for member in members:
                        train_step(member, x, y, task, size, step)
                if (step + 1) % 10 == 0:
                    bar.set_postfix(best_loss=f"{min(m.losses[-1] for m in members):.3f}")
        finally:
            batches.close()
            bar.close()
            if parallel is not None:
                parallel.close()
        for stack in stacks:
            stack.write_back()
        elapsed = time.perf_counter() - started
        val = (
            validation_losses(members, pair, task, holdout, config.batch_size, device)
            if holdout is not None
            else [float("nan")] * len(members)
        )
    info = run_info(loader, load_seconds, elapsed, config.iterations, config)
    info |= {"sweep_members": len(members), "sweep_mode": mode}
    return SweepRun(members, task, pair, stats, holdout, val, info)


def resolve_mode(
    requested: str, device: torch.device, members: int, cores: int, *, heads: bool = False
) -> str:
    """The sweep mode to run (what `auto` means here); refuses one the device or task cannot run.

    `heads`: the members train task-side parameters too (the instance task's per-instance head), which
    the stacked computation does not carry, so vmap is refused for them.
    """
    if requested == "parallel" and device.type != "cpu":
        raise MaxaError(f"--sweep-mode parallel runs members on CPU cores, not on {device}; use vmap or loop")
    if requested == "vmap" and heads:
        raise MaxaError("--sweep-mode vmap cannot train this task's training head per member; use loop")
    if requested != "auto":
        return requested
    if members < 2:
        return "loop"
    if device.type == "cuda":
        return "loop" if heads else "vmap"
    # One member per core only when that keeps every core busy: with more cores than members, one
    # member's intra-op threads may use the machine better (big grids), so the loop keeps them.
    return "parallel" if device.type == "cpu" and 1 < cores <= members else "loop"


class ParallelMembers:
    """Members stepped concurrently on the CPU's cores, each in one thread with one intra-op thread.

    A tiny adapter's kernels spread over several cores less well than one member per core (2 cores:
    intra-op threads 1.75x the one-thread rate, one member per core 1.9x; benchmarks/sweep.py). Each
    member's arithmetic is then that of a solo run with `--threads 1` (its recorded config says so), so it
    stays bit-for-bit reproducible. Members never share a mutable task: each gets its own copy (the
    instance task points at the member's head). No step may draw from the global random stream (the
    threads would interleave it); `step` checks that and refuses.
    """

    def __init__(self, members: list[Member], task: Task, cores: int) -> None:
        workers = max(1, min(cores, len(members)))
        own = [(member, copy.copy(task)) for member in members]
        self.groups = [own[i::workers] for i in range(workers)]
        for member in members:
            member.config = replace(member.config, threads=1)
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)
        self.pool = ThreadPoolExecutor(
            workers, thread_name_prefix="maxa-member", initializer=torch.set_num_threads, initargs=(1,)
        )

    @staticmethod
    def _run(
        group: list[tuple[Member, Task]], x: Tensor, y: Tensor, size: tuple[int, int], step: int
    ) -> None:
        for member, task in group:
            train_step(member, x, y, task, size, step, swap_rng=False)

    def step(self, x: Tensor, y: Tensor, output_size: tuple[int, int], step: int) -> None:
        """One optimisation step of every member on the shared batch."""
        before = torch.get_rng_state()
        futures = [self.pool.submit(self._run, group, x, y, output_size, step) for group in self.groups]
        for future in futures:
            future.result()
        if not torch.equal(before, torch.get_rng_state()):
            raise MaxaError(
                "a training step drew from the global random stream, which --sweep-mode parallel cannot "
                "keep per member; use --sweep-mode loop"
            )

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        torch.set_num_threads(self.threads)


def _stacks(members: list[Member]) -> list[StackedMembers]:
    """Members grouped by input channels (layer choice), one batched computation per group."""
    groups: dict[tuple[int, ...] | None, list[Member]] = {}
    for member in members:
        key = None if member.channels is None else tuple(member.channels.tolist())
        groups.setdefault(key, []).append(member)
    return [StackedMembers(group) for group in groups.values()]


def choose(configs: list[ProbeConfig], val_losses: list[float]) -> tuple[str, float]:
    """The (layer, lr) with the lowest mean validation loss over seeds (first in grid order on ties)."""
    groups: dict[tuple[str, float], list[float]] = {}
    for config, loss in zip(configs, val_losses, strict=True):
        groups.setdefault((config.layer, config.lr), []).append(loss)
    if len(groups) == 1:
        return next(iter(groups))
    means = {key: float(np.mean(v)) for key, v in groups.items()}
    if not all(np.isfinite(list(means.values()))):
        raise MaxaError("a sweep member's validation loss is not finite; lower --sweep-lrs")
    return min(means, key=lambda key: means[key])


def train_sweep(
    config: ProbeConfig, features_url: str, targets_url: str, out: str, *, progress: bool = True
) -> CheckpointMeta:
    """Train the grid, save every member, copy the chosen one to `out`; return its metadata."""
    run = train_members(config, features_url, targets_url, progress=progress)
    members, info, holdout, val, task = run.members, run.info, run.holdout, run.val_losses, run.task
    configs = [m.config for m in members]
    layer, lr = choose(configs, val)
    folder = sweep_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    records, metas = [], []
    for member, loss in zip(members, val, strict=True):
        mc = member.config
        meta = checkpoint_meta(
            mc,
            run.pair.with_layers(mc.layers()),
            task,
            run.stats,
            member.model,
            member.losses,
            dict(info),
            mc.adapter_options(),
            (features_url, targets_url),
            holdout,
            loss,
        )
        path = folder / f"{member_name(mc)}{MEMBER_SUFFIX}"
        save_model(member.model, meta, path)
        metas.append(meta)
        records.append(
            {
                "run_id": meta.run_id,
                "layer": mc.layer,
                "lr": mc.lr,
                "seed": mc.seed,
                "val_loss": loss,
                "checkpoint": str(path),
            }
        )
    chosen = [i for i, c in enumerate(configs) if (c.layer, c.lr) == (layer, lr)]
    mean_val = float(np.mean([val[i] for i in chosen]))
    constant = (
        None if holdout is None else constant_val_loss(run.pair, task, run.stats, holdout, config.batch_size)
    )
    sweep = {
        "grid": {"layers": config.grid_layers(), "lrs": config.grid_lrs(), "seeds": config.grid_seeds()},
        "data_seed": config.batch_seed(),
        "val_fraction": config.val_fraction,
        "val_seed": config.val_seed,
        "val_samples": 0 if holdout is None else len(holdout),
        "criterion": CRITERION,
        "members": records,
        "chosen": {
            "layer": layer,
            "lr": lr,
            "mean_val_loss": mean_val,
            "run_ids": [records[i]["run_id"] for i in chosen],
            # Selection never hides a probe that lost to the constant it started from.
            "worse_than_constant": None if constant is None else mean_val > constant,
        },
        "constant_val_loss": constant,
        "seed_checkpoints": [records[i]["checkpoint"] for i in chosen],
    }
    meta = replace(metas[chosen[0]], sweep=sweep)
    save_model(members[chosen[0]].model, meta, out)
    return meta
