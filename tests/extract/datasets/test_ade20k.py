"""ADE20K SceneParse150: split folders, the 1..150 -> 0..149 shift with 0 -> ignore, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_files import write_grey_png

from maxa.core.errors import MaxaError
from maxa.extract.datasets import build_dataset
from maxa.extract.datasets.ade20k import CLASS_NAMES, Ade20kDataset


def test_splits_map_to_the_release_folders(ade_root: Path) -> None:
    train = Ade20kDataset(split="train", root=str(ade_root))
    assert train.ids == ["ade20k-ADE_train_00000001", "ade20k-ADE_train_00000002"]  # sorted by name
    val = Ade20kDataset(split="val", root=str(ade_root.parent))  # root may hold ADEChallengeData2016
    assert val.ids == ["ade20k-ADE_val_00000001", "ade20k-ADE_val_00000002"]
    assert train.num_classes == 150 == len(CLASS_NAMES) == len(set(CLASS_NAMES))
    assert (train.class_names[0], train.class_names[12], train.class_names[149]) == ("wall", "person", "flag")
    with pytest.raises(MaxaError, match="split must be one of train, val"):
        Ade20kDataset(split="test", root=str(ade_root))


def test_labels_shift_down_and_other_is_ignored(ade_root: Path) -> None:
    sample = Ade20kDataset(split="val", root=str(ade_root))[0]
    semantic = sample.targets["semantic"]
    assert semantic.dtype == np.uint8 and semantic.shape == (16, 20) == sample.image.shape[:2]
    assert (semantic[:, :5] == 255).all()  # 0 = other
    assert (
        (semantic[:, 5:10] == 0).all()
        and (semantic[:, 10:15] == 149).all()
        and (semantic[:, 15:] == 12).all()
    )


def test_config_round_trip_with_cap(ade_root: Path) -> None:
    ds = Ade20kDataset(split="train", root=str(ade_root), num_images=1)
    assert build_dataset("ade20k", root=str(ade_root), **ds.config()).ids == ds.ids == [ds.ids[0]]


def test_bad_annotations_are_named(ade_root: Path) -> None:
    folder = ade_root / "annotations" / "training"
    label = np.full((16, 20), 151, dtype=np.uint8)
    write_grey_png(folder / "ADE_train_00000001.png", label)
    (folder / "ADE_train_00000002.png").unlink()
    ds = Ade20kDataset(split="train", root=str(ade_root))
    with pytest.raises(MaxaError, match=r"ADE_train_00000001\.png holds ids \[151\] outside 0\.\.150"):
        ds[0]
    with pytest.raises(MaxaError, match=r"annotation .*ADE_train_00000002\.png does not exist"):
        ds[1]
    (ade_root / "annotations" / "validation").rename(ade_root / "annotations" / "val")
    with pytest.raises(MaxaError, match=r"missing folder .*annotations/validation"):
        Ade20kDataset(split="val", root=str(ade_root))
