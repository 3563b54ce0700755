"""Extraction decodes only images: `read_image(ds, i)` equals `ds[i].image` without touching annotations."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from maxa.core.errors import MaxaError
from maxa.core.sample import Sample
from maxa.extract.datasets import build_dataset
from maxa.extract.datasets.base import read_image

READERS = [  # reader, its fixture, options, annotation folders to delete (relative to the root)
    ("voc", "voc_root", {"split": "train"}, ["VOCdevkit/VOC2012/SegmentationClass"]),
    ("ade20k", "ade_root", {"split": "val"}, ["annotations"]),
    ("coco", "coco_root", {"split": "val"}, []),
    ("coco_stuff", "stuff_root", {"split": "val"}, []),
    ("davis", "davis_root", {"split": "train"}, ["DAVIS/Annotations"]),
    ("nyu", "nyu_root", {"split": "train"}, []),
]


@pytest.mark.parametrize(("name", "fixture", "options", "annotations"), READERS)
def test_image_only_equals_the_sample_image(
    name: str, fixture: str, options: dict, annotations: list[str], request: pytest.FixtureRequest
) -> None:
    root: Path = request.getfixturevalue(fixture)
    ds = build_dataset(name, root=str(root), **options)
    full = [ds[i].image for i in range(len(ds))]
    assert len(full) >= 1
    for i, image in enumerate(full):
        only = read_image(ds, i)
        assert only.dtype == np.uint8 and only.shape == image.shape
        np.testing.assert_array_equal(only, image)
    for folder in annotations:  # the image-only path never opens an annotation
        shutil.rmtree(root / folder)
    if annotations:
        with pytest.raises(MaxaError):
            ds[0]  # the full sample needs the deleted annotations
        np.testing.assert_array_equal(read_image(ds, 0), full[0])
    with pytest.raises(IndexError):
        read_image(ds, len(ds))


def test_synthetic_image_only_is_the_same_image_without_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    from maxa.extract.datasets import synthetic

    ds = build_dataset("synthetic", split="val", num_images=6, image_size=40)
    full = [ds[i].image for i in range(6)]

    def no_targets(*args: object) -> None:
        raise AssertionError("targets rendered on the image-only path")

    monkeypatch.setattr(synthetic, "_targets", no_targets)
    for i in (5, 0, 3):  # any order: each image has its own generator
        np.testing.assert_array_equal(read_image(ds, i), full[i])
    with pytest.raises(IndexError):
        read_image(ds, 6)


def test_readers_without_an_image_method_fall_back_to_the_sample() -> None:
    class Plain:
        def __getitem__(self, index: int) -> Sample:
            return Sample(id=str(index), image=np.full((2, 2, 3), index, np.uint8), targets={})

    assert read_image(Plain(), 7)[0, 0, 0] == 7  # type: ignore[arg-type]
