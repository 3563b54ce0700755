"""A plain image folder: recursive, sorted, ids = relative paths, no targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_files import noise, truncate, write_jpeg
from PIL import Image

from maxa.core.errors import MaxaError
from maxa.extract.datasets import build_dataset, dataset_fingerprint
from maxa.extract.datasets.folder import FolderDataset


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    write_jpeg(root / "b" / "2.jpg", noise(10, 12, 0))
    write_jpeg(root / "b" / "10.JPEG", noise(10, 12, 1))
    write_jpeg(root / "a.jpeg", noise(8, 8, 2))
    (root / "c" / "d").mkdir(parents=True)
    Image.fromarray(noise(6, 7, 3)).convert("RGBA").save(root / "c" / "d" / "x.png")
    Image.fromarray(noise(5, 5, 4)[:, :, 0], mode="L").save(root / "grey.png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_lists_images_recursively_in_path_order(folder: Path) -> None:
    ds = FolderDataset(split="val", root=str(folder))
    assert ds.ids == ["a.jpeg", "b/10.JPEG", "b/2.jpg", "c/d/x.png", "grey.png"]
    assert ds.num_classes == 0 and ds.class_names == [] and ds.split == "val"
    sample = ds[3]
    assert sample.id == "c/d/x.png" and sample.targets == {}
    np.testing.assert_array_equal(sample.image, noise(6, 7, 3))  # PNG is lossless; alpha dropped
    assert ds[4].image.shape == (5, 5, 3)  # greyscale converted to RGB


def test_split_is_recorded_and_config_rebuilds(folder: Path) -> None:
    train = FolderDataset(split="train", root=str(folder), num_images=2)
    val = FolderDataset(split="val", root=str(folder), num_images=2)
    assert train.ids == val.ids == ["a.jpeg", "b/10.JPEG"]
    assert dataset_fingerprint(train) != dataset_fingerprint(val)
    again = build_dataset("folder", root=str(folder), **train.config())
    assert dataset_fingerprint(again) == dataset_fingerprint(train)


def test_errors(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(MaxaError, match=r"no \.jpg/\.jpeg/\.png images under .*empty"):
        FolderDataset(root=str(tmp_path / "empty"))
    truncate(folder / "b" / "2.jpg")
    with pytest.raises(MaxaError, match=r"b/2\.jpg is corrupt or unreadable"):
        FolderDataset(root=str(folder))[2]
