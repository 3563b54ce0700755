"""`maxa prepare --skip-bad`: unreadable samples are left out, recorded, and left out again on rebuild."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from click.testing import Result
from dataset_files import VOC_NAMES, truncate

from maxa.core import store as st
from maxa.core.errors import MaxaError
from maxa.extract.datasets import build_dataset
from maxa.extract.datasets.base import Dataset
from maxa.extract.datasets.indexed import IndexedDataset
from maxa.extract.datasets.skipping import exclude_bad_samples
from maxa.extract.targets import dataset_from_targets
from tests.kit.cli import invoke


def prepare(root: Path, out: Path, *extra: str) -> Result:
    args = ["prepare", "--dataset", "voc", "--root", str(root), "--split", "train", "--label-size", "16"]
    return invoke(*args, "--out", out, *extra, catch_exceptions=True)


def test_without_the_flag_a_corrupt_image_stops_prepare(voc_root: Path, tmp_path: Path) -> None:
    truncate(voc_root / "VOCdevkit/VOC2012/JPEGImages" / f"{VOC_NAMES[1]}.jpg")
    result = prepare(voc_root, tmp_path / "t.zarr")
    assert result.exit_code == 1
    assert f"{VOC_NAMES[1]}.jpg is corrupt or unreadable" in result.output
    assert "Traceback" not in result.output


def test_skip_bad_records_and_excludes_consistently(voc_root: Path, tmp_path: Path) -> None:
    bad = f"voc-{VOC_NAMES[1]}"
    truncate(voc_root / "VOCdevkit/VOC2012/JPEGImages" / f"{VOC_NAMES[1]}.jpg")
    out = tmp_path / "t.zarr"
    result = prepare(voc_root, out, "--skip-bad")
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable samples" in result.output
    store = st.open_store(str(out), "targets")
    assert store.ids() == [f"voc-{VOC_NAMES[0]}"]
    skipped = store.meta["extra"]["skipped"]
    assert list(skipped) == [bad] and "corrupt" in skipped[bad]
    assert store.provenance["dataset_config"]["skip_ids"] == [bad]
    rebuilt = dataset_from_targets(store)  # what extraction does: same ids, same fingerprint
    assert cast(IndexedDataset, rebuilt).ids == store.ids()
    again = prepare(voc_root, out, "--skip-bad")  # same inputs: resumes (nothing to do), not refused
    assert again.exit_code == 0, again.output


def test_skip_bad_without_bad_samples_matches_a_plain_prepare(voc_root: Path, tmp_path: Path) -> None:
    assert prepare(voc_root, tmp_path / "a.zarr").exit_code == 0
    assert prepare(voc_root, tmp_path / "b.zarr", "--skip-bad").exit_code == 0
    a, b = st.open_store(str(tmp_path / "a.zarr")), st.open_store(str(tmp_path / "b.zarr"))
    assert a.fingerprint == b.fingerprint and b.meta["extra"]["skipped"] == {}


def test_skipping_refills_a_capped_reader(voc_root: Path) -> None:
    """With num_images=1 the first sample is bad: the check goes on until the cap holds good ones."""
    truncate(voc_root / "VOCdevkit/VOC2012/JPEGImages" / f"{VOC_NAMES[0]}.jpg")
    built: list[list[str]] = []

    def build(skip_ids: list[str]) -> Dataset:
        built.append(skip_ids)
        return build_dataset("voc", split="train", root=str(voc_root), num_images=1, skip_ids=skip_ids)

    dataset, skipped = exclude_bad_samples(build, progress=False)
    assert list(skipped) == [f"voc-{VOC_NAMES[0]}"]
    assert dataset.ids == [f"voc-{VOC_NAMES[1]}"]
    assert built == [[], [f"voc-{VOC_NAMES[0]}"]]


def test_a_reader_without_ids_cannot_skip() -> None:
    class Broken:
        name, split, num_classes, class_names = "broken", "train", 1, ["x"]

        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int) -> None:
            raise MaxaError("sample 0 is unreadable")

        def config(self) -> dict:
            return {}

    with pytest.raises(MaxaError, match="lists no ids, so it cannot skip"):
        exclude_bad_samples(lambda skip: Broken(), progress=False)


@pytest.mark.slow  # builds a timm backbone
def test_extract_joins_a_store_with_skipped_samples(voc_root: Path, tmp_path: Path) -> None:
    truncate(voc_root / "VOCdevkit/VOC2012/JPEGImages" / f"{VOC_NAMES[0]}.jpg")
    targets, features = tmp_path / "t.zarr", tmp_path / "f.zarr"
    assert prepare(voc_root, targets, "--skip-bad").exit_code == 0
    model = [
        "--model",
        "vit_tiny_patch16_224",
        "--weights",
        "random-init",
        "--input-size",
        "32",
        "--layers=-1",
    ]
    args = ["extract", "--targets", str(targets), *model, "--out", str(features)]
    result = invoke(*args, catch_exceptions=True)
    assert result.exit_code == 0, result.output
    assert st.open_store(str(features), "features").ids() == [f"voc-{VOC_NAMES[1]}"]
