"""DAVIS 2017: frames in sequence order with sequence/frame set, object ids, binary semantic, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_files import davis_objects, write_palette_png

from maxa.core.errors import MaxaError
from maxa.extract.datasets import build_dataset, dataset_fingerprint
from maxa.extract.datasets.davis import DavisDataset

TRAIN_IDS = [
    "davis-bear-00000",
    "davis-bear-00001",
    "davis-bear-00002",
    "davis-car-shadow-00000",
    "davis-car-shadow-00001",
]


def test_frames_follow_the_split_file(davis_root: Path) -> None:
    train = DavisDataset(split="train", root=str(davis_root))  # root holds DAVIS/
    assert train.ids == TRAIN_IDS
    assert DavisDataset(split="val", root=str(davis_root / "DAVIS")).ids == [
        "davis-dog-00000",
        "davis-dog-00001",
    ]
    sample = train[4]
    assert (sample.sequence, sample.frame) == ("car-shadow", 1)
    assert (train[2].sequence, train[2].frame) == ("bear", 2)


def test_object_ids_and_binary_semantic(davis_root: Path) -> None:
    sample = DavisDataset(split="train", root=str(davis_root))[4]
    objects = davis_objects("car-shadow", 1)
    instances, semantic = sample.targets["instances"], sample.targets["semantic"]
    assert instances.dtype == np.int32 and semantic.dtype == np.uint8
    np.testing.assert_array_equal(instances, np.where(objects == 255, 0, objects))
    np.testing.assert_array_equal(semantic[1:], (objects[1:] > 0).astype(np.uint8))
    assert (semantic[0] == 255).all()  # void strip
    assert sample.targets["boxes"].tolist() == [[3, 2, 11, 8], [12, 10, 20, 16]]


def test_sequences_option_and_config(davis_root: Path) -> None:
    ds = DavisDataset(split="train", root=str(davis_root), sequences=["car-shadow"])
    assert ds.ids == TRAIN_IDS[3:]
    again = build_dataset("davis", root=str(davis_root), **ds.config())
    assert again.ids == ds.ids and dataset_fingerprint(again) == dataset_fingerprint(ds)
    assert DavisDataset(split="train", root=str(davis_root)).config()["sequences"] is None
    with pytest.raises(MaxaError, match=r"sequences \['dog'\] are not in .*train\.txt"):
        DavisDataset(split="train", root=str(davis_root), sequences=["dog"])


def test_missing_and_mismatched_files(davis_root: Path) -> None:
    davis = davis_root / "DAVIS"
    (davis / "Annotations" / "480p" / "bear" / "00001.png").unlink()
    write_palette_png(davis / "Annotations" / "480p" / "bear" / "00002.png", np.zeros((18, 25)))
    ds = DavisDataset(split="train", root=str(davis_root))
    with pytest.raises(MaxaError, match=r"annotation .*bear/00001\.png does not exist"):
        ds[1]
    with pytest.raises(MaxaError, match=r"bear/00002\.png is 18x25 but its image"):
        ds[2]
    (davis / "ImageSets" / "2017" / "val.txt").write_text("dog\nmissing-seq\n")
    with pytest.raises(MaxaError, match=r"sequence 'missing-seq' .* has no folder"):
        DavisDataset(split="val", root=str(davis_root))
    with pytest.raises(MaxaError, match=r"missing folder .*JPEGImages/Full-Resolution"):
        DavisDataset(split="train", root=str(davis_root), resolution="Full-Resolution")
