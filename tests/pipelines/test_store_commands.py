"""`maxa store info | verify | stats | export-hdf5 | import-hdf5` through the click CLI."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import zarr

from maxa.core.store import ArraySpec, Store, create_or_resume, open_store
from tests.kit.cli import invoke

PROVENANCE = {
    "model": "vit_tiny_patch16_224",
    "input_size": [64, 64],
    "feature_shapes": {"layer_11": [2, 2, 6]},
}


def _store(url: str, n: int = 6, shards: list[int] | None = None, nan_at: int | None = None) -> Store:
    store = create_or_resume(
        url,
        kind="features",
        provenance=PROVENANCE if nan_at is None else {**PROVENANCE, "nonfinite": "keep"},
        ids=[f"s{i}" for i in range(n)],
        arrays={"layer_11": ArraySpec((2, 2, 6), "float16", ("image", "y", "x", "channel"))},
        shard_size=2,
    )
    rng = np.random.default_rng(0)
    for shard in range(store.num_shards) if shards is None else shards:
        block = rng.standard_normal((2, 2, 2, 6)).astype(np.float16) * np.arange(1, 7, dtype=np.float16)
        if nan_at is not None and shard == nan_at // 2:
            block[nan_at % 2, 0, 0, 0] = np.nan
        store.write_shard(shard, {"layer_11": block})
    return store


def test_store_group_is_registered() -> None:
    result = invoke("store", "--help")
    assert result.exit_code == 0
    for sub in ("info", "verify", "stats", "export-hdf5", "import-hdf5"):
        assert sub in result.output


def test_info_prints_layout_and_provenance(tmp_path: Path) -> None:
    store = _store(str(tmp_path / "f.zarr"))
    result = invoke("store", "info", store.url)
    assert result.exit_code == 0, result.output
    assert f"fingerprint {store.fingerprint}" in result.output
    assert "3/3 done (complete)" in result.output
    assert "layer_11" in result.output and "(1, 2, 2, 6)" in result.output and "(2, 2, 2, 6)" in result.output
    assert "dims (image,y,x,channel)" in result.output
    assert 'model: "vit_tiny_patch16_224"' in result.output


def test_info_json_and_incomplete_store(tmp_path: Path) -> None:
    store = _store(str(tmp_path / "f.zarr"), shards=[1])
    result = invoke("store", "info", store.url, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["complete"] is False
    assert report["shards_done"] == "1/3"
    assert report["arrays"]["layer_11"]["shards"] == [2, 2, 2, 6]
    assert report["provenance"] == PROVENANCE
    assert "INCOMPLETE" in invoke("store", "info", store.url).output


def test_info_on_memory_url() -> None:
    url = f"memory://cli-{uuid.uuid4().hex}/f.zarr"
    _store(url)
    result = invoke("store", "info", url)
    assert result.exit_code == 0, result.output
    assert "3/3 done" in result.output


def test_verify_ok_and_failures(tmp_path: Path) -> None:
    good = _store(str(tmp_path / "good.zarr"))
    result = invoke("store", "verify", good.url)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok:")

    nan = _store(str(tmp_path / "nan.zarr"), nan_at=3)
    result = invoke("store", "verify", nan.url)
    assert result.exit_code == 1
    assert "1 images hold NaN or inf (first: s3)" in result.output
    assert "Traceback" not in result.output
    assert invoke("store", "verify", nan.url, "--no-values").exit_code == 0

    tampered = _store(str(tmp_path / "tampered.zarr"))
    group = zarr.open_group(tampered.url, mode="r+")
    group.attrs["maxa"] = {**dict(group.attrs["maxa"]), "provenance": {**PROVENANCE, "input_size": [9, 9]}}
    result = invoke("store", "verify", tampered.url)
    assert result.exit_code == 1
    assert f"fingerprint {tampered.fingerprint} does not match its provenance" in result.output

    partial = _store(str(tmp_path / "partial.zarr"), shards=[0])
    result = invoke("store", "verify", partial.url)
    assert result.exit_code == 1
    assert "2 of 3 shards not written" in result.output


def test_verify_missing_store(tmp_path: Path) -> None:
    result = invoke("store", "verify", str(tmp_path / "none.zarr"))
    assert result.exit_code == 1
    assert "no maxa store" in result.output


def test_stats_prints_and_saves(tmp_path: Path) -> None:
    store = _store(str(tmp_path / "f.zarr"))
    features = open_store(store.url).read("layer_11").tobytes()
    result = invoke("store", "stats", store.url, "--components", "3")
    assert result.exit_code == 0, result.output
    assert "layer_11: 24 vectors x 6 channels; effective rank" in result.output
    assert "top-1" in result.output
    after = open_store(store.url)
    assert after.read("layer_11").tobytes() == features
    assert after.meta == open_store(store.url).meta and "stats" not in after.extra
    from maxa.extract.stats import load_pca, read_stats, stats_path

    assert f"saved to {stats_path(store.url)}" in result.output
    assert load_pca(after, "layer_11")[1].shape == (3, 6)
    assert read_stats(after)["layer_11"]["pca_components"] == 3


def test_stats_no_save_and_bad_layer(tmp_path: Path) -> None:
    store = _store(str(tmp_path / "f.zarr"))
    assert invoke("store", "stats", store.url, "--no-save").exit_code == 0
    assert not Path(str(tmp_path / "f.stats.zarr")).exists()
    result = invoke("store", "stats", store.url, "--layer", "layer_3")
    assert result.exit_code == 1
    assert "no array 'layer_3'" in result.output


def test_export_import_round_trip(tmp_path: Path) -> None:
    store = _store(str(tmp_path / "f.zarr"))
    assert invoke("store", "stats", store.url).exit_code == 0
    h5 = str(tmp_path / "f.h5")
    result = invoke("store", "export-hdf5", store.url, h5)
    assert result.exit_code == 0, result.output
    assert Path(h5).is_file()
    back = str(tmp_path / "back.zarr")
    result = invoke("store", "import-hdf5", h5, back)
    assert result.exit_code == 0, result.output
    assert f"fingerprint {store.fingerprint}" in result.output
    a, b = open_store(store.url), open_store(back)
    assert a.meta == b.meta
    assert a.read("layer_11").tobytes() == b.read("layer_11").tobytes()
    assert a.aux_names() == b.aux_names()
    again = invoke("store", "export-hdf5", store.url, h5)
    assert again.exit_code == 1 and "exists" in again.output


@pytest.mark.parametrize("sub", ["info", "verify", "stats"])
def test_not_a_store(tmp_path: Path, sub: str) -> None:
    folder = tmp_path / "x.zarr"
    folder.mkdir()
    result = invoke("store", sub, str(folder))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
