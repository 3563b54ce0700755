"""Bookkeeping shared by the readers of datasets on disk: the id list, skipped ids, the cap, indexing."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from maxa.core.errors import MaxaError
from maxa.core.sample import Sample


def check_num_images(value: Any, reader: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise MaxaError(
            f"{reader} dataset: option num_images must be a positive integer or null, got {value!r}"
        )
    return int(value)


def check_start(value: Any, reader: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise MaxaError(f"{reader} dataset: option start must be a non-negative integer, got {value!r}")
    return int(value)


def check_skip_ids(value: Any, reader: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise MaxaError(f"{reader} dataset: option skip_ids must be a list of sample ids, got {value!r}")
    return sorted({str(v) for v in value})


class IndexedDataset(ABC):
    """A reader that lists its samples at construction (names and annotation indices: cheap) and
    decodes one only when it is indexed.

    Every such reader takes `num_images` (keep the first N samples of its fixed order), `skip_ids`
    (samples to leave out, e.g. those `maxa prepare --skip-bad` found unreadable) and, where the reader
    passes it on, `start` (drop the first K samples of the fixed order first: the paper's hold-outs
    such as COCO train2017[100000:100500]). All are applied here and returned by `config()`, so a
    reader rebuilt from a target store's provenance yields exactly the ids it wrote. Skipping comes
    after `start`, so num_images counts samples that are kept.
    """

    name: str
    split: str
    num_classes: int
    class_names: list[str]
    split_names: ClassVar[tuple[str, ...]] = ()
    """The splits the reader knows (checked here); () = any name (a split list on disk decides)."""

    def __init__(
        self,
        *,
        split: str = "train",
        num_images: int | None = None,
        skip_ids: Iterable[str] | None = None,
        start: int = 0,
    ) -> None:
        """The options every on-disk reader takes; a reader's own constructor names its own options and
        passes these on as `**listing` (its options, as `maxa params` checks them, are both)."""
        if self.split_names and split not in self.split_names:
            raise MaxaError(
                f"{self.name} dataset: split must be one of {', '.join(self.split_names)}, got {split!r}"
            )
        self.split = split
        self.start = check_start(start, self.name)
        self.num_images = check_num_images(num_images, self.name)
        self.skip_ids = check_skip_ids(skip_ids, self.name)
        self.ids: list[str] = []
        self._positions: list[int] = []

    def _select(self, all_ids: Sequence[str], where: object) -> None:
        """Keep the listed samples that are not skipped, up to num_images; `where` names the listing."""
        if not all_ids:
            raise MaxaError(f"{self.name} dataset: no samples for split {self.split!r} in {where}")
        if len(set(all_ids)) != len(all_ids):
            duplicate = Counter(all_ids).most_common(1)[0][0]
            raise MaxaError(f"{self.name} dataset: sample {duplicate!r} is listed twice in {where}")
        skip = set(self.skip_ids)
        unknown = sorted(skip - set(all_ids))
        if unknown:
            raise MaxaError(
                f"{self.name} dataset: skip_ids names samples that split {self.split!r} does not have: "
                f"{', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}"
            )
        if self.start >= len(all_ids):
            raise MaxaError(
                f"{self.name} dataset: start {self.start} is past the {len(all_ids)} samples of split "
                f"{self.split!r} in {where}"
            )
        keep = [i for i, sample_id in enumerate(all_ids) if i >= self.start and sample_id not in skip]
        if self.num_images is not None and self.num_images > len(keep) and not skip:
            after = f" after start {self.start}" if self.start else ""
            raise MaxaError(
                f"{self.name} dataset: num_images {self.num_images} (train_images/test_images) but split "
                f"{self.split!r} in {where} has {len(keep)} samples{after}; ask for at most {len(keep)} "
                "(or none: the whole split)"
            )
        if self.num_images is not None:
            keep = keep[: self.num_images]
        self._positions = keep
        self.ids = [all_ids[i] for i in keep]

    def __len__(self) -> int:
        return len(self.ids)

    def _check_index(self, index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"{self.name} dataset indices must be integers, got {type(index).__name__}")
        if not 0 <= index < len(self.ids):
            raise IndexError(f"{self.name} dataset index {index} out of range 0..{len(self.ids) - 1}")

    def __getitem__(self, index: int) -> Sample:
        self._check_index(index)
        return self._load(self._positions[index], self.ids[index])

    def image(self, index: int) -> np.ndarray:
        """Sample `index`'s image alone (extraction): the same pixels as `self[index].image`."""
        self._check_index(index)
        return self._load_image(self._positions[index], self.ids[index])

    @abstractmethod
    def _load(self, position: int, sample_id: str) -> Sample:
        """Decode the sample at `position` of the full listing (before skipping and capping)."""

    def _load_image(self, position: int, sample_id: str) -> np.ndarray:
        """Decode only the image at `position`; readers whose annotations cost decoding override it."""
        return self._load(position, sample_id).image

    def _options(self) -> dict[str, Any]:
        """The reader's own constructor options, for config()."""
        return {}

    def config(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "num_images": self.num_images,
            "skip_ids": list(self.skip_ids),
            **(
                {"start": self.start} if self.start else {}
            ),  # absent at 0: older stores keep their fingerprint
            **self._options(),
        }
