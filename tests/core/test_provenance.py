"""The store provenance records (core/provenance.py), written from docs/store.md and read back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from maxa.core.errors import MaxaError
from maxa.core.provenance import FeatureProvenance, TargetProvenance
from maxa.core.records import digest

DOC = Path(__file__).resolve().parents[2] / "docs" / "store.md"


def _documented_attributes() -> dict:
    """The `maxa` attributes block docs/store.md shows for a feature store."""
    block = re.search(r"### Attributes\n\n```json\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None, "docs/store.md lost its attributes example"
    return json.loads(block.group(1))["maxa"]


def test_feature_provenance_of_the_documented_store_round_trips() -> None:
    written = _documented_attributes()["provenance"]
    record = FeatureProvenance.from_dict(written, "doc")
    assert record.to_dict() == written  # every key kept, none added: the store's fingerprint is unchanged
    assert record.model == "vit_tiny_patch16_224" and record.backbone == "vit_tiny_patch16_224"
    assert record.input_size == (64, 64) and record.patch_size == (16, 16)
    assert record.feature_shapes == {"layer_11": [4, 4, 192]} and record.layers == ["layer_11"]
    assert record.backbone_params == 5524416 and not record.keep_nonfinite
    assert (record.dataset.name, record.dataset.split, record.dataset.fingerprint) == (
        "synthetic",
        "train",
        "79516849be3e789c",
    )
    assert record.dataset.content == "5be0c2d1a8f3e47b" and record.dataset.options == {"num_images": 64}
    assert record.other["timm_version"] == "1.0.31"  # a fact no stage joins on travels unchanged


def test_backbone_fingerprint_is_the_documented_hash() -> None:
    """docs/store.md: sha256 of the canonical JSON of model, weights, weights_sha256, input_size, mean,
    std, norm; first 16 hex."""
    written = _documented_attributes()["provenance"]
    fields = ("model", "weights", "weights_sha256", "input_size", "mean", "std", "norm")
    expected = digest({k: written[k] for k in fields})
    record = FeatureProvenance.from_dict(written, "doc")
    assert record.backbone_fingerprint == expected
    other = FeatureProvenance.from_dict({**written, "input_size": [96, 96]}, "doc")
    assert other.backbone_fingerprint != expected
    assert record.backbone_differences(other) == ["input_size: [64, 64] vs [96, 96]"]


def test_feature_provenance_minimum_and_refusals() -> None:
    minimal = {"model": "m", "dataset": {"name": "d", "split": "val", "fingerprint": "f"}}
    record = FeatureProvenance.from_dict(minimal, "feature store x.zarr")
    assert record.backbone == "m" and record.backbone_params is None and record.layers == []
    with pytest.raises(
        MaxaError, match=r"^feature store x.zarr provenance lacks required field\(s\) backbone_params"
    ):
        record.need("backbone_params", "feature store x.zarr")
    with pytest.raises(MaxaError, match=r"x.zarr provenance lacks required field\(s\) dataset"):
        FeatureProvenance.from_dict({"name": "n"}, "x.zarr")
    with pytest.raises(MaxaError, match="dataset reference lacks fingerprint"):
        FeatureProvenance.from_dict({"model": "m", "dataset": {"name": "d", "split": "s"}}, "x.zarr")
    kept = FeatureProvenance.from_dict({**minimal, "nonfinite": "keep"}, "x")
    assert kept.keep_nonfinite and kept.to_dict()["nonfinite"] == "keep"


def test_target_provenance_from_the_documented_fields() -> None:
    """docs/store.md: prepare writes dataset, split, dataset_fingerprint, dataset_config, num_classes,
    class_names, label_size, targets and root (absolute, or null)."""
    written = {
        "dataset": "voc",
        "split": "val",
        "root": "/data/voc",
        "dataset_config": {"split": "val", "year": 2012},
        "dataset_fingerprint": "0123456789abcdef",
        "num_classes": 21,
        "class_names": [f"c{i}" for i in range(21)],
        "label_size": [448, 448],
        "targets": ["semantic"],
        "maxa_version": "0.1.0",
        "created": "2026-11-25T04:37:02+00:00",
    }
    record = TargetProvenance.from_dict(written, "target store t.zarr", content="abc")
    assert record.to_dict() == written
    assert record.dataset.options == {"year": 2012} and record.dataset.root == "/data/voc"
    assert record.dataset.content == "abc" and record.label_size == (448, 448) and record.num_classes == 21
    with pytest.raises(MaxaError, match=r"t.zarr provenance lacks required field\(s\) split"):
        TargetProvenance.from_dict({k: v for k, v in written.items() if k != "split"}, "t.zarr")
