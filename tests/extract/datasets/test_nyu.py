"""NYU-Depth v2 labelled .mat (HDF5 v7.3): axis order, splits, class maps, instance pairs, depth masks."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from dataset_files import NYU_NAMES, nyu_arrays, write_nyu_mat
from scipy.io import savemat

from maxa.core.dataset_facts import EIGEN_CROP, eigen_crop_mask
from maxa.core.errors import MaxaError
from maxa.extract.datasets import build_dataset, dataset_fingerprint
from maxa.extract.datasets.nyu import NYU40_NAMES, NyuDepthV2Dataset, pair_ids, valid_depth_mask


def test_fixture_is_a_matlab_v73_file(nyu_root: Path) -> None:
    path = nyu_root / "nyu_depth_v2_labeled.mat"
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with h5py.File(path, "r") as h5:
        assert h5["images"].shape == (4, 3, 64, 48) and h5["labels"].dtype == np.uint16


def test_official_splits_pick_the_images(nyu_root: Path) -> None:
    train = NyuDepthV2Dataset(split="train", root=str(nyu_root))
    assert train.ids == ["nyu-0001", "nyu-0003", "nyu-0004"]
    assert NyuDepthV2Dataset(split="test", root=str(nyu_root)).ids == ["nyu-0002"]
    assert len(NyuDepthV2Dataset(split="all", root=str(nyu_root / "nyu_depth_v2_labeled.mat"))) == 4


def test_maps_come_back_in_image_orientation(nyu_root: Path) -> None:
    truth = nyu_arrays()
    sample = NyuDepthV2Dataset(split="train", root=str(nyu_root))[1]  # image 3 of the file
    assert sample.id == "nyu-0003"
    np.testing.assert_array_equal(sample.image, truth["images"][2])
    depth = sample.targets["depth"]
    assert depth.dtype == np.float32 and depth.shape == (48, 64)
    np.testing.assert_array_equal(depth, truth["depths"][2])
    raw = NyuDepthV2Dataset(split="train", root=str(nyu_root), depth="raw")[1].targets["depth"]
    assert (raw[:4] == 0).all() and (raw[4:] > 0).all()


def test_instances_come_from_class_and_instance_pairs(nyu_root: Path) -> None:
    sample = NyuDepthV2Dataset(split="test", root=str(nyu_root))[0]
    instances = sample.targets["instances"]
    assert instances.dtype == np.int32
    # (5, 1), (5, 2) and (300, 1) are three objects although two share instance number 1
    assert instances[10, 10] != instances[10, 35] != instances[30, 10] != instances[10, 10]
    assert sorted(np.unique(instances).tolist()) == [0, 1, 2, 3]
    assert instances[30, 35] == 0  # class 21 has no instance number
    assert sample.targets["boxes"].tolist() == [[5, 5, 20, 20], [30, 5, 45, 20], [5, 25, 20, 40]]


def test_raw_labels_are_capped_without_a_class_map(nyu_root: Path) -> None:
    ds = NyuDepthV2Dataset(split="test", root=str(nyu_root))
    assert ds.num_classes == 254 and ds.class_names[:6] == list(NYU_NAMES)
    semantic = ds[0].targets["semantic"]
    assert semantic[10, 10] == 4 and semantic[30, 35] == 20  # raw 5 and 21
    assert semantic[30, 10] == 255 and semantic[0, 0] == 255  # raw 300 is beyond uint8, raw 0 unlabelled
    small = NyuDepthV2Dataset(split="test", root=str(nyu_root), num_classes=10)
    assert small.num_classes == 10 and small[0].targets["semantic"][30, 35] == 255


@pytest.mark.parametrize("suffix", [".mat", ".txt"])
def test_class_map_gives_the_40_class_set(nyu_root: Path, suffix: str) -> None:
    mapping = (np.arange(894) % 40) + 1  # raw r -> class ((r - 1) % 40) + 1
    mapping[20] = 0  # raw 21 -> no class
    if suffix == ".mat":
        savemat(nyu_root / "classMapping40.mat", {"mapClass": mapping[None, :].astype(np.float64)})
    else:
        (nyu_root / "classMapping40.txt").write_text(" ".join(map(str, mapping)))
    ds = NyuDepthV2Dataset(split="test", root=str(nyu_root), class_map=f"classMapping40{suffix}")
    assert ds.num_classes == 40 and ds.class_names == list(NYU40_NAMES)
    semantic = ds[0].targets["semantic"]
    assert semantic[10, 10] == 4 and semantic[30, 10] == (300 - 1) % 40 and semantic[30, 35] == 255
    assert semantic[0, 0] == 255
    config = ds.config()
    assert config["class_map"] == f"classMapping40{suffix}"  # relative to root: the config is portable
    assert dataset_fingerprint(build_dataset("nyu", root=str(nyu_root), **config)) == dataset_fingerprint(ds)


def test_eigen_crop_and_valid_depth() -> None:
    top, bottom, left, right = EIGEN_CROP
    full = eigen_crop_mask()
    assert (
        full.sum() == (bottom - top) * (right - left)
        and full[45, 41]
        and not full[44, 41]
        and not full[45, 601]
    )
    half = eigen_crop_mask((240, 320))
    assert half.sum() == 213 * 280 and half[23, 21] and not half[22, 21]
    depth = np.full((480, 640), 3.0, dtype=np.float32)
    depth[100, 100], depth[101, 100], depth[102, 100] = 0.0, 12.0, np.nan
    valid = valid_depth_mask(depth)
    assert valid.sum() == full.sum() - 3
    assert valid_depth_mask(depth, eigen_crop=False).sum() == 480 * 640 - 3


def test_survives_pickling_for_dataloader_workers(nyu_root: Path) -> None:
    ds = NyuDepthV2Dataset(split="train", root=str(nyu_root))
    first = ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[0].image, first.image)


def test_missing_split_file_and_bad_files(nyu_root: Path, tmp_path: Path) -> None:
    (nyu_root / "splits.mat").unlink()
    with pytest.raises(MaxaError, match=r"needs the official split file .*splits\.mat .*-o splits=PATH"):
        NyuDepthV2Dataset(split="train", root=str(nyu_root))
    with pytest.raises(MaxaError, match="split must be one of train, test, all"):
        NyuDepthV2Dataset(split="val", root=str(nyu_root))
    with pytest.raises(MaxaError, match=r"missing file .*nyu_depth_v2_labeled\.mat"):
        NyuDepthV2Dataset(split="all", root=str(tmp_path))
    v5 = tmp_path / "v5" / "nyu_depth_v2_labeled.mat"
    v5.parent.mkdir()
    savemat(v5, {"images": np.zeros((2, 2))})
    with pytest.raises(MaxaError, match=r"is not a MATLAB v7.3 \(HDF5\) file"):
        NyuDepthV2Dataset(split="all", root=str(v5.parent))
    wrong = nyu_arrays()
    bad = tmp_path / "bad" / "nyu_depth_v2_labeled.mat"
    write_nyu_mat(bad, wrong)
    with h5py.File(bad, "r+") as h5:
        del h5["labels"]
        h5["labels"] = wrong["labels"]  # not transposed: (N, H, W)
    with pytest.raises(MaxaError, match=r"'labels' has shape \(4, 48, 64\), expected \(N, W, H\)"):
        NyuDepthV2Dataset(split="all", root=str(bad.parent))


def test_pair_ids_number_sorted_pairs() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        labels = (rng.integers(0, 900, (30, 40)) // 7 * 7).astype(np.uint16)
        numbers = rng.integers(0, 5, (30, 40)).astype(np.uint8)
        valid = (labels > 0) & (numbers > 0)
        pairs = labels[valid].astype(np.int64) * 256 + numbers[valid]
        expected = np.zeros(labels.shape, np.int32)
        expected[valid] = np.unique(pairs, return_inverse=True)[1].ravel() + 1
        np.testing.assert_array_equal(pair_ids(labels, numbers), expected)
    assert not pair_ids(np.zeros((3, 3), np.uint16), np.ones((3, 3), np.uint8)).any()
