"""`maxa backbones`: the preset table with each model's patch size, width and default input size."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import Result

from maxa.extract.backbones import timm
from maxa.extract.presets import FACTS_FILE, get_preset, preset_names
from maxa.pipelines import backbone_commands
from tests.kit.cli import invoke

# Architecture facts (from the papers / model cards), not outputs of maxa.
KNOWN: dict[str, dict[str, Any]] = {
    "dinov2_b": {"patch": 14, "width": 768, "input": 518, "prefix": 1},
    "dinov2_l_reg": {"patch": 14, "width": 1024, "input": 518, "prefix": 5},
    "clip_l14": {"patch": 14, "width": 1024, "input": 224, "prefix": 1},
    "siglip_b": {"patch": 16, "width": 768, "input": 224, "prefix": 0},
    "sam_b": {"patch": 16, "width": 768, "input": 1024, "prefix": 0},
    "resnet50_in1k": {"patch": 32, "width": 2048, "input": 224, "prefix": 0},
    "swin_t": {"patch": 32, "width": 768, "input": 224, "prefix": 0},
    "dinov3_b": {"patch": 16, "width": 768, "input": 256, "prefix": 5},  # cls + 4 registers
    "dinov3_7b": {"patch": 16, "width": 4096, "prefix": 5},
    "siglip2_so400m": {"patch": 14, "width": 1152, "prefix": 0},
    "pe_spatial_b": {"patch": 16, "width": 768, "prefix": 1},
    "aimv2_l": {"patch": 14, "width": 1024, "prefix": 0},
    "radio_v3_b": {
        "patch": 16,
        "width": 768,
        "prefix": 8,
    },  # RADIO's cls tokens (one per teacher) + registers
    "tipsv2_b": {"patch": 14, "width": 768, "prefix": 2},
    "sam2_bplus": {"width": 896, "stored": "2/s16"},  # Hiera B+: the stride-16 stage
    "dinov3_convnext_b": {"stored": "2/s16"},
}


def backbones(*args: str) -> Result:
    return invoke("backbones", *args)


@pytest.fixture(scope="module")
def listing() -> list[dict]:
    result = backbones("--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_every_preset_is_listed_with_its_timm_model(listing: list[dict]) -> None:
    assert sorted(row["name"] for row in listing) == sorted(preset_names())
    for row in listing:
        preset = get_preset(row["name"])
        assert preset is not None and row["timm model"] == preset.model
        assert row["weights"] == ("timm hub" if preset.hub else "--weights FILE")


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_listed_facts(listing: list[dict], name: str) -> None:
    row = next(r for r in listing if r["name"] == name)
    assert {k: row[k] for k in KNOWN[name]} == KNOWN[name]


def test_table_has_a_row_per_preset(listing: list[dict]) -> None:
    result = backbones()
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["name", "timm", "model"]
    rows = {
        line.split()[0]: line.split() for line in lines[2:] if line.strip() and not line.startswith("Use")
    }
    # grouped by family: each family's rows are contiguous, families apart by a blank line
    table = lines[2 : lines.index(next(line for line in lines if line.startswith("Use"))) - 1]
    groups: list[list[str]] = [[]]
    for line in table:
        if line:
            groups[-1].append(line)
        else:
            groups.append([])
    families = [{line.split()[0] for line in group} for group in groups]
    dinov3 = next(f for f in families if "dinov3_b" in f)
    assert {"dinov3_s", "dinov3_b", "dinov3_l", "dinov3_hplus", "dinov3_7b"} <= dinov3
    assert all(group for group in groups)
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
    result = backbones("vit_small_patch14*dinov2*", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(rows) == set(timm.list_pretrained("vit_small_patch14*dinov2*"))
    assert rows["vit_small_patch14_reg4_dinov2.lvd142m"]["prefix"] == 5
    assert rows["vit_small_patch14_dinov2.lvd142m"]["prefix"] == 1


def test_pattern_without_match_is_an_error() -> None:
    result = invoke("backbones", "no_such_model*", catch_exceptions=True)
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no timm model matches 'no_such_model*' (wildcards: * and ?)"


def test_registered_in_the_cli() -> None:
    result = invoke("--help", catch_exceptions=True)
    assert "backbones" in result.output


def test_parameter_counts_are_the_models(listing: list[dict]) -> None:
    """Counted without allocating: the meta-device count equals a real small model's."""
    row = next(r for r in listing if r["name"] == "dinov3_s")
    model = timm.create_model("vit_small_patch16_dinov3", num_classes=0)
    assert row["parameters"] == sum(p.numel() for p in model.parameters())
    assert row["params"] == f"{row['parameters'] / 1e6:.1f}M"
    assert next(r for r in listing if r["name"] == "dinov3_7b")["parameters"] > 6e9


@pytest.mark.heavy
@pytest.mark.parametrize(("name", "label"), [("tipsv2_b", "[0,1]"), ("mocov3_b", "imagenet")])
def test_listed_normalisation_is_what_extraction_uses(listing: list[dict], name: str, label: str) -> None:
    from maxa.extract.backbones import load_backbone
    from maxa.extract.config import RANDOM_INIT, BackboneSpec

    row = next(r for r in listing if r["name"] == name)
    backbone = load_backbone(BackboneSpec(name, weights=RANDOM_INIT, input_size=56 if "tips" in name else 64))
    assert row["normalise"] == label
    assert (tuple(row["mean"]), tuple(row["std"])) == (backbone.mean, backbone.std)


@pytest.mark.heavy
def test_preset_facts_file_is_current() -> None:
    """The listing reads the presets' rows from a file; it must be what describing the models gives now."""
    expected = backbone_commands.preset_facts_text()
    committed = FACTS_FILE.read_text(encoding="utf-8") if FACTS_FILE.exists() else ""
    if committed != expected:
        old = json.loads(committed or "{}").get("presets", {})
        new = json.loads(expected)["presets"]
        changed = sorted(n for n in old.keys() | new.keys() if old.get(n) != new.get(n))
        pytest.fail(
            f"{FACTS_FILE.name} is out of date for {changed or 'its layout'} (a preset or timm changed): "
            "run `maxa backbones --regenerate-facts` and commit the file"
        )


def test_a_preset_the_file_does_not_describe_is_described_live(
    listing: list[dict], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    facts = json.loads(FACTS_FILE.read_text(encoding="utf-8"))
    del facts["presets"]["dino_s"]  # e.g. a preset registered after the file was made
    facts["presets"]["dinov2_b"]["timm model"] = "vit_small_patch14_dinov2.lvd142m"  # an edited preset
    facts["presets"]["convnext_t"]["stored"] = "3/s32"  # edited stored layers
    stale = tmp_path / "facts.json"
    stale.write_text(json.dumps(facts), encoding="utf-8")
    monkeypatch.setattr(backbone_commands, "FACTS_FILE", stale)
    result = backbones("--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == listing
    monkeypatch.setattr(backbone_commands, "FACTS_FILE", tmp_path / "missing.json")
    assert json.loads(backbones("dino_s", "--json").output) == [r for r in listing if r["name"] == "dino_s"]


def test_a_preset_name_lists_that_preset(listing: list[dict]) -> None:
    result = backbones("dinov3_b", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [r for r in listing if r["name"] == "dinov3_b"]
    lines = backbones("dinov3_b").output.splitlines()
    assert lines[0].split()[:3] == ["name", "timm", "model"]
    assert lines[2].split()[:3] == ["dinov3_b", "vit_base_patch16_dinov3.lvd1689m", "DINOv3"]


def test_regenerate_facts_takes_no_pattern() -> None:
    result = invoke("backbones", "dinov2_b", "--regenerate-facts", catch_exceptions=True)
    assert result.exit_code == 1
    assert "give no PATTERN" in result.output
