"""The `controls: true` switch: control entries per feature shape, read by every stage like a backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from maxa.core.errors import MaxaError
from maxa.extract.backbones import timm
from maxa.extract.config import ExtractConfig
from maxa.pipelines import controls as ctl
from maxa.pipelines import dvcgen
from maxa.pipelines.params import load_for_stage, load_params
from maxa.pipelines.stages import STAGES

BACKBONES = {
    "vit": {"model": "vit_tiny_patch16_224", "weights": "random-init", "input_size": 128, "layers": "-1"},
    "femto": {"model": "convnext_femto", "weights": "random-init", "input_size": 128, "layers": "2"},
    "vit64": {"model": "vit_tiny_patch16_224", "weights": "random-init", "input_size": 64, "layers": "-1"},
    "atto": {"model": "convnext_atto", "weights": "random-init", "input_size": 128, "layers": "2"},
}


def write(tmp_path: Path, **extra: object) -> Path:
    raw = {
        "datasets": {"syn": {"dataset": "synthetic", "train_images": 8, "test_images": 4}},
        "backbones": BACKBONES,
        "tasks": {"semantic": {"task": "semantic", "dataset": "syn"}},
        "local": {
            "knn": {"test": "knn", "dataset": "syn"},
            "knn_atto": {"test": "knn", "dataset": "syn", "backbones": ["atto"]},
        },
        **extra,
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def built_shapes(entry: dict) -> tuple:
    """Independent: build the model and read the shapes of its stored levels off a real forward pass."""
    side = entry["input_size"]
    size = {"img_size": side} if entry["model"].startswith("vit") else {}
    model = timm.create_model(entry["model"], pretrained=False, num_classes=0, **size).eval()
    with torch.no_grad():
        levels = model.forward_intermediates(
            torch.zeros(1, 3, side, side), indices=[int(entry["layers"])], intermediates_only=True
        )
    return tuple((*level.shape[2:], level.shape[1]) for level in levels)


def test_one_control_pair_per_distinct_feature_shape(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, controls=True))
    groups = ctl.controls(params.backbones)
    shapes = {name: built_shapes(entry) for name, entry in BACKBONES.items()}
    assert shapes["vit"] == shapes["femto"] == ((8, 8, 192),)  # the premise: a ViT and a ConvNet alike
    assert len({shapes[n] for n in shapes}) == 3
    by_shape: dict[tuple, list[str]] = {}
    for name, shape in shapes.items():
        by_shape.setdefault(shape, []).append(name)
    expected = {
        f"control_{kind}.{members[0]}": members
        for members in by_shape.values()
        for kind in ("noise", "position")
    }
    assert groups == expected


def _entry(path: Path, name: str) -> ExtractConfig:
    """What `maxa extract --params PATH --backbone NAME` runs with."""
    entry: ExtractConfig = STAGES["extract"].entry(load_for_stage(path), name, path)
    return entry


def test_a_control_entry_is_its_backbones_entry_with_the_controls_weights(tmp_path: Path) -> None:
    path = write(tmp_path, controls=True)
    (tmp_path / "dvc.yaml").unlink(missing_ok=True)
    config = _entry(path, "control_position.femto")
    assert config.weights == "control:position" and config.name == "control_position.femto"
    assert (config.model, config.input_size, config.layers) == ("convnext_femto", 128, [2])
    with pytest.raises(MaxaError, match=r"no entry 'control_noise\.nope'"):
        _entry(path, "control_noise.nope")
    off = write(tmp_path, controls=False)
    with pytest.raises(MaxaError, match=r"no entry 'control_noise\.vit'"):
        _entry(off, "control_noise.vit")


def test_bad_switch_values_and_taken_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MaxaError, match="controls must be true or false, got 'yes please'"):
        load_params(write(tmp_path, controls="yes please"))
    clash = {**BACKBONES, "control_noise.vit": BACKBONES["vit"]}
    path = write(tmp_path, controls=True)
    raw = yaml.safe_load(path.read_text())
    raw["backbones"] = clash
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(MaxaError, match=r"backbones \['control_noise.vit'\] are named like the control"):
        load_params(path)


def test_every_per_backbone_stage_gets_a_controls_twin(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, controls=True))
    stages = dvcgen.pipeline(params)["stages"]
    per_backbone = [name for name, stage in stages.items() if stage.get("foreach") == "${backbones}"]
    assert set(per_backbone) == {"extract_syn", "probe_semantic", "evaluate_semantic", "local_knn"}
    groups = ctl.controls(params.backbones)
    for name in per_backbone:
        twin = stages[f"{name}_controls"]
        assert set(twin["foreach"]) == set(groups)
        assert twin["do"]["cmd"] == stages[name]["do"]["cmd"]
    # a control's extraction re-runs when the switch or the backbone it copies changes
    (tracked,) = stages["extract_syn_controls"]["do"]["params"]
    assert next(iter(tracked.values()))[:2] == ["controls", "backbones.${item.like}"]
    # a local test run on some backbones runs on the controls of their shapes only
    assert stages["local_knn_atto_controls"]["foreach"] == ["control_noise.atto", "control_position.atto"]
    assert not any(n.endswith("_controls") for n in dvcgen.pipeline(load_params(write(tmp_path)))["stages"])


def test_a_stage_reads_its_control_entry_without_grouping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Grouping reads timm (seconds): only `maxa pipeline` does it; a stage resolves its name alone."""
    path = write(tmp_path, controls=True)

    def no_grouping(*args: object) -> None:
        raise AssertionError("a stage grouped the backbones by shape (timm)")

    monkeypatch.setattr(dvcgen, "controls", no_grouping)
    monkeypatch.setattr(ctl, "controls", no_grouping)
    monkeypatch.setattr(ctl, "shape_key", no_grouping)
    assert _entry(path, "control_noise.vit").weights == "control:noise"
