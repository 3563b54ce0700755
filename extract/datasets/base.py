"""What a dataset reader is, and the registry that maps names to readers (like timm's models)."""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from maxa.core.errors import MaxaError
from maxa.core.sample import Sample


@runtime_checkable
class Dataset(Protocol):
    """Random-access reader of one split; index i always yields the same Sample."""

    name: str
    split: str
    num_classes: int
    class_names: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...

    def config(self) -> dict[str, Any]:
        """JSON-able settings that, with the files on disk, determine every sample."""
        ...


DatasetFactory = Callable[..., Dataset]
_REGISTRY: dict[str, DatasetFactory] = {}


def register_dataset(name: str) -> Callable[[DatasetFactory], DatasetFactory]:
    """Class decorator: make a reader available to `build_dataset` and the CLI under `name`."""

    def wrap(factory: DatasetFactory) -> DatasetFactory:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def dataset_names() -> list[str]:
    return sorted(_REGISTRY)


def build_dataset(name: str, **options: Any) -> Dataset:
    """Instantiate a registered reader; unknown names get a one-line error with close matches."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, dataset_names(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(dataset_names())}"
        raise MaxaError(f"unknown dataset {name!r}{hint}")
    return _REGISTRY[name](**options)


def dataset_fingerprint(dataset: Dataset) -> str:
    """A short hash of the reader's name, split, config and length: equal means same samples."""
    blob = json.dumps(
        {"name": dataset.name, "split": dataset.split, "len": len(dataset), "config": dataset.config()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_image(dataset: Dataset, index: int) -> np.ndarray:
    """Only the image of sample `index`: what extraction needs. Readers with an `image(index)` method
    decode no annotation; any other reader returns its whole sample and the targets are dropped."""
    image = getattr(dataset, "image", None)
    return image(index) if callable(image) else dataset[index].image
