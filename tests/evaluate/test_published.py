"""The published-value pairing (evaluate/published.py): like with like only, and a reason otherwise."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from maxa.core.errors import MaxaError
from maxa.evaluate.published import (
    IDENTITY,
    PROTOCOL_FIELDS,
    PUBLISHED,
    differences,
    load_published,
    same_measurement,
)

DEPTH_PROTOCOL = {
    "label_size": [480, 640],
    "layer": "layer_11",
    "norm": True,
    "iterations": 3000,
    "eval_start": 0,
    "eval_samples": 654,
    "eigen_crop": True,
}


def depth_run() -> dict[str, Any]:
    """A depth metrics record as `maxa evaluate` writes it for the paper's NYU run."""
    return {
        "backbone": "supervised_b",
        "model": "vit_base_patch16_224.orig_in21k",
        "weights": "pretrained",
        "adapter": "maxa",
        "task": "depth",
        "dataset": "nyu_frames",
        "split": "validation",
        "primary": {"name": "rmse", "value": 0.7, "higher_is_better": False},
        "scores": {"rmse": 0.7},
        "protocol": {
            **DEPTH_PROTOCOL,
            "input_size": [224, 224],
            "feature_grid": [14, 14],  # not a pairing field: it follows from the model and input size
        },
    }


def depth_entry() -> dict[str, Any]:
    return {
        "models": ["vit_base_patch16_224.orig_in21k"],
        "weights": "pretrained",
        "adapter": "maxa",
        "task": "depth",
        "dataset": "nyu_frames",
        "split": "validation",
        "metric": "rmse",
        "protocol": {**DEPTH_PROTOCOL, "input_size": 224},  # a square side: the same as [224, 224]
    }


OTHER_VALUES = {
    "input_size": [518, 518],
    "label_size": [224, 224],
    "layer": "layer_8",
    "norm": False,
    "iterations": 10000,
    "eval_start": 100,
    "eval_samples": 500,
    "eigen_crop": False,
}


def test_the_same_protocol_pairs() -> None:
    assert same_measurement(depth_run(), depth_entry()) and differences(depth_run(), depth_entry()) == []


@pytest.mark.parametrize("field", PROTOCOL_FIELDS["depth"])
def test_every_protocol_field_that_differs_refuses_the_pair_and_is_named(field: str) -> None:
    entry = depth_entry()
    entry["protocol"][field] = OTHER_VALUES[field]
    found = differences(depth_run(), entry)
    assert [d.field for d in found] == [field]
    assert str(found[0]).startswith(f"{field}: maxa ")
    run = depth_run()
    del run["protocol"][field]  # a record that does not say is not the same either
    assert [d.field for d in differences(run, depth_entry())] == [field]


@pytest.mark.parametrize("field", ["model", "metric", *IDENTITY])
def test_another_measurement_is_not_a_candidate(field: str) -> None:
    run = depth_run()
    if field == "metric":
        run["primary"]["name"] = "abs_rel"
    else:
        run[field] = "something-else"
    assert not same_measurement(run, depth_entry())


def test_a_field_the_source_does_not_state_never_pairs() -> None:
    entry = depth_entry()
    entry["protocol"]["iterations"] = "unknown"
    (found,) = differences(depth_run(), entry)
    assert str(found) == "iterations: not stated by the source (maxa 3000)"


def test_every_entry_must_name_its_whole_protocol(tmp_path: Path) -> None:
    entry = {"source": "x", "checked": "y", "value": 1.0, "scale": 1.0, "tolerance": 0.1, **depth_entry()}
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump({"entries": [entry]}))
    assert len(load_published(path)) == 1
    for field in PROTOCOL_FIELDS["depth"]:
        partial = copy.deepcopy(entry)
        del partial["protocol"][field]
        path.write_text(yaml.safe_dump({"entries": [partial]}))
        with pytest.raises(MaxaError, match=f"does not name protocol {field}"):
            load_published(path)


def test_shipped_entries_name_the_paper_protocol() -> None:
    entries = load_published(PUBLISHED)
    maxa_rows = [e for e in entries if e["source"].startswith("MAXA")]
    assert {e["models"][0] for e in maxa_rows} == {
        "vit_base_patch16_224.orig_in21k",
        "vit_base_patch16_224.mae",
    }
    assert all(e["protocol"]["label_size"] != 448 for e in maxa_rows if e["dataset"] == "voc")
    dinov2 = [e for e in entries if e["source"].startswith("DINOv2")]
    assert dinov2 and all(e["models"] == ["vit_base_patch14_dinov2.lvd142m"] for e in dinov2)  # no registers
    davis = [e for e in entries if e["task"] == "propagation"]
    assert davis and all(e["protocol"]["norm"] is True for e in davis)
    assert all(e["checked"] for e in entries)
