"""What a dataset reader is, and how one is built from its name (extract/reader_specs.py declares them)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from maxa.core.registry import resolve
from maxa.core.sample import Sample
from maxa.extract.reader_specs import READERS


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


def dataset_names() -> list[str]:
    return READERS.names()


def reader_class(name: str) -> DatasetFactory:
    """The reader class the spec of `name` names (imported now); unknown names get close matches."""
    return resolve(READERS.get(name).implementation)


READER_ARGUMENTS = ("split", "root")
"""What every reader takes besides its options (a params entry's split and root, not `options:`)."""


def reader_options(name: str) -> list[str]:
    """The options reader `name` takes: the fields of its spec's options dataclass."""
    return [f.name for f in READERS.get(name).option_fields()]


def option_problem(name: str, options: Mapping[str, Any]) -> str | None:
    """Why reader `name` would refuse these options, in the user's words (None: it takes them): an
    unknown option or a value of the wrong type, read off its spec's options dataclass (nothing opened)."""
    if name not in READERS:
        return None  # unknown names are build_dataset's (and check_choice's) to report
    spec = READERS.get(name)
    problem = spec.option_problem(options, f"the {name} reader")
    if problem is not None:
        return problem
    defaults = spec.defaults()
    for f in spec.option_fields():
        reader_field = f.metadata.get("options_of")
        nested = options.get(f.name)
        if reader_field is None or not isinstance(nested, Mapping):
            continue
        inner = options.get(reader_field, defaults[reader_field])
        problem = option_problem(inner, nested)
        if problem is not None:
            return f"the {name} reader's option {f.name}: {problem}"
    return None


def build_dataset(name: str, **options: Any) -> Dataset:
    """Instantiate a registered reader; unknown names get a one-line error with close matches."""
    return reader_class(name)(**options)


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
