"""COCO instances from a real-format tree: polygons, RLE, crowd regions, boxes, errors, and `maxa prepare`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dataset_files import COCO_CROWD, COCO_DOG, truncate, write_jpeg

from maxa.core import store as st
from maxa.core.errors import MaxaError
from maxa.extract.datasets import build_dataset, dataset_fingerprint
from maxa.extract.datasets.coco import CocoDataset
from maxa.extract.targets import dataset_from_targets
from tests.kit.cli import invoke

IDS = ["coco-000000000001", "coco-000000000003", "coco-000000000005"]


def edit_annotations(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = root / "annotations" / "instances_val2017.json"
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def test_lists_images_by_id_with_contiguous_classes(coco_root: Path) -> None:
    ds = CocoDataset(split="val", root=str(coco_root))
    assert ds.ids == IDS and len(ds) == 3
    assert ds.num_classes == 4
    assert ds.class_names == ["background", "person", "dog", "bottle"]
    assert ds.category_index == {1: 1, 18: 2, 44: 3}


def test_polygon_rle_and_crowd_targets(coco_root: Path) -> None:
    sample = CocoDataset(split="val", root=str(coco_root))[0]
    assert sample.id == IDS[0] and sample.image.shape == (40, 48, 3) and sample.image.dtype == np.uint8
    semantic, instances = sample.targets["semantic"], sample.targets["instances"]
    assert semantic.dtype == np.uint8 and instances.dtype == np.int32
    # polygon person: the inside is class 1, well outside is background
    assert (semantic[5:19, 5:19] == 1).all()
    assert (semantic[22:24, :20] == 0).all() and (semantic[:, 21:29] == 0).all()
    # compressed RLE dog: exactly its mask
    np.testing.assert_array_equal(semantic[COCO_DOG], 2)
    # crowd: ignore and no instance, except where the bottle polygon (rows 2..8, cols 40..46) lies on it
    near_bottle = np.zeros_like(COCO_CROWD)
    near_bottle[1:10, 39:48] = True
    assert (semantic[COCO_CROWD & ~near_bottle] == 255).all()
    assert (instances[COCO_CROWD & ~near_bottle] == 0).all()
    assert (semantic[3:7, 41:45] == 3).all()
    assert set(np.unique(semantic).tolist()) == {0, 1, 2, 3, 255}
    # three instances in annotation-id order: person, dog, bottle; boxes are their bboxes as xyxy
    assert sorted(np.unique(instances).tolist()) == [0, 1, 2, 3]
    assert np.unique(semantic[instances == 2]).tolist() == [2]
    np.testing.assert_array_equal(
        sample.targets["boxes"], np.array([[4, 4, 20, 20], [30, 25, 44, 35], [40, 2, 46, 8]], np.float32)
    )
    assert sample.targets["boundary"].any()


def test_small_object_on_a_large_one_keeps_its_pixels(coco_root: Path) -> None:
    sample = CocoDataset(split="val", root=str(coco_root))[2]
    semantic, instances = sample.targets["semantic"], sample.targets["instances"]
    assert (semantic[11:15, 11:15] == 2).all() and (instances[11:15, 11:15] == 1).all()
    assert (semantic[3:9, 3:29] == 1).all() and (instances[3:9, 3:29] == 2).all()
    assert len(sample.targets["boxes"]) == 2


def test_image_without_annotations_is_background(coco_root: Path) -> None:
    sample = CocoDataset(split="val", root=str(coco_root))[1]
    assert not sample.targets["semantic"].any() and not sample.targets["instances"].any()
    assert sample.targets["boxes"].shape == (0, 4)


def test_config_rebuilds_the_same_reader_and_caps(coco_root: Path) -> None:
    ds = CocoDataset(split="val", root=str(coco_root), num_images=2)
    assert ds.ids == IDS[:2]
    config = ds.config()
    assert "root" not in config
    again = build_dataset("coco", root=str(coco_root), **config)
    assert again.ids == ds.ids and dataset_fingerprint(again) == dataset_fingerprint(ds)
    skipping = CocoDataset(split="val", root=str(coco_root), skip_ids=[IDS[0]])
    assert skipping.ids == IDS[1:] and dataset_fingerprint(skipping) != dataset_fingerprint(ds)


def test_missing_layout_is_named(coco_root: Path, tmp_path: Path) -> None:
    with pytest.raises(MaxaError, match="needs --root"):
        CocoDataset(split="val")
    with pytest.raises(MaxaError, match=r"train2017"):
        CocoDataset(split="train", root=str(coco_root))
    (coco_root / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(MaxaError, match=r"instances_val2017\.json"):
        CocoDataset(split="val", root=str(coco_root))
    with pytest.raises(MaxaError, match="does not exist"):
        CocoDataset(split="val", root=str(tmp_path / "nowhere"))


def test_corrupt_and_missing_images_are_named(coco_root: Path) -> None:
    truncate(coco_root / "val2017" / "000000000003.jpg")
    (coco_root / "val2017" / "000000000005.jpg").unlink()
    ds = CocoDataset(split="val", root=str(coco_root))
    ds[0]  # the others are untouched
    with pytest.raises(MaxaError, match=r"000000000003\.jpg is corrupt"):
        ds[1]
    with pytest.raises(MaxaError, match=r"000000000005\.jpg does not exist .*image id 5"):
        ds[2]


def test_image_size_must_match_the_annotations(coco_root: Path) -> None:
    write_jpeg(coco_root / "val2017" / "000000000003.jpg", np.zeros((20, 24, 3), np.uint8))
    with pytest.raises(MaxaError, match=r"000000000003\.jpg is 20x24 but .* says 24x24"):
        CocoDataset(split="val", root=str(coco_root))[1]


def test_inconsistent_annotations_are_named(coco_root: Path) -> None:
    def wrong_rle_size(content: dict) -> None:
        content["annotations"][1]["segmentation"]["size"] = [41, 48]

    edit_annotations(coco_root, wrong_rle_size)
    with pytest.raises(MaxaError, match=r"annotation 11: RLE mask size \[41, 48\]"):
        CocoDataset(split="val", root=str(coco_root))[0]

    def orphan(content: dict) -> None:
        content["annotations"][0]["image_id"] = 99

    edit_annotations(coco_root, orphan)
    with pytest.raises(MaxaError, match="annotation 10 refers to image id 99"):
        CocoDataset(split="val", root=str(coco_root))

    def no_file_name(content: dict) -> None:
        del content["images"][0]["file_name"]

    edit_annotations(coco_root, no_file_name)
    with pytest.raises(MaxaError, match="lacks id, file_name, height or width"):
        CocoDataset(split="val", root=str(coco_root))

    def unknown_category(content: dict) -> None:
        content["images"][0]["file_name"] = "000000000001.jpg"
        content["annotations"][0]["image_id"] = 1
        content["annotations"][0]["category_id"] = 7

    edit_annotations(coco_root, unknown_category)
    with pytest.raises(MaxaError, match="category id 7"):
        CocoDataset(split="val", root=str(coco_root))[0]


def test_invalid_json_is_named(coco_root: Path) -> None:
    (coco_root / "annotations" / "instances_val2017.json").write_text("{not json")
    with pytest.raises(MaxaError, match=r"instances_val2017\.json is not valid JSON"):
        CocoDataset(split="val", root=str(coco_root))


def test_prepare_cli_writes_the_targets(coco_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "targets.zarr"
    args = ["prepare", "--dataset", "coco", "--root", str(coco_root), "--split", "val"]
    result = invoke(*args, "--label-size", "16", "--out", out)
    assert result.exit_code == 0, result.output
    store = st.open_store(str(out), "targets")
    assert store.ids() == IDS
    assert set(store.array_names()) == {"image", "semantic", "instances", "boundary", "original_size"}
    prov = store.provenance
    assert prov["class_names"] == ["background", "person", "dog", "bottle"] and prov["num_classes"] == 4
    semantic = np.asarray(store.array("semantic")[:])
    assert semantic.shape == (3, 16, 16)
    assert set(np.unique(semantic[0]).tolist()) == {0, 1, 2, 3, 255}
    assert dataset_from_targets(store).ids == IDS  # extraction rebuilds the same reader


def test_prepare_cli_reports_a_missing_root(tmp_path: Path) -> None:
    args = ["prepare", "--dataset", "coco", "--split", "val", "--out", str(tmp_path / "t.zarr")]
    result = invoke(*args, catch_exceptions=True)
    assert result.exit_code == 1 and "coco dataset needs --root" in result.output


def test_missing_bbox_falls_back_to_the_mask_extent(coco_root: Path) -> None:
    def drop_bbox(content: dict) -> None:
        del content["annotations"][1]["bbox"]

    edit_annotations(coco_root, drop_bbox)
    boxes = CocoDataset(split="val", root=str(coco_root))[0].targets["boxes"]
    np.testing.assert_array_equal(boxes[1], [30, 25, 44, 35])  # the RLE dog's exact pixel extent


def _first_annotation_wins(reader: CocoDataset, index: int) -> np.ndarray:
    """deap's COCO targets (coco_simple.py:99-103), written again: every annotation's mask (crowd too)
    in the file's order, stacked after an all-zero background, argmax over the stack."""
    info = reader.coco.imgs[reader.image_ids[index]]
    masks = [reader.coco.annToMask(a) for a in reader.coco.imgToAnns.get(info["id"], [])]
    stack = np.stack([np.zeros((info["height"], info["width"]), np.uint8), *masks])
    return stack.argmax(0)


def test_deaps_overlap_and_crowd_rule_is_an_option(coco_root: Path) -> None:
    deap = CocoDataset(split="val", root=str(coco_root), overlap="first", crowd="instance")
    default = CocoDataset(split="val", root=str(coco_root))
    changed = 0
    for index in range(len(deap)):
        ours = deap[index].targets["instances"]
        reference = _first_annotation_wins(deap, index)
        # the same partition of the pixels: ids map one to one (maxa renumbers the visible ones)
        pairs = set(zip(ours.ravel().tolist(), reference.ravel().tolist(), strict=True))
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
        assert ((ours == 0) == (reference == 0)).all()
        changed += int((default[index].targets["instances"] != ours).any())
    assert changed == 1  # the crowd image; in image 2 the small dog is listed first, so both rules agree
    # listed the other way round, the large person comes first and takes the dog's pixels
    edit_annotations(coco_root, lambda c: c["annotations"].sort(key=lambda a: -a["id"]))
    reordered = CocoDataset(split="val", root=str(coco_root), overlap="first", crowd="instance")
    instances = reordered[2].targets["instances"]
    np.testing.assert_array_equal(instances > 0, _first_annotation_wins(reordered, 2) > 0)
    assert len(np.unique(instances[11:15, 11:15])) == 1 and len(reordered[2].targets["boxes"]) == 1
    assert deap.config()["overlap"] == "first" and "overlap" not in default.config()
    assert dataset_fingerprint(deap) != dataset_fingerprint(default)
    with pytest.raises(MaxaError, match="option overlap must be one of smallest, first"):
        CocoDataset(split="val", root=str(coco_root), overlap="last")


def test_start_selects_a_held_out_range_of_the_fixed_order(coco_root: Path) -> None:
    tail = CocoDataset(split="val", root=str(coco_root), start=1, num_images=1)
    assert tail.ids == IDS[1:2] and tail.config()["start"] == 1
    assert "start" not in CocoDataset(split="val", root=str(coco_root)).config()
    again = build_dataset("coco", root=str(coco_root), **tail.config())
    assert again.ids == tail.ids
    with pytest.raises(MaxaError, match="start 3 is past the 3 samples"):
        CocoDataset(split="val", root=str(coco_root), start=3)
