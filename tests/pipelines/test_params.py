"""Tests for params.yaml validation (pipelines/params.py) and the dataclass-generated CLI options."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from maxa.extract.config import ExtractConfig
from maxa.extract.errors import MaxaError
from maxa.extract.targets import PrepareConfig
from maxa.pipelines.options import build_config, config_options
from maxa.pipelines.params import load_params
from maxa.probe.train import ProbeConfig

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _minimal() -> dict[str, Any]:
    return {
        "prepare": {"dataset": "synthetic", "label_size": 32, "shard_size": 8, "splits": {"train": 16}},
        "extract": {
            "batch_size": 4,
            "shard_size": 8,
            "backbones": {"vit": {"model": "vit_tiny_patch16_224", "input_size": 64}},
        },
        "probe": {"task": "semantic", "iterations": 10},
        "evaluate": {"batch_size": 8},
    }


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ---------------------------------------------------------------- params.yaml


def test_repository_params_validate() -> None:
    params = load_params(REPO_PARAMS)
    raw = yaml.safe_load(REPO_PARAMS.read_text())
    assert set(params.extract.backbones) == set(raw["extract"]["backbones"])
    assert params.extract.backbones  # at least one
    for name, config in params.extract.backbones.items():
        entry = raw["extract"]["backbones"][name]
        assert isinstance(config, ExtractConfig)
        assert config.name == name
        assert {"model", "weights", "input_size", "layers"} <= set(entry)
        assert config.model == entry["model"]
        assert config.weights == entry["weights"]
        assert config.input_size == entry["input_size"]
        assert config.layers and all(isinstance(layer, int) for layer in config.layers)
        # Section-wide settings are copied into every backbone.
        assert config.batch_size == raw["extract"]["batch_size"]
        assert config.shard_size == raw["extract"]["shard_size"]
    assert isinstance(params.probe, ProbeConfig)
    assert params.probe.iterations == raw["probe"]["iterations"]
    assert isinstance(params.probe.layer, str)
    assert params.evaluate.batch_size == raw["evaluate"]["batch_size"]
    configs = params.prepare.configs()
    assert [c.split for c in configs] == list(raw["prepare"]["splits"])
    assert all(isinstance(c, PrepareConfig) for c in configs)
    assert [c.options["num_images"] for c in configs] == list(raw["prepare"]["splits"].values())


def test_minimal_params(tmp_path: Path) -> None:
    params = load_params(_write(tmp_path, _minimal()))
    vit = params.extract.backbones["vit"]
    assert vit.layers == [-1]  # the dataclass default
    assert vit.batch_size == 4 and vit.shard_size == 8
    assert params.probe.iterations == 10
    assert params.probe.lr == ProbeConfig().lr


def test_layers_string_parsed(tmp_path: Path) -> None:
    raw = _minimal()
    raw["extract"]["backbones"]["vit"]["layers"] = "-1,2"
    raw["extract"]["backbones"]["cnn"] = {"model": "convnext_atto", "layers": [0, 3]}
    raw["probe"]["layer"] = -1  # a YAML int becomes the string the CLI option takes
    params = load_params(_write(tmp_path, raw))
    assert params.extract.backbones["vit"].layers == [-1, 2]
    assert params.extract.backbones["cnn"].layers == [0, 3]
    assert params.probe.layer == "-1"


def test_malformed_layers_refused(tmp_path: Path) -> None:
    raw = _minimal()
    raw["extract"]["backbones"]["vit"]["layers"] = "-1,last"
    with pytest.raises(MaxaError, match=r"extract\.backbones\.vit") as info:
        load_params(_write(tmp_path, raw))
    assert "layers" in str(info.value)


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ("probe", ("probe",)),
        ("prepare", ("prepare",)),
        ("evaluate", ("evaluate",)),
        ("extract", ("extract",)),
        ("extract.backbones.vit", ("extract", "backbones", "vit")),
    ],
)
def test_unknown_key_names_key_and_section(tmp_path: Path, section: str, path: tuple[str, ...]) -> None:
    raw = _minimal()
    target = raw
    for part in path:
        target = target[part]
    target["learning_rate"] = 0.1
    with pytest.raises(MaxaError) as info:
        load_params(_write(tmp_path, raw))
    message = str(info.value)
    assert "learning_rate" in message
    assert f"section {section}:" in message


@pytest.mark.parametrize("section", ["prepare", "extract", "probe", "evaluate"])
def test_missing_section_refused(tmp_path: Path, section: str) -> None:
    raw = _minimal()
    del raw[section]
    with pytest.raises(MaxaError, match="lacks sections") as info:
        load_params(_write(tmp_path, raw))
    assert repr([section]) in str(info.value)


def test_no_backbones_refused(tmp_path: Path) -> None:
    raw = _minimal()
    raw["extract"]["backbones"] = {}
    with pytest.raises(MaxaError, match="no backbone"):
        load_params(_write(tmp_path, raw))


def test_invalid_value_refused(tmp_path: Path) -> None:
    raw = _minimal()
    raw["probe"]["iterations"] = 0
    with pytest.raises(MaxaError, match="iterations"):
        load_params(_write(tmp_path, raw))


def test_unreadable_yaml_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("probe: [unclosed\n")
    with pytest.raises(MaxaError, match="cannot read"):
        load_params(path)
    with pytest.raises(MaxaError, match="cannot read"):
        load_params(tmp_path / "absent.yaml")


# ---------------------------------------------------------------- CLI options from dataclasses


def _command(cls: type, captured: dict[str, Any]) -> click.Command:
    @click.command()
    @config_options(cls)
    def command(**values: Any) -> None:
        captured["values"] = values
        captured["config"] = build_config(cls, values)

    return command


@pytest.mark.parametrize("cls", [ProbeConfig, ExtractConfig])
def test_option_names_mirror_fields(cls: type) -> None:
    command = _command(cls, {})
    names = {p.name for p in command.params}
    assert names == {f.name for f in dataclasses.fields(cls)}
    flags = {opt for p in command.params for opt in p.opts}
    assert flags == {"--" + f.name.replace("_", "-") for f in dataclasses.fields(cls)}


def test_params_yaml_keys_are_cli_options() -> None:
    raw = yaml.safe_load(REPO_PARAMS.read_text())
    names = {p.name for p in _command(ProbeConfig, {}).params}
    assert set(raw["probe"]) <= names


def test_probe_defaults_match_dataclass() -> None:
    captured: dict[str, Any] = {}
    result = CliRunner().invoke(_command(ProbeConfig, captured), [])
    assert result.exit_code == 0, result.output
    assert captured["config"] == ProbeConfig()


def test_probe_options_parsed() -> None:
    captured: dict[str, Any] = {}
    args = [
        "--iterations",
        "25",
        "--lr",
        "0.005",
        "--layer",
        "-2",
        "--adapter",
        "linear",
        "--query-grid",
        "4",
        "--weight-decay",
        "0",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(_command(ProbeConfig, captured), args)
    assert result.exit_code == 0, result.output
    config = captured["config"]
    assert isinstance(config, ProbeConfig)
    assert config == ProbeConfig(
        iterations=25, lr=0.005, layer="-2", adapter="linear", query_grid=4, weight_decay=0.0, device="cpu"
    )
    assert isinstance(config.iterations, int) and isinstance(config.lr, float)


def test_extract_options_parsed() -> None:
    captured: dict[str, Any] = {}
    args = ["--model", "convnext_atto", "--layers", "-1,2", "--input-size", "64", "--norm"]
    result = CliRunner().invoke(_command(ExtractConfig, captured), args)
    assert result.exit_code == 0, result.output
    config = captured["config"]
    assert config.layers == [-1, 2]
    assert config.input_size == 64
    assert config.norm is True
    assert config.model == "convnext_atto"
    assert config.weights == ExtractConfig(model="m").weights


def test_extract_model_required() -> None:
    result = CliRunner().invoke(_command(ExtractConfig, {}), [])
    assert result.exit_code == 2
    assert "--model" in result.output


def test_non_integer_option_rejected_by_click() -> None:
    result = CliRunner().invoke(_command(ProbeConfig, {}), ["--iterations", "many"])
    assert result.exit_code == 2
    assert "--iterations" in result.output


def test_bad_iterations_is_maxa_error() -> None:
    result = CliRunner().invoke(_command(ProbeConfig, {}), ["--iterations", "0"])
    assert isinstance(result.exception, MaxaError)
    assert "--iterations" in str(result.exception)
    with pytest.raises(MaxaError, match="iterations"):
        build_config(ProbeConfig, {"iterations": 0})


def test_build_config_ignores_foreign_keys_and_rejects_bad_layers() -> None:
    config = build_config(ExtractConfig, {"model": "m", "layers": "3", "out": "elsewhere", "overwrite": True})
    assert config.layers == [3]
    with pytest.raises(click.BadParameter):
        build_config(ExtractConfig, {"model": "m", "layers": "a,b"})
