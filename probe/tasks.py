"""Dense tasks: which target a task reads, how many output channels it needs, its loss and decoding.

Adding a task means one new `Task` subclass registered with `@register_task`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from maxa.extract.errors import MaxaError
from maxa.extract.sample import IGNORE_INDEX


class Task:
    """Base class; subclasses set `name` and `target` and implement the three methods."""

    name: str = ""
    target: str = ""

    def out_channels(self, num_classes: int) -> int:
        raise NotImplementedError

    def prepare_target(self, target: torch.Tensor) -> torch.Tensor:
        """Stored target block -> the tensor the loss compares against."""
        return target

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


_TASKS: dict[str, Callable[[], Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    _TASKS[cls.name] = cls
    return cls


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    if name not in _TASKS:
        close = difflib.get_close_matches(name, task_names(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise MaxaError(f"unknown task {name!r}{hint} (known: {', '.join(task_names())})")
    return _TASKS[name]()


@register_task
class SemanticSegmentation(Task):
    """Per-pixel class logits; cross-entropy that skips ignore-labelled pixels."""

    name = "semantic"
    target = "semantic"

    def out_channels(self, num_classes: int) -> int:
        return num_classes

    def prepare_target(self, target: torch.Tensor) -> torch.Tensor:
        return target.long()

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.float(), target, ignore_index=IGNORE_INDEX)

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return output.argmax(dim=1)
