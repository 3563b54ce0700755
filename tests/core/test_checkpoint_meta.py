"""The checkpoint record (core/checkpoint_meta.py), written from docs/store.md's description and read back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from maxa.core.checkpoint_meta import CHECKPOINT_FORMAT, LEGACY_OPTIONS, REQUIRED, CheckpointMeta
from maxa.core.errors import MaxaError

# docs/store.md: meta.format = 3 requires run_id, config, in_channels, out_channels, output_size,
# num_classes, class_names, backbone, backbone_fingerprint, dataset, layers, feature_store, target_store.
DOCUMENTED = {
    "format": 3,
    "run_id": "vit/maxa/semantic/0123abcd",
    "config": {"task": "semantic", "adapter": "maxa", "lr": 1e-3, "seed": 0},
    "in_channels": 192,
    "out_channels": 21,
    "output_size": [64, 64],
    "num_classes": 21,
    "class_names": [f"c{i}" for i in range(21)],
    "backbone": "vit",
    "backbone_fingerprint": "0123456789abcdef",
    "dataset": "voc",
    "layers": ["layer_11"],
    "feature_store": {"url": "f.zarr", "fingerprint": "a" * 16},
    "target_store": {"url": "t.zarr", "fingerprint": "b" * 16},
}


def test_documented_checkpoint_record_is_read_and_written_back() -> None:
    assert set(DOCUMENTED) == set(REQUIRED) and CHECKPOINT_FORMAT == 3
    meta = CheckpointMeta.from_dict(DOCUMENTED, "checkpoint m.pt")
    assert (meta.task, meta.adapter, meta.layers, meta.in_channels) == ("semantic", "maxa", ["layer_11"], 192)
    assert meta.feature_store == {"url": "f.zarr", "fingerprint": "a" * 16} and meta.dataset == "voc"
    again = meta.to_dict()
    assert {k: again[k] for k in DOCUMENTED if k != "config"} == {
        k: v for k, v in DOCUMENTED.items() if k != "config"
    }
    # a config without the task options added since reads as what such runs were trained with
    assert again["config"] == {**LEGACY_OPTIONS, **DOCUMENTED["config"]}
    assert again["layer"] == "layer_11"  # the joined layer names older readers looked for
    assert CheckpointMeta.from_dict(again, "again") == meta


def test_run_facts_travel_unchanged() -> None:
    meta = CheckpointMeta.from_dict({**DOCUMENTED, "loader": "stream", "samples_per_second": 70.5}, "m")
    assert meta.loader == "stream" and meta.samples_per_second == 70.5
    assert meta.to_dict()["loader"] == "stream"


def test_format_3_fields_are_required_and_newer_formats_refused() -> None:
    lacking = {k: v for k, v in DOCUMENTED.items() if k not in ("dataset", "layers")}
    with pytest.raises(MaxaError, match=r"^checkpoint m.pt lacks required field\(s\) dataset, layers"):
        CheckpointMeta.from_dict(lacking, "checkpoint m.pt")
    with pytest.raises(MaxaError, match=r"^checkpoint m.pt has format 4, this maxa reads up to 3; upgrade"):
        CheckpointMeta.from_dict({**DOCUMENTED, "format": 4}, "checkpoint m.pt")
    with pytest.raises(MaxaError, match="metadata is not a mapping"):
        CheckpointMeta.from_dict([1, 2], "checkpoint m.pt")  # type: ignore[arg-type]


def test_format_1_checkpoints_are_migrated_on_read() -> None:
    """Format 1 named its layers in one string and kept only the class prior of the training statistics."""
    old = {
        "format": 1,
        "config": {"task": "semantic", "adapter": "linear", "layer": "layer_1,layer_2"},
        "in_channels": 8,
        "out_channels": 3,
        "class_prior": [0.5, 0.25, 0.25],
        "losses": [1.0, 0.5],
    }
    meta = CheckpointMeta.from_dict(old, "old.pt")
    assert meta.layers == ["layer_1", "layer_2"] and meta.stats == {"class_prior": [0.5, 0.25, 0.25]}
    assert meta.class_prior == [0.5, 0.25, 0.25] and meta.run_id == "" and meta.format == 1
    with pytest.raises(MaxaError, match=r"old.pt lacks required field\(s\) in_channels"):
        CheckpointMeta.from_dict({k: v for k, v in old.items() if k != "in_channels"}, "old.pt")


def test_reading_the_record_imports_no_torch() -> None:
    code = (
        "import sys; from maxa.core.checkpoint_meta import CheckpointMeta; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
