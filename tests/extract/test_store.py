"""Tests for the store contract (extract/store.py): layout, completeness, resume and refusal rules."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import zarr

from maxa.extract.errors import MaxaError
from maxa.extract.store import (
    ATTR_KEY,
    DONE,
    FORMAT_VERSION,
    IDS,
    ArraySpec,
    Store,
    create_or_resume,
    fingerprint,
    open_store,
)

PROVENANCE = {
    "model": "vit_tiny",
    "input_size": 128,
    "layers": [-1],
    "created": "2024-01-01T00:00:00+00:00",
    "maxa_version": "0.1.0",
}
ARRAYS = {
    "layer_11": ArraySpec(item_shape=(4, 4, 8), dtype="float16", dims=("image", "y", "x", "channel")),
    "label": ArraySpec(item_shape=(6, 6), dtype="uint8", dims=("image", "y", "x"), compress=False),
}


def _ids(n: int) -> list[str]:
    return [f"img_{i:03d}" for i in range(n)]


def _blocks(store: Store, shard: int, seed: int = 0) -> dict[str, np.ndarray]:
    start, stop = store.shard_range(shard)
    rng = np.random.default_rng(seed + shard)
    return {
        "layer_11": rng.standard_normal((stop - start, 4, 4, 8)).astype(np.float16),
        "label": rng.integers(0, 5, size=(stop - start, 6, 6), dtype=np.uint8),
    }


def _create(url: str, n: int = 5, shard_size: int = 2, **kwargs) -> Store:
    options = {
        "kind": "features",
        "provenance": PROVENANCE,
        "ids": _ids(n),
        "arrays": ARRAYS,
        "shard_size": shard_size,
    }
    options.update(kwargs)
    return create_or_resume(url, **options)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return str(tmp_path / "store.zarr")


def _fill(store: Store) -> dict[str, np.ndarray]:
    """Write every shard; return the full arrays written."""
    written: dict[str, list[np.ndarray]] = {"layer_11": [], "label": []}
    for shard in range(store.num_shards):
        blocks = _blocks(store, shard)
        store.write_shard(shard, blocks)
        for name, block in blocks.items():
            written[name].append(block)
    return {name: np.concatenate(parts) for name, parts in written.items()}


# ---------------------------------------------------------------- layout


def test_create_layout_chunks_shards_dtypes_dims(url: str) -> None:
    store = _create(url, n=5, shard_size=2)
    feats, labels = store.group["layer_11"], store.group["label"]
    assert feats.shape == (5, 4, 4, 8)
    assert feats.chunks == (1, 4, 4, 8)
    assert feats.shards == (2, 4, 4, 8)
    assert feats.dtype == np.dtype("float16")
    assert tuple(feats.metadata.dimension_names) == ("image", "y", "x", "channel")
    assert labels.chunks == (1, 6, 6)
    assert labels.shards == (2, 6, 6)
    assert labels.dtype == np.dtype("uint8")
    assert tuple(labels.metadata.dimension_names) == ("image", "y", "x")
    assert store.array_names() == ["label", "layer_11"]
    assert store.kind == "features"
    assert store.shard_size == 2
    assert store.num_items == len(store) == 5
    assert store.num_shards == 3
    assert store.fingerprint == fingerprint(PROVENANCE)
    assert store.provenance == PROVENANCE


def test_compression_follows_spec(url: str) -> None:
    store = _create(url)
    assert len(store.group["layer_11"].compressors) == 1
    assert store.group["label"].compressors == ()


def test_ids_round_trip(url: str) -> None:
    ids = ["a", "bb", "ccc/with-slash", "ünïcode", "x" * 40]
    store = _create(url, ids=ids)
    assert store.ids() == ids
    assert open_store(url, require_complete=False).ids() == ids


def test_unknown_array_name_refused(url: str) -> None:
    store = _create(url)
    with pytest.raises(MaxaError, match="no array 'nope'"):
        store.array("nope")
    assert store.array("label").shape == (5, 6, 6)


def test_shard_size_below_one_refused(url: str) -> None:
    with pytest.raises(MaxaError, match="shard size"):
        _create(url, shard_size=0)


# ---------------------------------------------------------------- writing and completeness


def test_write_shard_readable_with_plain_zarr(url: str) -> None:
    store = _create(url, n=5, shard_size=2)
    expected = _fill(store)
    group = zarr.open_group(url, mode="r")
    np.testing.assert_array_equal(group["layer_11"][:], expected["layer_11"])
    np.testing.assert_array_equal(group["label"][:], expected["label"])
    assert group[DONE][:].tolist() == [True, True, True]
    assert [str(x) for x in group[IDS][:]] == _ids(5)
    assert group.attrs[ATTR_KEY]["format_version"] == FORMAT_VERSION


def test_completeness_tracks_done_flags(url: str) -> None:
    store = _create(url, n=6, shard_size=2)
    assert not store.complete
    assert store.pending_shards() == [0, 1, 2]
    store.write_shard(1, _blocks(store, 1))
    assert store.pending_shards() == [0, 2]
    assert store.done_shards().tolist() == [False, True, False]
    assert not store.complete
    with pytest.raises(MaxaError, match="2 of 3 shards"):
        store.require_complete()
    store.write_shard(0, _blocks(store, 0))
    store.write_shard(2, _blocks(store, 2))
    assert store.complete
    assert store.pending_shards() == []
    store.require_complete()  # no error


def test_incomplete_store_refused_by_open_store(url: str) -> None:
    store = _create(url, n=4, shard_size=2)
    store.write_shard(0, _blocks(store, 0))
    with pytest.raises(MaxaError, match="incomplete") as info:
        open_store(url)
    assert url in str(info.value)
    opened = open_store(url, require_complete=False)
    assert opened.pending_shards() == [1]


def test_last_partial_shard(url: str) -> None:
    store = _create(url, n=5, shard_size=2)
    assert store.num_shards == 3
    assert [store.shard_range(i) for i in range(3)] == [(0, 2), (2, 4), (4, 5)]
    with pytest.raises(ValueError, match="expected 1"):
        store.write_shard(2, {"label": np.zeros((2, 6, 6), dtype=np.uint8)})
    assert store.pending_shards() == [0, 1, 2]
    expected = _fill(store)
    opened = open_store(url, "features")
    np.testing.assert_array_equal(opened.array("label")[4:5], expected["label"][4:5])
    np.testing.assert_array_equal(opened.array("layer_11")[:], expected["layer_11"])


def test_set_attr_persists(url: str) -> None:
    store = _create(url)
    store.set_attr("stats", {"mean": 0.5})
    assert open_store(url, require_complete=False).meta["extra"] == {"stats": {"mean": 0.5}}


# ---------------------------------------------------------------- resume, refusal, overwrite


def test_resume_same_provenance_keeps_written_shards(url: str) -> None:
    store = _create(url, n=5, shard_size=2)
    first = _blocks(store, 0)
    store.write_shard(0, first)
    # A later run: only run-specific fields change, so the fingerprint (and the store) is the same.
    later = {**PROVENANCE, "created": "2025-06-01T12:00:00+00:00", "maxa_version": "0.2.0"}
    resumed = _create(url, n=5, shard_size=2, provenance=later)
    assert resumed.fingerprint == store.fingerprint
    assert resumed.pending_shards() == [1, 2]
    np.testing.assert_array_equal(resumed.array("layer_11")[0:2], first["layer_11"])
    np.testing.assert_array_equal(resumed.array("label")[0:2], first["label"])


def test_different_provenance_refused_naming_key(url: str) -> None:
    _create(url)
    with pytest.raises(MaxaError, match="input_size") as info:
        _create(url, provenance={**PROVENANCE, "input_size": 224})
    message = str(info.value)
    assert url in message
    assert "128" in message and "224" in message
    assert "model" not in message  # only the differing key is named


def test_different_ids_refused(url: str) -> None:
    _create(url, n=5)
    with pytest.raises(MaxaError, match="different sample ids"):
        _create(url, n=5, ids=[*_ids(4), "other"])


def test_existing_non_maxa_group_refused(url: str) -> None:
    zarr.open_group(url, mode="w")
    with pytest.raises(MaxaError, match="not a maxa store"):
        _create(url)
    with pytest.raises(MaxaError, match="not a maxa store"):
        open_store(url)


def test_overwrite_replaces(url: str) -> None:
    store = _create(url, n=4, shard_size=2)
    _fill(store)
    new = _create(url, n=3, shard_size=3, provenance={**PROVENANCE, "input_size": 224}, overwrite=True)
    assert new.provenance["input_size"] == 224
    assert new.num_items == 3
    assert new.num_shards == 1
    assert new.pending_shards() == [0]
    reopened = open_store(url, require_complete=False)
    assert reopened.fingerprint == fingerprint({**PROVENANCE, "input_size": 224})
    assert not np.any(reopened.array("label")[:])  # old data is gone (fill value)


def test_newer_format_version_refused(url: str) -> None:
    store = _create(url)
    _fill(store)
    group = zarr.open_group(url, mode="r+")
    group.attrs[ATTR_KEY] = {**group.attrs[ATTR_KEY], "format_version": FORMAT_VERSION + 1}
    with pytest.raises(MaxaError, match="newer"):
        open_store(url)


def test_open_store_wrong_kind_refused(url: str) -> None:
    _fill(_create(url))
    assert open_store(url, "features").kind == "features"
    with pytest.raises(MaxaError, match="expected a targets store"):
        open_store(url, "targets")


def test_open_missing_store_refused(tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing.zarr")
    with pytest.raises(MaxaError, match="no maxa store") as info:
        open_store(missing)
    assert missing in str(info.value)


# ---------------------------------------------------------------- fingerprint


def test_fingerprint_ignores_volatile_fields() -> None:
    base = fingerprint(PROVENANCE)
    assert fingerprint({**PROVENANCE, "created": "another day"}) == base
    assert fingerprint({**PROVENANCE, "maxa_version": "9.9"}) == base
    stripped = {k: v for k, v in PROVENANCE.items() if k not in ("created", "maxa_version")}
    assert fingerprint(stripped) == base


def test_fingerprint_changes_with_other_keys() -> None:
    base = fingerprint(PROVENANCE)
    assert fingerprint({**PROVENANCE, "input_size": 224}) != base
    assert fingerprint({**PROVENANCE, "layers": [-2]}) != base
    assert fingerprint({**PROVENANCE, "extra_key": 1}) != base
    # Key order does not matter.
    assert fingerprint(dict(reversed(list(PROVENANCE.items())))) == base


# ---------------------------------------------------------------- fsspec URLs


def test_memory_url_create_and_open() -> None:
    url = f"memory://maxa-test-{uuid.uuid4().hex}/store.zarr"
    store = _create(url, n=3, shard_size=2)
    expected = _fill(store)
    opened = open_store(url, "features")
    assert opened.ids() == _ids(3)
    assert opened.complete
    np.testing.assert_array_equal(opened.array("layer_11")[:], expected["layer_11"])
    resumed = _create(url, n=3, shard_size=2)
    assert resumed.pending_shards() == []
