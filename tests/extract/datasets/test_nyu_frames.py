"""The 47k-frame NYU set in its distributed layout: tar archives of per-frame HDF5 files (`rgb`, `depth`)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from maxa.core.errors import MaxaError
from maxa.extract.datasets import build_dataset, dataset_fingerprint
from maxa.extract.datasets.nyu_frames import NyuFramesDataset

H, W = 6, 8


def frame_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5["rgb"] = rng.integers(0, 256, (3, H, W), dtype=np.uint8)
        depth = rng.uniform(0.5, 12.0, (H, W)).astype(np.float32)
        depth[0, 0] = np.nan
        h5["depth"] = depth
    return buffer.getvalue()


def write_archive(path: Path, members: list[tuple[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, blob in members:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


@pytest.fixture
def frames_root(tmp_path: Path) -> Path:
    """Two train archives (members deliberately not in name order, plus a non-frame file) and one val."""
    root = tmp_path / "nyu_depth_v2"
    data = root / "data"
    write_archive(
        data / "train-000000.tar",
        [
            ("train/kitchen_0002/00009.h5", frame_bytes(0)),
            ("train/kitchen_0002/README.txt", b"not a frame"),
            ("train/bedroom_0001/00001.h5", frame_bytes(1)),
        ],
    )
    write_archive(data / "train-000001.tar", [("train/office_0003/00004.h5", frame_bytes(2))])
    write_archive(data / "val-000000.tar", [("val/official/00001.h5", frame_bytes(3))])
    return root


def loading_script_order(root: Path, prefix: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The Hugging Face loading script's numbering, written again: archives by number, then members in
    archive order, `.h5` only; rgb transposed to (H, W, 3)."""
    frames = []
    for archive in sorted((root / "data").glob(f"{prefix}-*.tar")):
        with tarfile.open(archive) as tar:
            for member in tar:
                if member.name.endswith(".h5"):
                    blob = tar.extractfile(member).read()  # type: ignore[union-attr]
                    with h5py.File(io.BytesIO(blob), "r") as h5:
                        frames.append((np.asarray(h5["rgb"]).transpose(1, 2, 0), np.asarray(h5["depth"])))
    return frames


def test_frames_come_in_the_loading_scripts_order(frames_root: Path) -> None:
    reader = NyuFramesDataset(split="train", root=str(frames_root))
    expected = loading_script_order(frames_root, "train")
    assert len(reader) == len(expected) == 3
    assert reader.ids == ["nyu47k-train-00000", "nyu47k-train-00001", "nyu47k-train-00002"]
    for index, (rgb, depth) in enumerate(expected):
        sample = reader[index]
        np.testing.assert_array_equal(sample.image, rgb)
        np.testing.assert_array_equal(reader.image(index), rgb)
        stored = sample.targets["depth"]
        assert stored.dtype == np.float32 and stored[0, 0] == 0  # NaN -> 0 (invalid)
        np.testing.assert_array_equal(stored.ravel()[1:], depth.ravel()[1:])
    # the first member of train-000000.tar is frame 0 although its name sorts after bedroom_0001
    np.testing.assert_array_equal(reader[0].image, expected[0][0])


def test_deaps_ranges_are_start_and_num_images(frames_root: Path) -> None:
    held_out = NyuFramesDataset(split="train", root=str(frames_root), start=1, num_images=1)
    assert held_out.ids == ["nyu47k-train-00001"]
    test = NyuFramesDataset(split="validation", root=str(frames_root))
    assert test.ids == ["nyu47k-validation-00000"]
    np.testing.assert_array_equal(test[0].image, loading_script_order(frames_root, "val")[0][0])
    again = build_dataset("nyu_frames", root=str(frames_root), **held_out.config())
    assert again.ids == held_out.ids and dataset_fingerprint(again) == dataset_fingerprint(held_out)
    assert held_out.config()["archives"] == {"train-000000.tar": 2, "train-000001.tar": 1}
    write_archive(frames_root / "data" / "train-000002.tar", [("train/y/00002.h5", frame_bytes(4))])
    with pytest.raises(MaxaError, match="another download"):
        build_dataset("nyu_frames", root=str(frames_root), **held_out.config())


def test_layout_errors_name_the_file(frames_root: Path, tmp_path: Path) -> None:
    with pytest.raises(MaxaError, match=r"no val-NNNNNN\.tar archives in"):
        NyuFramesDataset(split="validation", root=str(tmp_path))
    with pytest.raises(MaxaError, match="split must be one of train, validation"):
        NyuFramesDataset(split="test", root=str(frames_root))
    write_archive(frames_root / "data" / "train-000002.tar", [("train/x/00001.h5", b"garbage")])
    reader = NyuFramesDataset(split="train", root=str(frames_root))
    with pytest.raises(MaxaError, match=r"train-000002.tar member train/x/00001.h5 is not an HDF5 file"):
        reader[3]
    (frames_root / "data" / "train-000003.tar").write_bytes(b"not a tar")
    with pytest.raises(MaxaError, match=r"train-000003\.tar is not a readable tar archive"):
        NyuFramesDataset(split="train", root=str(frames_root))
