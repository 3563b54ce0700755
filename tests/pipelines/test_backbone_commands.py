"""`maxa backbones`: the preset table with each model's patch size, width and default input size."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from maxa.extract.backbones import timm
from maxa.extract.presets import get_preset, preset_names
from maxa.pipelines.cli import cli

# Architecture facts (from the papers / model cards), not outputs of maxa.
KNOWN = {
    "dinov2_b": {"patch": 14, "width": 768, "input": 518, "prefix": 1},
    "dinov2_l_reg": {"patch": 14, "width": 1024, "input": 518, "prefix": 5},
    "clip_l14": {"patch": 14, "width": 1024, "input": 224, "prefix": 1},
    "siglip_b": {"patch": 16, "width": 768, "input": 224, "prefix": 0},
    "sam_b": {"patch": 16, "width": 768, "input": 1024, "prefix": 0},
    "resnet50_in1k": {"patch": 32, "width": 2048, "input": 224, "prefix": 0},
    "swin_t": {"patch": 32, "width": 768, "input": 224, "prefix": 0},
}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["backbones", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def listing() -> list[dict]:
    result = invoke("--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_every_preset_is_listed_with_its_timm_model(listing: list[dict]) -> None:
    assert [row["name"] for row in listing] == preset_names()
    for row in listing:
        preset = get_preset(row["name"])
        assert preset is not None and row["timm model"] == preset.model
        assert row["weights"] == ("timm hub" if preset.hub else "--weights FILE")


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_listed_facts(listing: list[dict], name: str) -> None:
    row = next(r for r in listing if r["name"] == name)
    assert {k: row[k] for k in KNOWN[name]} == KNOWN[name]


def test_table_has_a_row_per_preset(listing: list[dict]) -> None:
    result = invoke()
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["name", "timm", "model"]
    rows = {
        line.split()[0]: line.split() for line in lines[2:] if line.strip() and not line.startswith("Use")
    }
    assert set(rows) == set(preset_names())
    assert rows["dinov2_b"][:6] == [
        "dinov2_b",
        "vit_base_patch14_dinov2.lvd142m",
        "DINOv2",
        "14",
        "768",
        "518",
    ]
    assert "--weights random-init" in result.output


def test_pattern_lists_timm_models() -> None:
    result = invoke("vit_small_patch14*dinov2*", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(rows) == set(timm.list_pretrained("vit_small_patch14*dinov2*"))
    assert rows["vit_small_patch14_reg4_dinov2.lvd142m"]["prefix"] == 5
    assert rows["vit_small_patch14_dinov2.lvd142m"]["prefix"] == 1


def test_pattern_without_match_is_an_error() -> None:
    result = CliRunner().invoke(cli, ["backbones", "no_such_model*"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no timm model matches 'no_such_model*' (wildcards: * and ?)"


def test_registered_in_the_cli() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert "backbones" in result.output
