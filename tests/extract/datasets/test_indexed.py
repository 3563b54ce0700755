"""The bookkeeping every on-disk reader shares: the cap, skipped ids, duplicate ids, index checks."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest

from maxa.core.errors import MaxaError
from maxa.core.sample import Sample
from maxa.extract.datasets.indexed import IndexedDataset


class Listing(IndexedDataset):
    name = "listing"

    def __init__(self, ids: list[str], num_images: Any, skip_ids: Any) -> None:
        super().__init__(split="train", num_images=num_images, skip_ids=skip_ids)
        self.num_classes, self.class_names = 0, list[str]()
        self.loaded: list[int] = []
        self._select(ids, "the test listing")

    def _load(self, position: int, sample_id: str) -> Sample:
        self.loaded.append(position)
        return Sample(id=sample_id, image=np.zeros((2, 2, 3), np.uint8))


def make(ids: list[str], num_images: object = None, skip_ids: object = None) -> Listing:
    return Listing(ids, num_images=num_images, skip_ids=skip_ids)


def test_skip_then_cap_and_positions_follow() -> None:
    ds = make(["a", "b", "c", "d"], num_images=2, skip_ids=["b"])
    assert ds.ids == ["a", "c"] and len(ds) == 2
    assert ds[1].id == "c" and ds.loaded == [2]  # position in the full listing
    assert ds.config() == {"split": "train", "num_images": 2, "skip_ids": ["b"]}


def test_bad_options_are_named() -> None:
    for value in (0, -1, 1.5, True, "3"):
        with pytest.raises(MaxaError, match="option num_images must be a positive integer"):
            make(["a"], num_images=value)
    with pytest.raises(MaxaError, match="option skip_ids must be a list"):
        make(["a"], skip_ids="a")
    with pytest.raises(MaxaError, match="skip_ids names samples that split 'train' does not have: zz"):
        make(["a"], skip_ids=["zz"])


def test_listing_problems_are_named() -> None:
    with pytest.raises(MaxaError, match="sample 'a' is listed twice in the test listing"):
        make(["a", "b", "a"])
    with pytest.raises(MaxaError, match="no samples for split 'train' in the test listing"):
        make([])


def test_indexing_is_checked() -> None:
    ds = make(["a", "b"])
    with pytest.raises(IndexError, match=r"out of range 0\.\.1"):
        ds[2]
    with pytest.raises(TypeError, match="must be integers"):
        cast(Any, ds)["a"]
