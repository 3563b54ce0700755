"""One adapter being trained and its one optimisation step: the unit of the training engine.

A run trains K members on shared batches (probe/engine.py); a single run is K = 1. Each member keeps its
own model, optimiser, schedule and CPU random stream, so stepping several on one batch draws exactly what
training each alone would, and its saved state (`state_dict`) is all a resumed run needs to continue it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from maxa.core.errors import MaxaError
from maxa.probe.adapters import build_adapter, set_output_bias
from maxa.probe.config import ProbeConfig
from maxa.probe.schedule import build_schedule
from maxa.probe.tasks import Stats, Task


@functools.lru_cache(maxsize=8)
def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype of a device (None: full precision); asked once per device."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device) -> torch.autocast:
    """The one mixed-precision context of training: bf16 (else fp16) on a GPU, off on a CPU."""
    dtype = autocast_dtype(device)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


@dataclass
class Member:
    """One adapter being trained: its config, model, optimiser state and own random stream."""

    config: ProbeConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    channels: Tensor | None = None  # feature channels of this member's layers (None: all)
    head: nn.Module | None = None  # training-only task parameters (instance: one class per instance)
    losses: list[float] = field(default_factory=list)
    rng: Tensor = field(default_factory=torch.get_rng_state)

    def use(self, task: Task) -> None:
        """Point the task at this member's own head before its loss is computed (members share a task)."""
        if self.head is not None:
            task.head = self.head

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue this member exactly (its losses are kept by step)."""
        return {
            "model": self.model.state_dict(),
            "head": self.head.state_dict() if self.head is not None else {},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": self.rng,
        }

    def load_state_dict(self, state: dict[str, Any], losses: list[float]) -> None:
        self.model.load_state_dict(state["model"])
        if self.head is not None:
            self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.rng = state["rng"]
        self.losses = [float(v) for v in losses]


def new_member(
    config: ProbeConfig,
    in_channels: int,
    task: Task,
    stats: Stats,
    num_classes: int,
    device: torch.device,
    channels: Tensor | None = None,
) -> Member:
    """A freshly initialised adapter (seeded by config.seed) with AdamW and `config.schedule`."""
    torch.manual_seed(config.seed)
    model = build_adapter(
        config.adapter, in_channels, task.out_channels(num_classes), config.adapter_options()
    )
    set_output_bias(model, task.output_bias(stats))
    model.to(device).train()
    head = task.build_head(stats)
    if head is not None:
        head.to(device).train()
    params = [*model.parameters(), *(head.parameters() if head is not None else ())]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = build_schedule(config.schedule, optimizer, config.iterations)
    scaler = torch.amp.GradScaler(enabled=autocast_dtype(device) == torch.float16)
    if channels is not None:
        channels = channels.to(device)  # indexed every step: kept where the batches are
    return Member(config, model, optimizer, schedule, scaler, channels, head, [], torch.get_rng_state())


def loss_size(task: Task, model: nn.Module, label_size: tuple[int, int]) -> tuple[int, int]:
    """The output size the training loss sees: the task picks the label size or the adapter's own."""
    native = getattr(model, "native_size", None)
    return task.loss_size((int(label_size[0]), int(label_size[1])), native)


def select(channels: Tensor | None, x: Tensor) -> Tensor:
    """A member's own feature channels of a shared batch (None: all of them)."""
    return x if channels is None else x.index_select(-1, channels.to(x.device))


def train_step(
    member: Member,
    x: Tensor,
    y: Tensor,
    task: Task,
    output_size: tuple[int, int],
    step: int,
    *,
    swap_rng: bool = True,
) -> float:
    """One optimisation step of one member on a (possibly shared) batch; returns its loss.

    `swap_rng=False` leaves the global CPU random stream alone (members stepping in parallel threads,
    whose caller checks that no step draws from it).
    """
    if swap_rng:
        torch.set_rng_state(member.rng)
    member.use(task)
    with autocast(x.device):
        output = member.model(select(member.channels, x), output_size=output_size)
    loss = task.loss(output.float(), y)
    if not torch.isfinite(loss):
        raise MaxaError(
            f"training diverged at step {step} (loss {loss.item()}) with lr {member.config.lr}; lower --lr"
        )
    member.optimizer.zero_grad(set_to_none=True)
    member.scaler.scale(loss).backward()
    member.scaler.step(member.optimizer)
    member.scaler.update()
    member.schedule.step()
    if swap_rng:
        member.rng = torch.get_rng_state()
    value = float(loss.item())
    member.losses.append(value)
    return value
