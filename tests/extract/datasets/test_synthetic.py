"""The synthetic dataset must be deterministic, internally consistent and easy enough to probe."""

from __future__ import annotations

import colorsys
import json

import numpy as np
import pytest

from maxa.core.errors import MaxaError
from maxa.core.sample import Sample
from maxa.extract.datasets.base import Dataset, build_dataset, dataset_fingerprint
from maxa.extract.datasets.synthetic import HUES, SHAPES, SyntheticDataset

ARRAYS = ("semantic", "instances", "depth", "boundary", "boxes")


def assert_same(a: Sample, b: Sample) -> None:
    assert a.id == b.id
    np.testing.assert_array_equal(a.image, b.image)
    assert set(a.targets) == set(b.targets) == set(ARRAYS)
    for name in ARRAYS:
        np.testing.assert_array_equal(a.targets[name], b.targets[name])


@pytest.fixture(scope="module")
def busy() -> list[Sample]:
    """Many crowded samples, so occlusion, tiny fragments and every class all occur."""
    dataset = SyntheticDataset(num_images=40, image_size=96, num_classes=8, max_objects=8, seed=3)
    return [dataset[i] for i in range(len(dataset))]


def test_same_index_gives_same_sample() -> None:
    dataset = SyntheticDataset(num_images=4, seed=7)
    assert_same(dataset[2], dataset[2])
    assert_same(dataset[2], SyntheticDataset(num_images=4, seed=7)[2])


def test_access_order_does_not_matter() -> None:
    forward = SyntheticDataset(num_images=6, seed=1)
    backward = SyntheticDataset(num_images=6, seed=1)
    later = [backward[i] for i in reversed(range(6))][::-1]
    for i in range(6):
        assert_same(forward[i], later[i])


def test_num_images_does_not_change_samples() -> None:
    assert_same(SyntheticDataset(num_images=3)[1], SyntheticDataset(num_images=50)[1])


def test_seeds_splits_and_indices_differ() -> None:
    base = SyntheticDataset(num_images=2, seed=0)[0].image
    assert not np.array_equal(base, SyntheticDataset(num_images=2, seed=1)[0].image)
    assert not np.array_equal(base, SyntheticDataset(num_images=2, seed=0, split="val")[0].image)
    assert not np.array_equal(base, SyntheticDataset(num_images=2, seed=0)[1].image)
    val = SyntheticDataset(split="val", num_images=1)[0].image
    assert not np.array_equal(val, SyntheticDataset(split="test", num_images=1)[0].image)


def test_sample_ids_name_split_and_index() -> None:
    assert SyntheticDataset(split="val", num_images=13)[12].id == "synthetic-val-000012"


def test_dtypes_and_shapes() -> None:
    sample = SyntheticDataset(num_images=1, image_size=40)[0]
    assert sample.image.dtype == np.uint8 and sample.image.shape == (40, 40, 3)
    expected = {"semantic": np.uint8, "instances": np.int32, "depth": np.float32, "boundary": np.uint8}
    for name, dtype in expected.items():
        assert sample.targets[name].dtype == dtype, name
        assert sample.targets[name].shape == (40, 40), name
    boxes = sample.targets["boxes"]
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert set(np.unique(sample.targets["boundary"])) <= {0, 1}


def test_image_is_not_flat() -> None:
    image = SyntheticDataset(num_images=1)[0].image.astype(np.float64)
    assert image.std() > 10.0
    assert 0 < image.mean() < 255


def test_semantic_ids_are_within_classes(busy: list[Sample]) -> None:
    seen: set[int] = set()
    for sample in busy:
        semantic = sample.targets["semantic"]
        assert semantic.max() < 9
        seen |= set(np.unique(semantic).tolist())
    assert seen == set(range(9))  # background and all eight shapes occur
    small = SyntheticDataset(num_images=10, num_classes=2)
    for i in range(len(small)):
        assert small[i].targets["semantic"].max() < small.num_classes


def test_instances_agree_with_semantic(busy: list[Sample]) -> None:
    for sample in busy:
        semantic, instances = sample.targets["semantic"], sample.targets["instances"]
        np.testing.assert_array_equal(semantic == 0, instances == 0)
        for k in range(1, int(instances.max()) + 1):
            classes = np.unique(semantic[instances == k])
            assert len(classes) == 1 and classes[0] != 0, (sample.id, k)


def test_instance_ids_are_contiguous(busy: list[Sample]) -> None:
    """An object hidden by later ones must not leave a gap in the ids or a box."""
    for sample in busy:
        instances = sample.targets["instances"]
        ids = np.unique(instances[instances > 0])
        np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
        assert len(sample.targets["boxes"]) == len(ids)
        assert len(ids) >= 1


def test_occlusion_happens(busy: list[Sample]) -> None:
    """Later objects cover earlier ones somewhere, so instance ids meet instance ids, not only background."""
    touching = 0
    for sample in busy:
        instances = sample.targets["instances"]
        a, b = instances[:, 1:], instances[:, :-1]
        touching += int(np.sum((a != b) & (a > 0) & (b > 0)))
    assert touching > 0


def test_depth_follows_drawing_order(busy: list[Sample]) -> None:
    for sample in busy:
        depth, instances = sample.targets["depth"], sample.targets["instances"]
        assert np.all(depth > 0) and np.all(np.isfinite(depth))
        background = depth[instances == 0]
        if background.size:
            assert background.min() >= 8.0 - 1e-4 and background.max() <= 10.0 + 1e-4
        farther = background.min() if background.size else np.inf
        for k in range(1, int(instances.max()) + 1):
            pixels = depth[instances == k]
            assert pixels.max() < farther, (sample.id, k)
            farther = min(farther, pixels.min())


def test_background_depth_is_a_gentle_plane() -> None:
    sample = SyntheticDataset(num_images=1, max_objects=1)[0]
    depth = sample.targets["depth"].astype(np.float64)
    rows, cols = np.nonzero(sample.targets["instances"] == 0)
    design = np.stack([np.ones_like(rows), rows, cols], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, depth[rows, cols], rcond=None)
    np.testing.assert_allclose(design @ coef, depth[rows, cols], atol=1e-3)
    assert abs(coef[1]) + abs(coef[2]) > 0


def reference_boundary(instances: np.ndarray) -> np.ndarray:
    """deap's rule: a pixel with another id among its 8 neighbours of an edge-padded copy (the border
    itself is no boundary), widened by a side // 100 box covering offsets -(k-1)//2 .. k//2."""
    padded = np.pad(instances, 1, mode="edge")
    h, w = instances.shape
    centre = padded[1:-1, 1:-1]
    edge = np.zeros((h, w), dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            edge |= padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] != centre
    kh, kw = max(1, h // 100), max(1, w // 100)
    wide = np.pad(edge, max(kh, kw), mode="symmetric")
    p = max(kh, kw)
    out = np.zeros_like(edge)
    for dy in range(-((kh - 1) // 2), kh // 2 + 1):
        for dx in range(-((kw - 1) // 2), kw // 2 + 1):
            out |= wide[p + dy : p + dy + h, p + dx : p + dx + w]
    return out.astype(np.uint8)


def test_boundary_matches_instances(busy: list[Sample]) -> None:
    for sample in busy:
        np.testing.assert_array_equal(
            sample.targets["boundary"], reference_boundary(sample.targets["instances"])
        )
        assert sample.targets["boundary"].any()


def test_boxes_match_instance_masks(busy: list[Sample]) -> None:
    for sample in busy:
        instances, boxes = sample.targets["instances"], sample.targets["boxes"]
        for k, box in enumerate(boxes, start=1):
            rows, cols = np.nonzero(instances == k)
            expected = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            np.testing.assert_array_equal(
                box, np.array(expected, dtype=np.float32), err_msg=f"{sample.id} {k}"
            )


def test_classes_have_their_hue(busy: list[Sample]) -> None:
    """Each class's mean colour sits nearest its own hue: what makes even random features separable."""
    hits = total = 0
    for sample in busy:
        image = sample.image.astype(np.float64) / 255.0
        semantic, instances = sample.targets["semantic"], sample.targets["instances"]
        for k in range(1, int(instances.max()) + 1):
            mask = instances == k
            if mask.sum() < 20:
                continue
            hue = colorsys.rgb_to_hsv(*image[mask].mean(axis=0))[0]
            distance = [min(abs(hue - h), 1 - abs(hue - h)) for h in HUES]
            hits += int(np.argmin(distance) + 1 == semantic[mask][0])
            total += 1
    assert total > 50 and hits / total > 0.95


def test_options_are_respected() -> None:
    dataset = SyntheticDataset(num_images=5, image_size=48, num_classes=3, max_objects=2)
    assert len(dataset) == 5
    assert dataset.num_classes == 4
    assert dataset.class_names == ["background", *SHAPES[:3]]
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample.image.shape == (48, 48, 3)
        assert sample.targets["instances"].max() <= 2
        assert sample.targets["semantic"].max() <= 3


def test_class_names_match_num_classes() -> None:
    for n in (1, 4, 8):
        dataset = SyntheticDataset(num_classes=n)
        assert dataset.num_classes == n + 1 == len(dataset.class_names)
        assert dataset.class_names[0] == "background"
        assert len(set(dataset.class_names)) == n + 1


def test_config_is_json_and_rebuilds_the_dataset() -> None:
    dataset = SyntheticDataset(
        split="test", num_images=3, image_size=32, num_classes=5, max_objects=3, seed=9
    )
    config = dataset.config()
    assert json.loads(json.dumps(config)) == config
    assert "root" not in config
    assert config["num_classes"] == 5
    rebuilt = SyntheticDataset(**config)
    assert_same(dataset[2], rebuilt[2])
    assert dataset_fingerprint(dataset) == dataset_fingerprint(rebuilt)
    assert dataset_fingerprint(dataset) != dataset_fingerprint(SyntheticDataset(**{**config, "seed": 10}))


def test_root_is_accepted_and_ignored() -> None:
    assert_same(SyntheticDataset(num_images=1, root="/nowhere")[0], SyntheticDataset(num_images=1)[0])


@pytest.mark.parametrize("index", [-1, 3, 100])
def test_out_of_range_index_raises(index: int) -> None:
    with pytest.raises(IndexError):
        SyntheticDataset(num_images=3)[index]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("split", "training"),
        ("num_images", 0),
        ("num_images", -4),
        ("image_size", 0),
        ("image_size", 12.5),
        ("num_classes", 0),
        ("num_classes", 9),
        ("max_objects", 0),
        ("seed", -1),
        ("seed", "zero"),
    ],
)
def test_bad_options_raise_naming_the_option(option: str, value: object) -> None:
    with pytest.raises(MaxaError, match=option) as caught:
        SyntheticDataset(**{option: value})  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        SyntheticDataset("train")  # type: ignore[misc]


def test_registry_builds_it() -> None:
    dataset = build_dataset("synthetic", split="val", num_images=2, image_size=32, seed=4)
    assert isinstance(dataset, SyntheticDataset)
    assert isinstance(dataset, Dataset)
    assert dataset.name == "synthetic" and dataset.split == "val" and len(dataset) == 2
    assert_same(dataset[1], SyntheticDataset(split="val", num_images=2, image_size=32, seed=4)[1])


def test_tiny_images_still_work() -> None:
    dataset = SyntheticDataset(num_images=5, image_size=4, max_objects=3)
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample.image.shape == (4, 4, 3)
        np.testing.assert_array_equal(
            sample.targets["boundary"], reference_boundary(sample.targets["instances"])
        )
