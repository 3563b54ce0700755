"""Target stores are portable and content-checked (extract/targets.py): resolved roots, per-sample
content digests, `--root` for data kept elsewhere, crash-safe prepare."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from maxa.core.errors import MaxaError
from maxa.core.sample import Sample
from maxa.core.store import open_store
from maxa.extract.config import ExtractConfig
from maxa.extract.features import extract
from maxa.extract.targets import PrepareConfig, dataset_from_targets, image_digest, prepare
from tests.extract.datasets.dataset_files import write_noise_pngs


def _images(folder: Path, n: int = 5, seed: int = 0) -> Path:
    return write_noise_pngs(folder, n, seed * 1000)


def _prepare(root: str, out: Path) -> str:
    config = PrepareConfig(dataset="folder", split="train", label_size=8, shard_size=2, root=root)
    prepare(config, str(out), progress=False)
    return str(out)


def test_digest_matches_an_independent_blake2b() -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    semantic = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    h = hashlib.blake2b(digest_size=16)
    h.update(b"image:|u1:(2, 3, 3);" + image.tobytes())
    got = image_digest(Sample("x", image, {"semantic": semantic}).image)
    assert got.tobytes() == h.digest()


def test_root_stored_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _images(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    url = _prepare("data", tmp_path / "t.zarr")  # typed relative
    store = open_store(url, "targets")
    assert store.provenance["root"] == str((tmp_path / "data").resolve())
    monkeypatch.chdir("/")
    assert len(dataset_from_targets(store)) == 5  # readable from any folder


def test_swapped_image_refused_naming_the_sample(tmp_path: Path) -> None:
    root = _images(tmp_path / "data")
    store = open_store(_prepare(str(root), tmp_path / "t.zarr"), "targets")
    _images(tmp_path / "other", seed=9)
    shutil.copy(tmp_path / "other" / "im3.png", root / "im3.png")  # same name and size, other pixels
    dataset = dataset_from_targets(store)
    assert dataset[2].id == "im2.png"
    with pytest.raises(MaxaError, match=r"sample 'im3.png' under .*data differs from what prepare read"):
        dataset[3]


def test_root_elsewhere_checked_by_content(tmp_path: Path) -> None:
    root = _images(tmp_path / "data")
    store = open_store(_prepare(str(root), tmp_path / "t.zarr"), "targets")
    copy = tmp_path / "colleague" / "data"
    shutil.copytree(root, copy)
    shutil.rmtree(root)
    with pytest.raises(MaxaError, match=r"does not exist here; pass --root"):
        dataset_from_targets(store)
    dataset = dataset_from_targets(store, str(copy))
    assert [dataset[i].id for i in range(len(dataset))] == store.ids()
    os.remove(copy / "im0.png")
    shutil.copy(copy / "im1.png", copy / "im0.png")
    with pytest.raises(MaxaError, match=r"sample 'im0.png' under .*colleague/data differs"):
        dataset_from_targets(store, str(copy))[0]


def test_root_refused_for_a_store_without_digests(tmp_path: Path) -> None:
    """A format-1 target store has no content digests: `--root` data cannot be checked, so is refused."""
    import zarr

    root = _images(tmp_path / "data")
    url = _prepare(str(root), tmp_path / "t.zarr")
    del zarr.open_group(url, mode="a")["digests"]  # what a format-1 prepare wrote
    store = open_store(url, "targets")
    assert store.digests() is None
    assert len(dataset_from_targets(store)) == 5  # its own root: read as prepared
    with pytest.raises(MaxaError, match=r"store .*t.zarr has no content digests.*re-run `maxa prepare`"):
        dataset_from_targets(store, str(root))


def test_extract_with_root_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _images(tmp_path / "data", n=3)
    targets = _prepare(str(root), tmp_path / "t.zarr")
    moved = tmp_path / "moved"
    shutil.move(str(root), str(moved))
    config = ExtractConfig(
        model="vit_tiny_patch16_224",
        weights="random-init",
        input_size=32,
        layers=[-1],
        batch_size=2,
        shard_size=2,
    )
    store = extract(config, targets, str(tmp_path / "f.zarr"), progress=False, root=str(moved))
    assert store.complete and store.ids() == ["im0.png", "im1.png", "im2.png"]
    assert (
        store.provenance["dataset"]["content"]
        == hashlib.sha256(np.asarray(open_store(targets).digests()).tobytes()).hexdigest()[:16]
    )
    # A read-only store reads its digests once; callers get copies they may change.
    opened = open_store(targets)
    first = opened.digests()
    assert first is not None
    first[:] = 0
    monkeypatch.setattr(opened, "_node", lambda name: pytest.fail(f"{name} read again"))
    again = opened.digests()
    assert again is not None and again.any()


def test_prepare_interrupted_says_how_to_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _images(tmp_path / "data", n=6)
    import maxa.extract.targets as targets

    real = targets._label_arrays
    calls = {"n": 0}

    def dying(sample, *args):
        calls["n"] += 1
        if calls["n"] == 4:  # inside the second shard
            raise KeyboardInterrupt
        return real(sample, *args)

    monkeypatch.setattr(targets, "_label_arrays", dying)
    out = tmp_path / "t.zarr"
    with pytest.raises(
        MaxaError, match=r"interrupted: 1 of 3 shards of .*t.zarr are written and kept; re-run"
    ):
        _prepare(str(root), out)
    monkeypatch.setattr(targets, "_label_arrays", real)
    store = open_store(_prepare(str(root), out), "targets")
    fresh = open_store(_prepare(str(root), tmp_path / "fresh.zarr"), "targets")
    assert store.fingerprint == fresh.fingerprint
    np.testing.assert_array_equal(store.read("image"), fresh.read("image"))


def test_prepare_reads_the_first_sample_once_to_size_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import maxa.extract.targets as targets

    root = _images(tmp_path / "data", n=3)
    real = targets._sample
    reads: list[int] = []

    def counted(dataset, index, skip_bad):
        reads.append(index)
        return real(dataset, index, skip_bad)

    monkeypatch.setattr(targets, "_sample", counted)
    _prepare(str(root), tmp_path / "t.zarr")
    assert reads == [0, 0, 1, 2]  # sizing the store, then writing every sample once


def test_unwritable_out_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import maxa.extract.targets as targets

    root = _images(tmp_path / "data", n=2)
    blocker = tmp_path / "file"
    blocker.write_text("x")

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dataset was opened before the output was checked")

    monkeypatch.setattr(targets, "open_dataset", no_reading)
    with pytest.raises(MaxaError, match=r"store .*file/t.zarr cannot be written"):
        _prepare(str(root), blocker / "t.zarr")


def test_same_data_elsewhere_gives_the_same_store_fingerprint(tmp_path: Path) -> None:
    root = _images(tmp_path / "data")
    shutil.copytree(root, tmp_path / "copy")
    a = open_store(_prepare(str(root), tmp_path / "a.zarr"))
    b = open_store(_prepare(str(tmp_path / "copy"), tmp_path / "b.zarr"))
    assert a.provenance["root"] != b.provenance["root"]
    assert a.fingerprint == b.fingerprint  # where the data sat is not what the store holds
    np.testing.assert_array_equal(a.digests(), b.digests())


def test_digests_survive_hdf5_round_trip(tmp_path: Path) -> None:
    from maxa.extract.interchange import export_hdf5, import_hdf5

    root = _images(tmp_path / "data")
    store = open_store(_prepare(str(root), tmp_path / "t.zarr"))
    export_hdf5(store.url, tmp_path / "t.h5", progress=False)
    back = import_hdf5(tmp_path / "t.h5", str(tmp_path / "back.zarr"), progress=False)
    np.testing.assert_array_equal(back.digests(), store.digests())
    assert back.fingerprint == store.fingerprint and back.problems() == []
    assert "digests" in back.layout()


def test_verified_reader_pickles_for_loader_workers(tmp_path: Path) -> None:
    import pickle

    root = _images(tmp_path / "data")
    dataset = dataset_from_targets(open_store(_prepare(str(root), tmp_path / "t.zarr")))
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy[1].id == "im1.png" and copy.name == "folder" and len(copy) == 5


def test_target_provenance_round_trips_and_names_missing_fields(tmp_path: Path) -> None:
    from maxa.core.provenance import TargetProvenance

    root = _images(tmp_path / "data")
    store = open_store(_prepare(str(root), tmp_path / "t.zarr"))
    record = TargetProvenance.from_dict(store.provenance, "t")
    assert record.to_dict() == store.provenance
    assert record.dataset.root == str(root.resolve()) and record.dataset.name == "folder"
    broken = {k: v for k, v in store.provenance.items() if k != "dataset_fingerprint"}
    with pytest.raises(MaxaError, match=r"t provenance lacks required field\(s\) dataset_fingerprint"):
        TargetProvenance.from_dict(broken, "t")
