"""Joining feature and target stores: layer selection, multi-layer concatenation, id order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maxa.core import store as st
from maxa.core.errors import MaxaError
from maxa.probe.data import open_pair, resolve_layers
from tests.kit.stores import copy_store


def test_layers_resolve_by_index_name_and_list(stores: dict[str, str]) -> None:
    fstore = st.open_store(stores["features_train"], "features")
    assert resolve_layers(fstore, "-1") == ["layer_1"]
    assert resolve_layers(fstore, "0, layer_1") == ["layer_0", "layer_1"]
    assert resolve_layers(fstore, ["-2"]) == ["layer_0"]
    with pytest.raises(MaxaError, match="no layer '7'"):
        resolve_layers(fstore, "7")
    with pytest.raises(MaxaError, match="same layer twice"):
        resolve_layers(fstore, "1,-1")


def test_layers_are_concatenated_along_channels(stores: dict[str, str]) -> None:
    pair = open_pair(stores["features_train"], stores["targets_train"], "layer_1,layer_0", "semantic")
    assert pair.feature_shape == (8, 8, 96)
    fstore = st.open_store(stores["features_train"])
    block = pair.read_features(16, 32)
    assert np.array_equal(block[..., :32], fstore.read("layer_1", slice(16, 32)))
    assert np.array_equal(block[..., 32:], fstore.read("layer_0", slice(16, 32)))
    assert pair.feature_bytes_per_item() == 8 * 8 * 96 * 2


def test_layers_of_different_grids_are_refused(stores: dict[str, str], tmp_path: Path) -> None:
    tstore = st.open_store(stores["targets_train"], "targets")
    tprov = tstore.provenance
    url = str(tmp_path / "mixed.zarr")
    store = st.create_or_resume(
        url,
        kind="features",
        provenance={
            "dataset": {
                "name": tprov["dataset"],
                "split": tprov["split"],
                "fingerprint": tprov["dataset_fingerprint"],
            },
            "backbone_params": 1,
        },
        ids=tstore.ids(),
        arrays={
            "layer_1": st.ArraySpec((8, 8, 4), "float16", ("image", "y", "x", "channel")),
            "layer_2": st.ArraySpec((4, 4, 4), "float16", ("image", "y", "x", "channel")),
        },
        shard_size=96,
    )
    store.write_shard(
        0, {"layer_1": np.zeros((96, 8, 8, 4), np.float16), "layer_2": np.zeros((96, 4, 4, 4), np.float16)}
    )
    with pytest.raises(MaxaError, match=r"share one feature grid.*layer_1 8x8, layer_2 4x4"):
        open_pair(url, stores["targets_train"], "1,2", "semantic")


def test_targets_are_joined_on_ids(stores: dict[str, str], feature_factory: object) -> None:
    permuted = feature_factory("permuted.zarr", permute_ids=True)  # type: ignore[operator]
    pair = open_pair(permuted, stores["targets_train"], "-1", "depth")
    fids = st.open_store(permuted).ids()
    tstore = st.open_store(stores["targets_train"])
    tids = tstore.ids()
    raw = pair.read_targets(0, 16)
    expected = np.stack([tstore.array("depth")[tids.index(i)] for i in fids[:16]])
    assert np.array_equal(raw, expected)


def test_mismatched_split_and_missing_target_are_named(stores: dict[str, str]) -> None:
    with pytest.raises(MaxaError, match=r"describe different data \(split: .val. vs .train.; fingerprint"):
        open_pair(stores["features_val"], stores["targets_train"], "-1", "semantic")
    with pytest.raises(MaxaError, match="has no 'normals' target"):
        open_pair(stores["features_train"], stores["targets_train"], "-1", "normals")


def test_nan_in_features_named_by_store_and_image(stores: dict[str, str], tmp_path: Path) -> None:
    def put_inf(arrays: dict[str, np.ndarray]) -> None:
        arrays["layer_1"][20, 1, 2, 3] = np.inf

    url = copy_store(stores["features_val"], str(tmp_path / "nan.zarr"), edit=put_inf, nonfinite="keep")
    first = st.open_store(url).ids()[20]
    pair = open_pair(url, stores["targets_val"], "layer_0", "semantic")
    assert pair.read_features(16, 32).shape[0] == 16  # layer_0 is clean
    pair = open_pair(url, stores["targets_val"], "layer_0,layer_1", "semantic")
    with pytest.raises(
        MaxaError,
        match=rf"store {url}: layer_1 holds NaN or inf for 1 image\(s\) \(first: '{first}'\)",
    ):
        pair.read_features(16, 32)
