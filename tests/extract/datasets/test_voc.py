"""Pascal VOC 2012 from palette PNGs: indices not colours, the 255 void band, objects, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from dataset_files import VOC_NAMES, voc_labels, write_palette_png
from PIL import Image

from maxa.core.errors import MaxaError
from maxa.extract.datasets import build_dataset, dataset_fingerprint
from maxa.extract.datasets.voc import CLASS_NAMES, VocDataset


def voc_folder(root: Path) -> Path:
    return root / "VOCdevkit" / "VOC2012"


def test_split_files_choose_the_images(voc_root: Path) -> None:
    train = VocDataset(split="train", root=str(voc_root))
    assert train.ids == [f"voc-{n}" for n in VOC_NAMES[:2]]
    assert VocDataset(split="val", root=str(voc_root)).ids == [f"voc-{VOC_NAMES[2]}"]
    assert train.num_classes == 21 and train.class_names[15] == "person" and len(CLASS_NAMES) == 21
    # root may also be VOCdevkit/VOC2012 itself
    assert VocDataset(split="train", root=str(voc_folder(voc_root))).ids == train.ids


def test_palette_indices_are_the_labels(voc_root: Path) -> None:
    sample = VocDataset(split="train", root=str(voc_root))[1]
    semantic, objects = voc_labels(1)
    np.testing.assert_array_equal(sample.targets["semantic"], semantic)
    assert set(np.unique(sample.targets["semantic"]).tolist()) == {0, 7, 15, 255}
    instances = sample.targets["instances"]
    assert instances.dtype == np.int32
    np.testing.assert_array_equal(instances, np.where(objects == 255, 0, objects))
    np.testing.assert_array_equal(
        sample.targets["boxes"], np.array([[2, 2, 12, 10], [14, 12, 29, 22]], np.float32)
    )
    assert sample.image.shape == (24, 32, 3)


def test_without_instances(voc_root: Path) -> None:
    shutil.rmtree(voc_folder(voc_root) / "SegmentationObject")
    with pytest.raises(MaxaError, match=r"SegmentationObject .*instances=false"):
        VocDataset(split="train", root=str(voc_root))
    ds = build_dataset("voc", split="train", root=str(voc_root), instances=False)
    assert set(ds[0].targets) == {"semantic"}
    assert ds.config()["instances"] is False
    again = build_dataset("voc", root=str(voc_root), **ds.config())
    assert dataset_fingerprint(again) == dataset_fingerprint(ds)


def test_rgb_label_png_is_refused(voc_root: Path) -> None:
    path = voc_folder(voc_root) / "SegmentationClass" / f"{VOC_NAMES[0]}.png"
    Image.open(path).convert("RGB").save(path)
    with pytest.raises(MaxaError, match=r"2007_000032\.png has PNG mode 'RGB'"):
        VocDataset(split="train", root=str(voc_root))[0]


def test_ids_outside_the_classes_are_refused(voc_root: Path) -> None:
    semantic, _ = voc_labels(0)
    semantic[0, 0] = 37
    write_palette_png(voc_folder(voc_root) / "SegmentationClass" / f"{VOC_NAMES[0]}.png", semantic)
    with pytest.raises(MaxaError, match=r"holds ids \[37\] outside 0\.\.20 and 255"):
        VocDataset(split="train", root=str(voc_root))[0]


def test_missing_and_mismatched_files(voc_root: Path, tmp_path: Path) -> None:
    with pytest.raises(MaxaError, match="no ImageSets/Segmentation"):
        VocDataset(split="train", root=str(tmp_path))
    with pytest.raises(MaxaError, match=r"Segmentation/test\.txt"):
        VocDataset(split="test", root=str(voc_root))
    folder = voc_folder(voc_root)
    (folder / "JPEGImages" / f"{VOC_NAMES[1]}.jpg").unlink()
    write_palette_png(folder / "SegmentationObject" / f"{VOC_NAMES[0]}.png", np.zeros((24, 31)))
    ds = VocDataset(split="train", root=str(voc_root))
    with pytest.raises(MaxaError, match=r"SegmentationObject/2007_000032\.png is 24x31 but its image"):
        ds[0]
    with pytest.raises(MaxaError, match=r"2007_000039\.jpg does not exist \(referenced by .*train\.txt\)"):
        ds[1]
