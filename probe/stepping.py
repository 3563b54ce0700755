"""How K members share one step (`--sweep-mode`): one after another, on separate CPU cores, or stacked.

`loop` steps them one after another (bit-for-bit what each trained alone does); `parallel` steps them on
separate CPU cores, one intra-op thread each (members record `threads: 1`, which reproduces them alone);
`vmap` stacks them into one batched computation (probe/stacked.py; equal to rounding); `auto` picks vmap
on a GPU, parallel on a CPU with 2 to K cores (threads), else loop. A single run is a loop of one.

Every stepper has `step(x, y, output_size, step)`, `sync()` (members' own models and optimisers brought
up to date, before a state is saved or the members are read) and `close()`.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Protocol

import torch
from torch import Tensor

from maxa.core.errors import MaxaError
from maxa.probe.member import Member, train_step
from maxa.probe.stacked import StackedMembers
from maxa.probe.tasks import Task


class Stepper(Protocol):
    def step(self, x: Tensor, y: Tensor, output_size: tuple[int, int], step: int) -> None: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


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


def make_stepper(mode: str, members: list[Member], task: Task) -> Stepper:
    """The stepper of a resolved mode (`resolve_mode`)."""
    if mode == "vmap":
        return StackedGroups(members, task)
    if mode == "parallel":
        return ParallelMembers(members, task, torch.get_num_threads())
    return LoopMembers(members, task)


class LoopMembers:
    """Members stepped one after another, each with its own random stream swapped in."""

    def __init__(self, members: list[Member], task: Task) -> None:
        self.members, self.task = members, task

    def step(self, x: Tensor, y: Tensor, output_size: tuple[int, int], step: int) -> None:
        for member in self.members:
            train_step(member, x, y, self.task, output_size, step)

    def sync(self) -> None:
        """Nothing to do: members step in their own models."""

    def close(self) -> None:
        """Nothing to release."""


class StackedGroups:
    """Members grouped by input channels (layer choice), one batched computation per group."""

    def __init__(self, members: list[Member], task: Task) -> None:
        groups: dict[tuple[int, ...] | None, list[Member]] = {}
        for member in members:
            key = None if member.channels is None else tuple(member.channels.tolist())
            groups.setdefault(key, []).append(member)
        self.stacks = [StackedMembers(group) for group in groups.values()]
        self.task = task

    def step(self, x: Tensor, y: Tensor, output_size: tuple[int, int], step: int) -> None:
        for stack in self.stacks:
            stack.step(x, y, self.task, output_size, step)

    def sync(self) -> None:
        for stack in self.stacks:
            stack.sync()

    def close(self) -> None:
        """Nothing to release."""


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

    def sync(self) -> None:
        """Nothing to do: members step in their own models."""

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        torch.set_num_threads(self.threads)
