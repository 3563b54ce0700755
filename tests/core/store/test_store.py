"""Tests for the store contract (maxa.core.store): layout, completeness, resume and refusal rules."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from maxa.core.errors import MaxaError
from maxa.core.store import (
    ATTR_KEY,
    CODECS,
    DEFAULT_CODEC,
    DONE,
    FAST_PIPELINE,
    FEATURE_CODEC,
    FORMAT_VERSION,
    IDS,
    ArraySpec,
    Store,
    create_or_resume,
    fast_reads_available,
    fingerprint,
    open_store,
)
from tests.kit.cli import command_env
from tests.kit.stores import BACKENDS

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


@pytest.fixture(params=sorted(BACKENDS))
def url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The store's URL on each backend (tests.kit.stores.BACKENDS): the contract holds on all of them."""
    return BACKENDS[request.param](tmp_path, monkeypatch)


@pytest.fixture
def path(tmp_path: Path) -> str:
    """A local store folder, for tests that look at or damage the files themselves."""
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


def test_codec_defaults_follow_dtype_and_spec(url: str) -> None:
    arrays = {
        **ARRAYS,
        "instances": ArraySpec(item_shape=(6, 6), dtype="int32", dims=("image", "y", "x")),
        "zstd_feats": ArraySpec(
            item_shape=(4, 4, 8), dtype="float16", dims=ARRAYS["layer_11"].dims, codec="zstd"
        ),
    }
    store = _create(url, arrays=arrays)
    # float16 features: the measured default; other dtypes: Blosc-lz4; compress=False: raw.
    assert store.spec("layer_11").codec == FEATURE_CODEC == "none"
    assert store.spec("instances").codec == DEFAULT_CODEC == "blosc-lz4"
    # every array's chunks end in the core crc32c codec, after its compressor (if any)
    assert [type(c).__name__ for c in store.group["instances"].compressors] == ["BloscCodec", "Crc32cCodec"]
    assert [type(c).__name__ for c in store.group["label"].compressors] == ["Crc32cCodec"]
    assert store.spec("label").codec == "none"
    assert store.spec("zstd_feats").codec == "zstd"
    assert store.spec("layer_11").dims == ("image", "y", "x", "channel")


@pytest.mark.filterwarnings("ignore::UserWarning")  # BitRound is a numcodecs codec outside the v3 spec
@pytest.mark.parametrize("codec", sorted(CODECS))
def test_every_registered_codec_round_trips(url: str, codec: str) -> None:
    spec = ArraySpec(item_shape=(4, 4, 8), dtype="float16", dims=("image", "y", "x", "channel"), codec=codec)
    store = _create(url, n=3, shard_size=2, arrays={"f": spec})
    data = np.random.default_rng(1).standard_normal((3, 4, 4, 8)).astype(np.float16)
    store.write_shard(0, {"f": data[:2]})
    store.write_shard(1, {"f": data[2:]})
    back = open_store(url).array("f")[:]
    if codec.startswith("bitround"):  # lossy by design: 7 of 10 mantissa bits kept
        np.testing.assert_allclose(back.astype(np.float32), data.astype(np.float32), rtol=2**-7, atol=1e-3)
        assert not np.array_equal(back, data)
    else:
        np.testing.assert_array_equal(back, data)
    assert open_store(url).spec("f").codec == codec


def test_unknown_codec_refused(url: str) -> None:
    spec = ArraySpec(item_shape=(2,), dtype="float16", dims=("image", "c"), codec="snappy9")
    with pytest.raises(MaxaError, match="unknown codec 'snappy9'"):
        _create(url, arrays={"f": spec})


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
    codes = group[IDS][:]  # uint8 (N, width): UTF-8 bytes, zero-padded (docs/store.md)
    assert codes.dtype == np.uint8
    assert [bytes(row).rstrip(b"\0").decode() for row in codes] == _ids(5)
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


def test_file_url_opens_local_store(path: str) -> None:
    expected = _fill(_create(f"file://{path}", n=3, shard_size=2))
    opened = open_store(f"file://{path}", "features")
    np.testing.assert_array_equal(opened.array("layer_11")[:], expected["layer_11"])
    np.testing.assert_array_equal(open_store(path).array("label")[:], expected["label"])


# ---------------------------------------------------------------- reading: read-only, fast pipeline


def test_open_store_is_read_only(url: str) -> None:
    expected = _fill(_create(url, n=4, shard_size=2))
    store = open_store(url)
    assert store.read_only
    with pytest.raises(MaxaError, match="read-only"):
        store.write_shard(0, _blocks(store, 0))
    with pytest.raises(MaxaError, match="read-only"):
        store.write_aux("stats/x/mean", np.zeros(3))
    with pytest.raises(ValueError, match=r"read-only"):  # zarr itself refuses too
        store.array("label")[0:2] = 0
    np.testing.assert_array_equal(open_store(url).array("label")[:], expected["label"])
    writable = open_store(url, writable=True)
    assert not writable.read_only


def _pipeline_module(array: zarr.Array) -> str:
    return type(array.async_array.codec_pipeline).__module__


@pytest.mark.skipif(not fast_reads_available(), reason="zarrs not installed")
def test_bulk_reads_use_zarrs_pipeline_with_same_bytes(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _fill(_create(path, n=5, shard_size=2))
    store = open_store(path)
    assert _pipeline_module(store._node("layer_11", fast=True)).startswith(FAST_PIPELINE.split(".")[0])
    np.testing.assert_array_equal(store.read("layer_11"), expected["layer_11"])
    np.testing.assert_array_equal(store.read("layer_11", 3), expected["layer_11"][3])
    np.testing.assert_array_equal(store.read("label", slice(1, 4)), expected["label"][1:4])
    # Arrays handed out keep zarr-python's pipeline, which enforces read-only mode (zarrs does not).
    assert not _pipeline_module(store.array("layer_11")).startswith("zarrs")
    with pytest.raises(MaxaError, match="no array"):
        store.read("nope")
    monkeypatch.setenv("MAXA_ZARRS", "0")
    slow = open_store(path)
    assert not _pipeline_module(slow._node("layer_11", fast=True)).startswith("zarrs")
    np.testing.assert_array_equal(slow.read("layer_11"), expected["layer_11"])
    monkeypatch.delenv("MAXA_ZARRS")
    writer = open_store(path, writable=True)  # writers never use it
    assert not _pipeline_module(writer._node("layer_11", fast=True)).startswith("zarrs")


def test_dask_array_is_chunked_by_shard(url: str) -> None:
    expected = _fill(_create(url, n=5, shard_size=2))
    x = open_store(url).dask_array("layer_11")
    assert x.chunks[0] == (2, 2, 1)
    assert x.chunks[1:] == ((4,), (4,), (8,))
    np.testing.assert_array_equal(x.compute(), expected["layer_11"])


def test_layout_describes_every_array(url: str) -> None:
    store = _create(url, n=5, shard_size=2)
    store.write_aux("stats/layer_11/mean", np.arange(8, dtype=np.float32))
    layout = store.layout()
    assert set(layout) == {"label", "layer_11", IDS, DONE, "stats/layer_11/mean"}
    assert layout["layer_11"]["shape"] == [5, 4, 4, 8]
    assert layout["layer_11"]["chunks"] == [1, 4, 4, 8]
    assert layout["layer_11"]["shards"] == [2, 4, 4, 8]
    assert layout["layer_11"]["dims"] == ["image", "y", "x", "channel"]
    assert layout["label"]["dtype"] == "uint8"
    assert layout[DONE]["shape"] == [3]
    assert layout[DONE]["dims"] == ["shard"]


# ---------------------------------------------------------------- derived arrays


def test_aux_arrays_live_beside_and_never_replace_features(url: str) -> None:
    store = _create(url, n=4, shard_size=2)
    expected = _fill(store)
    mean = np.linspace(0, 1, 8, dtype=np.float32)
    store.write_aux("stats/layer_11/mean", mean, {"note": "x"})
    store.write_aux("stats/layer_11/mean", mean * 2)  # replaced, not duplicated
    assert store.aux_names() == ["stats/layer_11/mean"]
    assert store.array_names() == ["label", "layer_11"]  # readers of per-image arrays see no change
    data, attrs = open_store(url).read_aux("stats/layer_11/mean")
    np.testing.assert_array_equal(data, mean * 2)
    assert attrs == {}
    np.testing.assert_array_equal(open_store(url).array("layer_11")[:], expected["layer_11"])
    with pytest.raises(MaxaError, match="subgroup"):
        store.write_aux("layer_11", np.zeros(3))
    with pytest.raises(MaxaError, match="no derived array"):
        store.read_aux("stats/other/mean")


# ---------------------------------------------------------------- verification


def test_problems_empty_for_a_good_store(url: str) -> None:
    _fill(_create(url, n=5, shard_size=2))
    assert open_store(url).problems() == []


def test_problems_names_pending_shards(url: str) -> None:
    store = _create(url, n=6, shard_size=2)
    store.write_shard(0, _blocks(store, 0))
    problems = open_store(url, require_complete=False).problems()
    assert any("2 of 3 shards not written (first: 1)" in p for p in problems)


def test_write_shard_refuses_nonfinite_naming_images(url: str) -> None:
    store = _create(url, n=4, shard_size=2)
    blocks = _blocks(store, 1)
    blocks["layer_11"][1, 0, 0, 0] = np.nan
    with pytest.raises(MaxaError, match=r"layer_11 holds NaN or inf for 1 image\(s\) \(first: 'img_003'\)"):
        store.write_shard(1, blocks)
    assert store.done_shards().tolist() == [False, False]
    assert not np.asarray(store.group["layer_11"][2:4]).any()  # nothing of the shard was written


def test_problems_finds_nan_and_inf_by_image(url: str) -> None:
    store = _create(url, n=6, shard_size=2, provenance={**PROVENANCE, "nonfinite": "keep"})
    for shard in range(3):
        blocks = _blocks(store, shard)
        if shard == 1:
            blocks["layer_11"][1, 2, 3, 4] = np.nan
        if shard == 2:
            blocks["layer_11"][0, 0, 0, 0] = np.inf
        store.write_shard(shard, blocks)
    problems = open_store(url).problems()
    assert problems == ["layer_11: 2 images hold NaN or inf (first: img_003, img_004)"]
    assert open_store(url).problems(check_values=False) == []


def test_all_zero_shard_is_stored_and_lost_shard_detected(path: str) -> None:
    store = _create(path, n=4, shard_size=2)
    zeros = {"layer_11": np.zeros((2, 4, 4, 8), np.float16), "label": np.zeros((2, 6, 6), np.uint8)}
    store.write_shard(0, zeros)  # all fill value: still written, so "done" always has its data
    store.write_shard(1, _blocks(store, 1))
    assert open_store(path).missing_shard_objects("label") == []
    assert open_store(path).problems() == []
    shutil.rmtree(Path(path) / "label" / "c" / "1")  # a shard lost in a copy or a partial pull
    assert open_store(path).missing_shard_objects("label") == [1]
    problems = open_store(path).problems()
    assert problems == ["label: shards [1] are marked done but their data is missing"]


def test_problems_checks_shapes_against_provenance(url: str) -> None:
    provenance = {**PROVENANCE, "feature_shapes": {"layer_11": [4, 4, 16]}}
    _fill(_create(url, provenance=provenance))
    problems = open_store(url).problems(check_values=False)
    assert problems == ["layer_11: item shape [4, 4, 8], provenance says [4, 4, 16]"]


# ---------------------------------------------------------------- newer format, overwrite


def test_newer_format_version_refused_on_resume(url: str) -> None:
    _create(url)
    group = zarr.open_group(url, mode="r+")
    group.attrs[ATTR_KEY] = {**group.attrs[ATTR_KEY], "format_version": FORMAT_VERSION + 1}
    with pytest.raises(MaxaError, match="newer maxa"):
        _create(url)
    assert zarr.open_group(url, mode="r").attrs[ATTR_KEY]["format_version"] == FORMAT_VERSION + 1
    replaced = _create(url, overwrite=True)  # an explicit --overwrite replaces it
    assert replaced.format_version == FORMAT_VERSION


# ---------------------------------------------------------------- sharing through DVC


def _dvc(cwd: Path, *args: str) -> None:
    env = command_env()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"


@pytest.mark.slow
def test_dvc_push_pull_through_local_remote(tmp_path: Path) -> None:
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    dvc = (sys.executable, "-m", "dvc")
    _dvc(repo, "git", "init", "-q")
    _dvc(repo, *dvc, "init", "-q")
    _dvc(repo, *dvc, "config", "core.analytics", "false")
    _dvc(repo, *dvc, "remote", "add", "-d", "team", str(remote))
    store_path = repo / "features.zarr"
    store = _create(str(store_path), n=5, shard_size=2)
    expected = _fill(store)
    store.write_aux("stats/layer_11/mean", np.arange(8, dtype=np.float32))
    fp = store.fingerprint
    _dvc(repo, *dvc, "add", "features.zarr")
    _dvc(repo, *dvc, "push")
    shutil.rmtree(store_path)
    shutil.rmtree(repo / ".dvc" / "cache")
    assert not store_path.exists()
    _dvc(repo, *dvc, "pull")
    pulled = open_store(str(store_path), "features")
    assert pulled.fingerprint == fp
    assert pulled.ids() == _ids(5)
    assert pulled.problems() == []
    for name, data in expected.items():
        np.testing.assert_array_equal(pulled.array(name)[:], data)
    np.testing.assert_array_equal(pulled.read_aux("stats/layer_11/mean")[0], np.arange(8, dtype=np.float32))


# ---------------------------------------------------------------- format 2: records, crash safety


def _plain_zarr_store(url: str, provenance: dict, ids: list[str], kind: str = "features") -> None:
    """A store written from docs/store.md alone, with plain zarr and hashlib (no maxa code)."""
    import hashlib
    import json

    stable = {k: v for k, v in provenance.items() if k not in ("created", "maxa_version", "root")}
    fp = hashlib.sha256(
        json.dumps(stable, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    ).hexdigest()[:16]
    meta = {"format_version": 2, "kind": kind, "fingerprint": fp, "shard_size": 2, "provenance": provenance}
    group = zarr.open_group(url, mode="w", attributes={"maxa": meta})
    n = len(ids)
    feats = group.create_array(
        "layer_11",
        shape=(n, 4, 4, 8),
        dtype="float16",
        chunks=(1, 4, 4, 8),
        shards=(2, 4, 4, 8),
        dimension_names=("image", "y", "x", "channel"),
        fill_value=0,
    )
    feats[:] = np.arange(n * 128, dtype=np.float16).reshape(n, 4, 4, 8)
    raw = [s.encode("utf-8") for s in ids]
    codes = np.zeros((n, max(map(len, raw))), np.uint8)
    for i, b in enumerate(raw):
        codes[i, : len(b)] = list(b)
    group.create_array("ids", shape=codes.shape, dtype="uint8", chunks=codes.shape, fill_value=0)[:] = codes
    done = group.create_array("done", shape=(-(-n // 2),), dtype="bool", chunks=(1,), fill_value=False)
    done[:] = True


def test_store_written_from_the_doc_alone_is_accepted(url: str) -> None:
    ids = ["a", "bé", "c/d"]
    provenance = {**PROVENANCE, "name": "ünï", "layers": ["layer_11"], "root": "/data/voc"}
    _plain_zarr_store(url, provenance, ids)
    store = open_store(url, "features")
    assert store.ids() == ids
    assert store.fingerprint == fingerprint(provenance)
    assert store.problems() == []
    np.testing.assert_array_equal(
        store.read("layer_11")[2], np.arange(256, 384, dtype=np.float16).reshape(4, 4, 8)
    )


def test_the_documented_fingerprint_is_the_documented_provenances() -> None:
    """docs/store.md's attribute example: its `fingerprint` is its provenance's, by the page's own rule
    (written out here with hashlib and json) and by maxa's."""
    page = (Path(__file__).resolve().parents[3] / "docs" / "store.md").read_text()
    example = re.search(r"```json\n(\{\"maxa\": \{.*?)```", page, re.S)
    assert example is not None, "docs/store.md lost its attribute example"
    meta = json.loads(example.group(1))["maxa"]
    stable = {k: v for k, v in meta["provenance"].items() if k not in ("created", "maxa_version", "root")}
    canonical = json.dumps(stable, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    by_the_page = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
    assert meta["fingerprint"] == by_the_page == fingerprint(meta["provenance"])


def test_fingerprint_recomputed_on_open(url: str) -> None:
    _fill(_create(url))
    group = zarr.open_group(url, mode="r+")
    meta = dict(group.attrs[ATTR_KEY])
    meta["provenance"] = {**meta["provenance"], "input_size": 999}  # edited behind maxa's back
    group.attrs[ATTR_KEY] = meta
    with pytest.raises(MaxaError, match=r"fingerprint [0-9a-f]{16} does not match its provenance"):
        open_store(url)


def test_missing_attribute_fields_named(url: str) -> None:
    _fill(_create(url))
    group = zarr.open_group(url, mode="r+")
    meta = {k: v for k, v in dict(group.attrs[ATTR_KEY]).items() if k != "shard_size"}
    group.attrs[ATTR_KEY] = meta
    with pytest.raises(MaxaError, match=r"lack shard_size"):
        open_store(url)


def test_ids_use_a_zarr_core_type(url: str) -> None:
    _create(url, ids=["x", "yy", "ünï"])
    node = zarr.open_group(url, mode="r")[IDS]
    assert node.dtype == np.dtype("uint8") and node.ndim == 2
    assert node.metadata.to_dict()["data_type"] == "uint8"


def test_format_1_store_still_read(url: str) -> None:
    """Format 1: string ids and the default-separator fingerprint; read, never rewritten."""
    import hashlib
    import json

    stable = {k: v for k, v in PROVENANCE.items() if k not in ("created", "maxa_version")}
    fp = hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]
    group = zarr.open_group(url, mode="w")
    group.create_array("ids", shape=(2,), dtype=str, chunks=(2,))[:] = np.asarray(["p", "q"], dtype=object)
    group.create_array("done", shape=(1,), dtype="bool", chunks=(1,), fill_value=False)[:] = True
    group.attrs[ATTR_KEY] = {
        "format_version": 1,
        "kind": "features",
        "fingerprint": fp,
        "shard_size": 2,
        "provenance": PROVENANCE,
    }
    assert open_store(url).ids() == ["p", "q"]
    with pytest.raises(MaxaError, match=r"is in store format 1; this maxa writes format 2.*--overwrite"):
        _create(url, n=2, ids=["p", "q"])
    assert open_store(url).format_version == 1  # untouched


@pytest.mark.parametrize("stage", ["attrs", "arrays", "ids"])
def test_kill_during_creation_resumes(url: str, stage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill at each instant of creation leaves a store the next run recognises and re-creates."""
    real = zarr.Group.create_array
    calls = {"n": 0}
    stop_after = {"attrs": 0, "arrays": 1, "ids": 2}[stage]

    def dying(self, name, **kwargs):
        if calls["n"] == stop_after:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(self, name, **kwargs)

    monkeypatch.setattr(zarr.Group, "create_array", dying)
    with pytest.raises(KeyboardInterrupt):
        _create(url)
    monkeypatch.setattr(zarr.Group, "create_array", real)
    with pytest.raises(MaxaError, match="interrupted while being created"):
        open_store(url, require_complete=False)
    store = _create(url)  # resumes: no --overwrite needed, nothing computed existed
    written = _fill(store)
    np.testing.assert_array_equal(open_store(url).read("label"), written["label"])


def test_format_1_half_created_store_recognised(url: str) -> None:
    """Format 1 wrote the attributes last: arrays without attributes and no done shard is ours."""
    group = zarr.open_group(url, mode="w")
    group.create_array("layer_11", shape=(5, 4, 4, 8), dtype="float16", chunks=(1, 4, 4, 8))
    store = _create(url)
    assert store.pending_shards() == [0, 1, 2]


def test_foreign_arrays_never_replaced(url: str) -> None:
    group = zarr.open_group(url, mode="w")
    group.create_array("precious", shape=(3,), dtype="int8", chunks=(3,))[:] = 7
    with pytest.raises(MaxaError, match="not a maxa store"):
        _create(url)
    assert zarr.open_group(url, mode="r")["precious"][:].tolist() == [7, 7, 7]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_nonfinite_rows_match_isfinite(dtype: str) -> None:
    from maxa.core.store import nonfinite_rows

    rng = np.random.default_rng(0)
    block = (rng.standard_normal((6, 3, 4)) * 1e3).astype(dtype)
    assert nonfinite_rows(block).tolist() == []
    block[1, 0, 0] = np.nan
    block[3, 2, 3] = -np.inf
    block[4, 1, 1] = np.inf
    block[5, 0, 2] = -np.nan
    expected = np.flatnonzero(~np.isfinite(block.reshape(6, -1)).all(axis=1))
    assert nonfinite_rows(block).tolist() == expected.tolist() == [1, 3, 4, 5]
    assert nonfinite_rows(np.arange(6, dtype=np.int32)).tolist() == []
    extreme = np.array([[np.finfo(dtype).max, -np.finfo(dtype).max, np.finfo(dtype).tiny, -0.0]], dtype)
    assert nonfinite_rows(extreme).tolist() == []


def test_created_follows_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """SOURCE_DATE_EPOCH fixes `created` (byte-identical stores from two runs); a bad value is refused."""
    from maxa.core.records import now_iso

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")  # 2026-01-01 00:00:00 UTC
    assert now_iso() == "2026-01-01T00:00:00+00:00"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(MaxaError, match=r"^SOURCE_DATE_EPOCH must be seconds since 1970, got 'yesterday'$"):
        now_iso()
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert now_iso() != "2026-01-01T00:00:00+00:00" and now_iso().endswith("+00:00")
