"""Fixtures: each writes one tiny dataset in its real on-disk layout and returns the root."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_files import (
    DAVIS_SEQUENCES,
    STUFF_VALUES,
    davis_objects,
    noise,
    write_coco,
    write_grey_png,
    write_jpeg,
    write_nyu_mat,
    write_palette_png,
    write_voc_tree,
)
from scipy.io import savemat


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    return write_coco(tmp_path / "coco")


@pytest.fixture
def stuff_root(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    for image_id in (139, 285):
        stem = f"{image_id:012d}"
        write_jpeg(root / "val2017" / f"{stem}.jpg", noise(20, 30, image_id))
        label = np.zeros((20, 30), dtype=np.uint8)
        for k, value in enumerate(STUFF_VALUES):
            label[:, k * 6 : (k + 1) * 6] = value
        write_grey_png(root / "stuffthingmaps_trainval2017" / "val2017" / f"{stem}.png", label)
    return root


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_voc_tree(root / "VOCdevkit" / "VOC2012")
    return root


@pytest.fixture
def ade_root(tmp_path: Path) -> Path:
    root = tmp_path / "ADEChallengeData2016"
    for split, folder in (("train", "training"), ("val", "validation")):
        for k in (2, 1):
            stem = f"ADE_{split}_{k:08d}"
            write_jpeg(root / "images" / folder / f"{stem}.jpg", noise(16, 20, k))
            label = np.zeros((16, 20), dtype=np.uint8)
            label[:, 5:10], label[:, 10:15], label[:, 15:] = 1, 150, 13
            write_grey_png(root / "annotations" / folder / f"{stem}.png", label)
    return root


@pytest.fixture
def nyu_root(tmp_path: Path) -> Path:
    root = tmp_path / "nyu"
    write_nyu_mat(root / "nyu_depth_v2_labeled.mat")
    savemat(root / "splits.mat", {"trainNdxs": np.array([[1], [3], [4]]), "testNdxs": np.array([[2]])})
    return root


@pytest.fixture
def davis_root(tmp_path: Path) -> Path:
    root = tmp_path / "DAVIS"
    for s, (sequence, frames) in enumerate(DAVIS_SEQUENCES.items()):
        for frame in range(frames):
            name = f"{sequence}/{frame:05d}"
            write_jpeg(root / "JPEGImages" / "480p" / f"{name}.jpg", noise(18, 24, 10 * s + frame))
            write_palette_png(root / "Annotations" / "480p" / f"{name}.png", davis_objects(sequence, frame))
    sets = root / "ImageSets" / "2017"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("bear\ncar-shadow\n")
    (sets / "val.txt").write_text("dog\n")
    return tmp_path
