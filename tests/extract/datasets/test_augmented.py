"""The `augmented` reader (extract/datasets/augmented.py): retrieval queries as a split of their own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maxa.core.dataset_facts import parse_augmented_id
from maxa.core.errors import MaxaError
from maxa.extract.datasets import build_dataset, dataset_fingerprint
from maxa.extract.datasets.augmented import crop_box
from maxa.extract.targets import PrepareConfig, dataset_from_targets, prepare

BASE = {"num_images": 3, "image_size": 48}


def augmented(kind: str, **options):
    return build_dataset("augmented", split="val", base="synthetic", base_options=BASE, kind=kind, **options)


def laplacian_energy(image: np.ndarray) -> float:
    x = image.astype(np.float64).mean(-1)
    lap = 4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]
    return float((lap**2).mean())


def test_ids_name_the_source_and_targets_survive_blur_and_noise() -> None:
    base = build_dataset("synthetic", split="val", **BASE)
    for kind in ("blur", "noise"):
        dataset = augmented(kind)
        assert len(dataset) == len(base) and dataset.class_names == base.class_names
        sample, source = dataset[1], base[1]
        assert sample.id == f"aug-{kind}-{source.id}" and dataset.ids[1] == sample.id
        assert parse_augmented_id(sample.id) == (kind, source.id)
        assert (sample.targets["semantic"] == source.targets["semantic"]).all()
        assert sample.image.shape == source.image.shape and not (sample.image == source.image).all()
        assert (dataset[1].image == sample.image).all()  # deterministic per index
    assert parse_augmented_id("synthetic-val-000001") is None


def test_blur_removes_detail_and_noise_has_the_requested_spread() -> None:
    base = build_dataset("synthetic", split="val", **BASE)[0].image
    assert laplacian_energy(augmented("blur", strength=2.0)[0].image) < 0.5 * laplacian_energy(base)
    noisy = augmented("noise", strength=10.0)[0].image.astype(np.float64)
    inside = (base > 30) & (base < 225)  # away from clipping
    assert np.std((noisy - base)[inside]) == pytest.approx(10.0, rel=0.15)


def test_crops_cut_image_and_targets_alike() -> None:
    base = build_dataset("synthetic", split="val", **BASE)[2]
    sample = augmented("crop", strength=0.5, seed=4)[2]
    top, left, h, w = crop_box(48, 48, 0.5, np.random.default_rng([4, 2]))
    assert sample.image.shape == (24, 24, 3) == (h, w, 3)
    assert (sample.image == base.image[top : top + h, left : left + w]).all()
    assert (sample.targets["instances"] == base.targets["instances"][top : top + h, left : left + w]).all()
    boxes = sample.targets["boxes"]
    assert (boxes[:, [0, 2]] <= w).all() and (boxes[:, [1, 3]] <= h).all()


def test_config_rebuilds_the_same_split_and_notices_a_changed_base() -> None:
    dataset = augmented("noise", strength=5.0, seed=1)
    again = build_dataset("augmented", **dataset.config())
    assert dataset_fingerprint(again) == dataset_fingerprint(dataset)
    assert (again[0].image == dataset[0].image).all()
    changed = {**dataset.config(), "base_options": {**BASE, "seed": 9}}
    with pytest.raises(MaxaError, match="base synthetic/val changed"):
        build_dataset("augmented", **changed)


def test_bad_options_are_refused() -> None:
    with pytest.raises(MaxaError, match="kind must be one of"):
        augmented("rotate")
    with pytest.raises(MaxaError, match="keeps a fraction"):
        augmented("crop", strength=1.5)
    with pytest.raises(MaxaError, match="unknown dataset"):
        build_dataset("augmented", split="val", base="nope")


def test_prepare_writes_it_and_the_reader_is_rebuilt_from_the_store(tmp_path: Path) -> None:
    options = {"base": "synthetic", "base_options": BASE, "kind": "blur"}
    store = prepare(
        PrepareConfig(dataset="augmented", split="val", label_size=16, options=options),
        str(tmp_path / "q"),
        progress=False,
    )
    assert store.ids() == augmented("blur").ids
    rebuilt = dataset_from_targets(store)
    assert rebuilt.config() == augmented("blur").config()


def test_base_options_are_checked_against_the_base_readers_dataclass() -> None:
    """`maxa params` (option_problem) and the reader itself refuse the base reader's unknown or mistyped
    options in the user's words, naming the nesting; the coco base takes options synthetic does not."""
    from maxa.extract.datasets.base import option_problem

    typo = {"base": "synthetic", "base_options": {"num_image": 3}}
    problem = option_problem("augmented", typo)
    assert problem is not None
    nested = "the augmented reader's option base_options: the synthetic reader has no option"
    assert problem.startswith(nested)
    assert "did you mean 'num_images'?" in problem
    mistyped = {"base": "synthetic", "base_options": {"image_size": "big"}}
    assert "option image_size must be" in (option_problem("augmented", mistyped) or "")
    assert option_problem("augmented", {"base": "coco", "base_options": {"year": 2014}}) is None
    assert "has no option 'year'" in (option_problem("augmented", {"base_options": {"year": 2014}}) or "")
    assert option_problem("augmented", {"base_options": BASE}) is None
    with pytest.raises(MaxaError, match=r"^augmented dataset: option base_options: the synthetic reader"):
        build_dataset("augmented", split="val", base="synthetic", base_options={"num_image": 3})
