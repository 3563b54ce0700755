"""HDF5 export/import (extract/interchange.py): exact round trips and the refusals around them."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from maxa.core.errors import MaxaError
from maxa.core.store import FORMAT_VERSION, ArraySpec, Store, create_or_resume, open_store
from maxa.extract.interchange import export_hdf5, import_hdf5

PROVENANCE = {"model": "vit_tiny", "input_size": [64, 64], "layers": ["layer_11"], "created": "2025-01-01"}
ARRAYS = {
    "layer_11": ArraySpec((2, 3, 8), "float16", ("image", "y", "x", "channel")),
    "semantic": ArraySpec((4, 4), "uint8", ("image", "y", "x")),
    "raw": ArraySpec((5,), "float32", ("image", "value"), codec="zstd"),
}


def _make(url: str, n: int = 7, shard_size: int = 3, shards: list[int] | None = None) -> Store:
    store = create_or_resume(
        url,
        kind="features",
        provenance=PROVENANCE,
        ids=[f"img/{i:02d}-ü" for i in range(n)],
        arrays=ARRAYS,
        shard_size=shard_size,
    )
    rng = np.random.default_rng(0)
    for shard in range(store.num_shards) if shards is None else shards:
        start, stop = store.shard_range(shard)
        m = stop - start
        store.write_shard(
            shard,
            {
                "layer_11": rng.standard_normal((m, 2, 3, 8)).astype(np.float16),
                "semantic": rng.integers(0, 9, (m, 4, 4), dtype=np.uint8),
                "raw": rng.standard_normal((m, 5)).astype(np.float32),
            },
        )
    return store


def _assert_same(a: Store, b: Store) -> None:
    assert a.meta == b.meta  # format version, kind, fingerprint, shard size, provenance, extra
    assert a.fingerprint == b.fingerprint
    assert a.ids() == b.ids()
    assert a.done_shards().tolist() == b.done_shards().tolist()
    assert a.array_names() == b.array_names()
    assert a.layout() == b.layout()  # shapes, chunks, shards, dims and codecs
    for name in a.array_names():
        assert a.read(name).tobytes() == b.read(name).tobytes()
    assert a.aux_names() == b.aux_names()
    for path in a.aux_names():
        (x, xa), (y, ya) = a.read_aux(path), b.read_aux(path)
        np.testing.assert_array_equal(x, y)
        assert xa == ya


def test_round_trip_is_exact(tmp_path: Path) -> None:
    src = _make(str(tmp_path / "src.zarr"))
    src.write_aux("stats/layer_11/mean", np.arange(8, dtype=np.float32), {"dims": ["channel"]})
    src.set_attr("stats", {"layer_11": {"effective_rank": 3.5}})
    h5 = export_hdf5(src.url, tmp_path / "store.h5", progress=False)
    back = import_hdf5(h5, str(tmp_path / "back.zarr"), progress=False)
    _assert_same(open_store(src.url), open_store(back.url))
    assert open_store(back.url).problems() == []


def test_incomplete_store_round_trips_with_its_done_flags(tmp_path: Path) -> None:
    src = _make(str(tmp_path / "src.zarr"), n=7, shard_size=3, shards=[0, 2])
    h5 = export_hdf5(src.url, tmp_path / "store.h5", progress=False)
    back = import_hdf5(h5, str(tmp_path / "back.zarr"), progress=False)
    assert back.pending_shards() == [1]
    _assert_same(open_store(src.url, require_complete=False), open_store(back.url, require_complete=False))
    with pytest.raises(MaxaError, match="incomplete"):
        open_store(back.url)


def test_hdf5_file_is_plain_chunked_hdf5(tmp_path: Path) -> None:
    src = _make(str(tmp_path / "src.zarr"))
    h5 = export_hdf5(src.url, tmp_path / "store.h5", compression="gzip", progress=False)
    with h5py.File(h5, "r") as f:
        assert f["layer_11"].chunks == (1, 2, 3, 8)
        assert f["layer_11"].compression == "gzip"
        assert json.loads(f["layer_11"].attrs["dimension_names"]) == ["image", "y", "x", "channel"]
        assert f["raw"].attrs["codec"] == "zstd"
        assert [s for s in f["ids"].asstr()[:]] == src.ids()
        assert f["done"][:].tolist() == [True, True, True]
        meta = json.loads(f.attrs["maxa"])
        assert meta["fingerprint"] == src.fingerprint
        assert meta["provenance"] == PROVENANCE
        np.testing.assert_array_equal(f["semantic"][:], src.read("semantic"))


def test_export_refuses_existing_file_and_bad_compression(tmp_path: Path) -> None:
    src = _make(str(tmp_path / "src.zarr"))
    target = tmp_path / "exists.h5"
    target.write_bytes(b"keep me")
    with pytest.raises(MaxaError, match="exists"):
        export_hdf5(src.url, target, progress=False)
    assert target.read_bytes() == b"keep me"
    with pytest.raises(MaxaError, match="--compression"):
        export_hdf5(src.url, tmp_path / "new.h5", compression="snappy", progress=False)


def test_import_refuses_a_store_from_other_inputs(tmp_path: Path) -> None:
    src = _make(str(tmp_path / "src.zarr"))
    h5 = export_hdf5(src.url, tmp_path / "store.h5", progress=False)
    other = create_or_resume(
        str(tmp_path / "other.zarr"),
        kind="features",
        provenance={**PROVENANCE, "input_size": [96, 96]},
        ids=src.ids(),
        arrays=ARRAYS,
        shard_size=3,
    )
    with pytest.raises(MaxaError, match="input_size"):
        import_hdf5(h5, other.url, progress=False)
    replaced = import_hdf5(h5, other.url, overwrite=True, progress=False)
    assert replaced.fingerprint == src.fingerprint


def test_import_refuses_altered_or_newer_files(tmp_path: Path) -> None:
    src = _make(str(tmp_path / "src.zarr"))
    h5 = export_hdf5(src.url, tmp_path / "store.h5", progress=False)
    with h5py.File(h5, "r+") as f:
        meta = json.loads(f.attrs["maxa"])
        f.attrs["maxa"] = json.dumps({**meta, "provenance": {**PROVENANCE, "input_size": [1, 1]}})
    with pytest.raises(MaxaError, match="does not match its fingerprint"):
        import_hdf5(h5, str(tmp_path / "a.zarr"), progress=False)
    with h5py.File(h5, "r+") as f:
        f.attrs["maxa"] = json.dumps({**meta, "format_version": FORMAT_VERSION + 1})
    with pytest.raises(MaxaError, match="upgrade maxa"):
        import_hdf5(h5, str(tmp_path / "b.zarr"), progress=False)
    with pytest.raises(MaxaError, match="does not exist"):
        import_hdf5(tmp_path / "missing.h5", str(tmp_path / "c.zarr"), progress=False)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(MaxaError, match="not a maxa HDF5 export"):
        import_hdf5(plain, str(tmp_path / "d.zarr"), progress=False)


def test_export_to_missing_folder_and_truncated_import_are_one_line_errors(tmp_path: Path) -> None:
    url = str(tmp_path / "src.zarr")
    _make(url)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(MaxaError, match=r"HDF5 file .*a-file/out.h5 cannot be written"):
        export_hdf5(url, blocker / "out.h5", progress=False)
    h5 = tmp_path / "s.h5"
    export_hdf5(url, h5, progress=False)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(h5.read_bytes()[: h5.stat().st_size // 3])
    with pytest.raises(MaxaError, match=r"HDF5 file .*cut.h5 (cannot be read|is damaged)"):
        import_hdf5(cut, str(tmp_path / "back.zarr"), progress=False)
    assert not (tmp_path / "back.zarr" / "done").exists()  # nothing half-written was marked done
