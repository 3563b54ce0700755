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
from maxa.pipelines.params import TASK_KEYS, MatrixParams, Params, load_params
from maxa.probe.train import ProbeConfig

REPO = Path(__file__).resolve().parents[2]
REPO_PARAMS = REPO / "params.yaml"
PAPER_PARAMS = REPO / "pipelines/paper/params.yaml"


def _minimal() -> dict[str, Any]:
    return {
        "prepare": {"dataset": "synthetic", "label_size": 32, "shard_size": 8, "splits": {"train": 16}},
        "extract": {
            "batch_size": 4,
            "shard_size": 8,
            "backbones": {"vit": {"model": "vit_tiny_patch16_224", "input_size": 64}},
        },
        "probe": {"tasks": ["semantic"], "iterations": 10},
        "evaluate": {"batch_size": 8},
    }


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ---------------------------------------------------------------- params.yaml


def test_repository_params_validate() -> None:
    params = load_params(REPO_PARAMS)
    assert isinstance(params, Params)
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
    assert params.probe.tasks == raw["probe"]["tasks"]
    assert list(params.probe.configs) == raw["probe"]["tasks"]
    for task, config in params.probe.configs.items():
        assert isinstance(config, ProbeConfig)
        assert config.task == task
        assert config.iterations == raw["probe"]["iterations"]
        assert isinstance(config.layer, str)
    assert params.evaluate.batch_size == raw["evaluate"]["batch_size"]
    assert params.plots.count == raw["plots"]["count"]
    configs = params.prepare.configs()
    assert [c.split for c in configs] == list(raw["prepare"]["splits"])
    assert all(isinstance(c, PrepareConfig) for c in configs)
    assert [c.options["num_images"] for c in configs] == list(raw["prepare"]["splits"].values())


def test_minimal_params(tmp_path: Path) -> None:
    params = load_params(_write(tmp_path, _minimal()))
    assert isinstance(params, Params)
    vit = params.extract.backbones["vit"]
    assert vit.layers == [-1]  # the dataclass default
    assert vit.batch_size == 4 and vit.shard_size == 8
    assert params.probe.configs["semantic"].iterations == 10
    assert params.probe.configs["semantic"].lr == ProbeConfig().lr
    assert params.plots.count == 4  # the section is optional


def test_layers_string_parsed(tmp_path: Path) -> None:
    raw = _minimal()
    raw["extract"]["backbones"]["vit"]["layers"] = "-1,2"
    raw["extract"]["backbones"]["cnn"] = {"model": "convnext_atto", "layers": [0, 3]}
    raw["probe"]["layer"] = -1  # a YAML int becomes the string the CLI option takes
    params = load_params(_write(tmp_path, raw))
    assert isinstance(params, Params)
    assert params.extract.backbones["vit"].layers == [-1, 2]
    assert params.extract.backbones["cnn"].layers == [0, 3]
    assert params.probe.configs["semantic"].layer == "-1"


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


def test_probe_tasks_each_get_a_config(tmp_path: Path) -> None:
    raw = _minimal()
    raw["probe"]["tasks"] = ["semantic", "depth"]
    params = load_params(_write(tmp_path, raw))
    assert isinstance(params, Params)
    assert {t: c.task for t, c in params.probe.configs.items()} == {"semantic": "semantic", "depth": "depth"}
    assert {c.iterations for c in params.probe.configs.values()} == {10}


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ([], "non-empty list"),
        ("semantic", "non-empty list"),
        (["semantic", "semantic"], "twice"),
        (["semantik"], "did you mean semantic"),
    ],
)
def test_bad_task_lists_refused(tmp_path: Path, tasks: Any, message: str) -> None:
    raw = _minimal()
    raw["probe"]["tasks"] = tasks
    with pytest.raises(MaxaError, match=message):
        load_params(_write(tmp_path, raw))


def test_old_single_task_key_points_to_tasks(tmp_path: Path) -> None:
    raw = _minimal()
    raw["probe"]["task"] = "semantic"
    with pytest.raises(MaxaError, match=r"unknown keys \['task'\] \(list tasks under `tasks`\)"):
        load_params(_write(tmp_path, raw))


def test_plots_count_checked(tmp_path: Path) -> None:
    raw = _minimal()
    raw["plots"] = {"count": 0}
    with pytest.raises(MaxaError, match=r"plots\.count"):
        load_params(_write(tmp_path, raw))


def test_every_probe_key_reaches_the_dvc_stage() -> None:
    """A probe setting dvc.yaml does not pass would be silently ignored by `dvc repro`."""
    raw = yaml.safe_load(REPO_PARAMS.read_text())
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["probe"]
    for key in set(raw["probe"]) - {"tasks"}:
        assert f"${{probe.{key}}}" in stage["cmd"], key
        assert f"probe.{key}" in stage["params"], key
    assert "${item.task}" in stage["cmd"]


# ---------------------------------------------------------------- the paper matrix


def test_paper_params_validate() -> None:
    params = load_params(PAPER_PARAMS)
    assert isinstance(params, MatrixParams)
    raw = yaml.safe_load(PAPER_PARAMS.read_text())
    assert set(params.datasets) == set(raw["datasets"]) >= {"voc", "coco", "nyu"}
    assert len(params.extract.backbones) >= 8
    assert {b.weights for b in params.extract.backbones.values()} == {"pretrained", "random-init"}
    tasks = {run.config.task for run in params.tasks.values()}
    assert tasks == {"semantic", "depth", "boundary", "instance", "centers"}
    depth = params.tasks["depth"]
    assert depth.dataset == "nyu" and depth.config.iterations == raw["tasks"]["depth"]["iterations"]
    assert depth.config.lr == raw["probe"]["lr"]  # shared settings reach every run
    for name, run in params.tasks.items():
        assert run.config.query_grid == raw["tasks"][name]["query_grid"]
    configs = params.datasets["nyu"].configs()
    assert [c.split for c in configs] == ["train", "test"]
    assert [c.options["num_images"] for c in configs] == [795, 654]


def test_paper_dvc_yaml_passes_every_setting() -> None:
    raw = yaml.safe_load(PAPER_PARAMS.read_text())
    stages = yaml.safe_load((PAPER_PARAMS.parent / "dvc.yaml").read_text())["stages"]
    for run in raw["tasks"]:
        cmd = stages[f"probe_{run}"]["do"]["cmd"]
        for key in TASK_KEYS:
            assert f"${{tasks.{run}.{key}}}" in cmd, (run, key)
        for key in raw["probe"]:
            assert f"${{probe.{key}}}" in cmd, (run, key)
        assert f"--out models/{run}/" in cmd
    for name in raw["datasets"]:
        assert f"data/targets/{name}/train.zarr" in stages[f"extract_{name}"]["do"]["cmd"]


def _matrix() -> dict[str, Any]:
    return {
        "datasets": {
            "syn": {
                "dataset": "synthetic",
                "root": None,
                "label_size": 32,
                "shard_size": 8,
                "train_split": "train",
                "test_split": "val",
                "train_images": 16,
                "test_images": 8,
            }
        },
        "extract": {
            "batch_size": 4,
            "shard_size": 8,
            "backbones": {"vit": {"model": "vit_tiny_patch16_224"}},
        },
        "probe": {"lr": 0.01},
        "tasks": {"seg": {"task": "semantic", "dataset": "syn", "iterations": 5, "query_grid": 4}},
        "evaluate": {"batch_size": 8},
    }


def test_minimal_matrix(tmp_path: Path) -> None:
    params = load_params(_write(tmp_path, _matrix()))
    assert isinstance(params, MatrixParams)
    config = params.tasks["seg"].config
    assert (config.task, config.iterations, config.query_grid, config.lr) == ("semantic", 5, 4, 0.01)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda m: m["tasks"]["seg"].update(dataset="coco"),
            r"tasks\.seg: dataset 'coco' is not in datasets",
        ),
        (lambda m: m["tasks"]["seg"].update(lr=0.1), r"tasks\.seg: has keys .* expected exactly"),
        (lambda m: m["tasks"]["seg"].pop("query_grid"), r"tasks\.seg: has keys"),
        (lambda m: m["tasks"]["seg"].update(task="segment"), "unknown task 'segment'"),
        (
            lambda m: m["datasets"]["syn"].update(dataset="vocc"),
            r"datasets\.syn: unknown dataset reader 'vocc'",
        ),
        (lambda m: m["datasets"]["syn"].pop("test_split"), r"datasets\.syn"),
        (lambda m: m["datasets"]["syn"].update(train_images=0), "train_images"),
        (lambda m: m["probe"].update(task="semantic"), r"section probe: unknown keys \['task'\]"),
        (lambda m: m.pop("tasks"), r"lacks sections \['tasks'\]"),
        (lambda m: m["probe"].update(iterations=9), r"section probe: \['iterations'\] are set per task"),
    ],
)
def test_bad_matrix_refused(tmp_path: Path, change: Any, message: str) -> None:
    raw = _matrix()
    change(raw)
    with pytest.raises(MaxaError, match=message):
        load_params(_write(tmp_path, raw))


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
    assert set(raw["probe"]) - {"tasks"} <= names


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
