"""COCO-Stuff label PNGs: the 182 -> 171 class mapping, ignore values, pairing with the images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_files import STUFF_VALUES, write_grey_png, write_jpeg
from PIL import Image

from maxa.core.errors import MaxaError
from maxa.extract.datasets import build_dataset
from maxa.extract.datasets.coco_stuff import CATEGORY_NAMES, LABEL_TABLE, USED_VALUES, CocoStuffDataset


def test_class_list_matches_the_released_numbering() -> None:
    assert len(CATEGORY_NAMES) == 182 and len(USED_VALUES) == 171
    assert (
        CATEGORY_NAMES[0] == "person" and CATEGORY_NAMES[90] == "hair brush" and CATEGORY_NAMES[181] == "wood"
    )
    assert len(set(CATEGORY_NAMES)) == 182
    assert LABEL_TABLE[255] == 255 and LABEL_TABLE[182] == 255


def test_labels_map_to_contiguous_ids(stuff_root: Path) -> None:
    ds = CocoStuffDataset(split="val", root=str(stuff_root))
    assert ds.ids == ["coco-000000000139", "coco-000000000285"]  # joinable with the coco reader's ids
    assert ds.num_classes == 171 and len(ds.class_names) == 171
    sample = ds[0]
    semantic = sample.targets["semantic"]
    assert semantic.shape == (20, 30) and semantic.dtype == np.uint8 and sample.image.shape == (20, 30, 3)
    # columns of 6 pixels hold, in order: person, unused thing value 11, banner, wood, unlabeled
    expected = [0, 255, 80, 170, 255]
    for k, (value, semantic_id) in enumerate(zip(STUFF_VALUES, expected, strict=True)):
        assert (semantic[:, k * 6 : (k + 1) * 6] == semantic_id).all(), value
    assert [ds.class_names[i] for i in (0, 80, 170)] == ["person", "banner", "wood"]
    assert set(sample.targets) == {"semantic"}


def test_config_round_trip(stuff_root: Path) -> None:
    ds = CocoStuffDataset(split="val", root=str(stuff_root), num_images=1)
    again = build_dataset("coco_stuff", root=str(stuff_root), **ds.config())
    assert again.ids == ds.ids == ["coco-000000000139"]


def test_errors_name_the_files(stuff_root: Path) -> None:
    with pytest.raises(MaxaError, match=r"missing folder .*coco/train2017 \(the train images\)"):
        CocoStuffDataset(split="train", root=str(stuff_root))
    (stuff_root / "train2017").mkdir()
    with pytest.raises(MaxaError, match=r"missing folder .*stuffthingmaps_trainval2017/train2017"):
        CocoStuffDataset(split="train", root=str(stuff_root))
    write_grey_png(stuff_root / "stuffthingmaps_trainval2017/val2017/000000000139.png", np.zeros((20, 31)))
    (stuff_root / "val2017/000000000285.jpg").unlink()
    ds = CocoStuffDataset(split="val", root=str(stuff_root))
    with pytest.raises(
        MaxaError, match=r"000000000139\.png is 20x31 but its image .*000000000139\.jpg is 20x30"
    ):
        ds[0]
    with pytest.raises(MaxaError, match=r"000000000285\.jpg does not exist \(referenced by .*285\.png\)"):
        ds[1]
    write_jpeg(stuff_root / "val2017/000000000285.jpg", np.zeros((20, 30, 3), np.uint8))
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(
        stuff_root / "stuffthingmaps_trainval2017/val2017/000000000285.png"
    )
    with pytest.raises(MaxaError, match="mode 'RGB'"):
        ds[1]
