"""params.yaml validation (pipelines/params.py), the generated dvc.yaml (pipelines/dvcgen.py) and the
dataclass-generated CLI options (pipelines/options.py)."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from maxa.core.errors import MaxaError
from maxa.evaluate.config import EvaluateConfig, PlotsParams
from maxa.extract.config import ExtractConfig, PrepareConfig
from maxa.extract.reader_specs import READERS
from maxa.pipelines import dvcgen
from maxa.pipelines.options import build_config, config_options
from maxa.pipelines.params import (
    BACKBONE_KEYS,
    EXTRACT_SHARED,
    PROBE_SHARED,
    RUN_KEYS,
    DatasetEntry,
    Params,
    load_params,
)
from maxa.probe.adapter_specs import ADAPTERS
from maxa.probe.config import ProbeConfig
from maxa.probe.task_specs import TASKS

REPO = Path(__file__).resolve().parents[2]
REPO_PARAMS = REPO / "params.yaml"
PAPER_PARAMS = REPO / "pipelines/paper/params.yaml"


def _minimal() -> dict[str, Any]:
    return {
        "datasets": {
            "syn": {
                "dataset": "synthetic",
                "train_images": 16,
                "test_images": 8,
                "options": {"image_size": 32},
            },
            "other": {"dataset": "synthetic", "test_split": "train", "label_size": 32},
        },
        "backbones": {"vit": {"model": "vit_tiny_patch16_224"}},
        "tasks": {"seg": {"task": "semantic", "dataset": "syn"}},
        "extract": {},
        "probe": {},
        "evaluate": {},
        "plots": {},
    }


def _write(tmp_path: Path, raw: dict[str, Any], name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


# ---------------------------------------------------------------- the repository's params files


def test_repository_params_validate() -> None:
    params = load_params(REPO_PARAMS)
    raw = yaml.safe_load(REPO_PARAMS.read_text())
    assert set(params.backbones) == set(raw["backbones"])
    for name, config in params.backbones.items():
        entry = raw["backbones"][name]
        assert isinstance(config, ExtractConfig)
        assert config.name == name
        assert (config.model, config.weights, config.input_size) == (
            entry["model"],
            entry["weights"],
            entry["input_size"],
        )
        assert config.layers == [int(v) for v in str(entry["layers"]).split(",")]
        assert config.batch_size == raw["extract"]["batch_size"]  # the shared section reaches every backbone
    assert list(params.tasks) == list(raw["tasks"])
    for run, entry in params.tasks.items():
        assert entry.config.task == raw["tasks"][run]["task"]
        assert entry.config.iterations == raw["probe"]["iterations"]
    assert params.evaluate.batch_size == raw["evaluate"]["batch_size"]
    assert params.plots.count == raw["plots"]["count"]
    train = params.datasets["synthetic"].prepare_config("train")
    assert isinstance(train, PrepareConfig)
    assert train.options["num_images"] == raw["datasets"]["synthetic"]["train_images"]
    assert (
        params.datasets["synthetic"].prepare_config("test").split
        == raw["datasets"]["synthetic"]["test_split"]
    )


def test_paper_params_validate() -> None:
    params = load_params(PAPER_PARAMS)
    raw = yaml.safe_load(PAPER_PARAMS.read_text())
    assert set(params.datasets) == set(raw["datasets"]) >= {"voc", "coco_boundary", "coco_centers", "nyu"}
    assert len(params.backbones) >= 8
    assert {b.weights for b in params.backbones.values()} == {"pretrained", "random-init"}
    assert params.controls  # the control stores come from the switch, not from backbone entries
    assert {run.config.task for run in params.tasks.values()} == set(TASKS.names())
    depth = params.tasks["depth"]
    assert depth.dataset == "nyu" and depth.config.iterations == raw["tasks"]["depth"]["iterations"]
    assert depth.config.lr == raw["probe"]["lr"]  # shared settings reach every run
    nyu = params.datasets["nyu"]
    assert [nyu.prepare_config(r).split for r in ("train", "test")] == ["train", "validation"]
    assert nyu.prepare_config("train").options == {"num_images": 42000}
    held_out = params.datasets["coco_boundary"].prepare_config("test")
    assert held_out.split == "train" and held_out.options["start"] == 100000  # train2017[100000:100500]
    assert held_out.options["num_images"] == 500 and held_out.options["overlap"] == "first"


@pytest.mark.parametrize("path", [REPO_PARAMS, PAPER_PARAMS], ids=["demo", "paper"])
def test_committed_dvc_yaml_is_the_generated_one(path: Path) -> None:
    """dvc.yaml is derived from params.yaml; a hand edit or a stale file fails here."""
    assert (path.parent / "dvc.yaml").read_text() == dvcgen.render(load_params(path))
    result = CliRunner().invoke(_cli(), ["pipeline", str(path), "--check"])
    if path == PAPER_PARAMS:  # current, but the guard stops it here: the paper's datasets are not on this box
        assert result.exit_code == 1 and "out of date" not in result.output
        assert "datasets.voc.root: /datasets/VOCdevkit/VOC2012 does not exist" in result.output
        return
    assert result.exit_code == 0, result.output


def _cli() -> click.Group:
    from maxa.pipelines.cli import cli

    return cli


def test_pipeline_command_writes_checks_and_keeps_hand_written_files(tmp_path: Path) -> None:
    path = _write(tmp_path, _minimal())
    runner = CliRunner()
    stale = runner.invoke(_cli(), ["pipeline", str(path), "--check"])
    assert stale.exit_code == 1 and "out of date" in stale.output
    assert not (tmp_path / "dvc.yaml").exists()
    assert runner.invoke(_cli(), ["pipeline", str(path)]).exit_code == 0
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    assert set(stages) == {
        "pipeline",
        "prepare_syn",
        "prepare_other",
        "extract_syn",
        "extract_other",
        "probe_seg",
        "evaluate_seg",
        "report",
        "plots",
    }
    assert "--run seg" in stages["probe_seg"]["do"]["cmd"]
    assert "data/features/syn/${key}/train.zarr" in stages["probe_seg"]["do"]["cmd"]
    hand = tmp_path / "hand" / "dvc.yaml"
    hand.parent.mkdir()
    hand.write_text("stages: {}\n")
    refused = runner.invoke(_cli(), ["pipeline", str(path), "--out", str(hand)])
    assert refused.exit_code == 1 and "not written by `maxa pipeline`" in refused.output
    assert hand.read_text() == "stages: {}\n"


def test_dvc_yaml_spells_no_setting_as_a_flag() -> None:
    """The stages pass entry names and paths only; settings reach them through --params."""
    text = (REPO / "dvc.yaml").read_text()
    for name in {*PROBE_SHARED, *EXTRACT_SHARED, "model", "label_size", "dataset", "count"}:
        assert f"--{name.replace('_', '-')} " not in text, name
    assert "${probe." not in text and "${extract." not in text and "${datasets." not in text


# ---------------------------------------------------------------- every key changes what a stage does


class _Stop(Exception):
    """Raised by the stand-ins of the stage functions once they have recorded their input."""


STAGE_FUNCTIONS = {
    "prepare": ("maxa.extract.targets", "prepare"),
    "extract": ("maxa.extract.features", "extract"),
    "probe": ("maxa.probe.train", "train"),
    "evaluate": ("maxa.evaluate.intervals", "evaluate_with_uncertainty"),
    "plots": ("maxa.pipelines.report_commands", "make_plots"),
}


@pytest.fixture(scope="module")
def calls() -> typing.Iterator[list[Any]]:
    """Replace each stage's work with a recorder, so the CLI runs up to the call and stops there."""
    import importlib

    recorded: list[Any] = []
    patch = pytest.MonkeyPatch()
    for module, name in STAGE_FUNCTIONS.values():

        def record(*args: Any, **kwargs: Any) -> None:
            recorded.append((args, kwargs))
            raise _Stop

        patch.setattr(importlib.import_module(module), name, record)
    yield recorded
    patch.undo()


def _invoke(calls: list[Any], args: list[str]) -> str:
    calls.clear()
    result = CliRunner().invoke(_cli(), args)
    assert isinstance(result.exception, _Stop), (args, result.output, result.exception)
    ((positional, keywords),) = calls
    return repr((positional, sorted(keywords.items())))


def _substitute(value: Any, raw: dict[str, Any]) -> Any:
    """DVC's `${a.b}` interpolation of params (the stage-local ${key}/${item} stay as written)."""
    import re

    def lookup(match: re.Match[str]) -> str:
        node: Any = raw
        for part in match.group(1).split("."):
            if not isinstance(node, dict) or part not in node:
                return match.group(0)
            node = node[part]
        return match.group(0) if isinstance(node, (dict, list)) else str(node)  # foreach: only its keys

    return yaml.safe_load(re.sub(r"\$\{([\w.]+)\}", lookup, yaml.safe_dump(value)))


def _behaviour(calls: list[Any], path: Path) -> dict[str, Any]:
    """What each stage would do with this params file: the call it makes, and its DVC stage."""
    raw = yaml.safe_load(path.read_text())
    params = load_params(path)
    done: dict[str, Any] = {}
    stages = dvcgen.pipeline(params)["stages"]
    for name, stage in stages.items():
        done[f"dvc:{name}"] = _substitute(stage, raw)
    base = ["--params", str(path)]
    for data in params.datasets:
        for role in ("train", "test"):
            done[f"prepare:{data}:{role}"] = _invoke(
                calls, ["prepare", *base, "--data", data, "--role", role, "--out", "t.zarr"]
            )
    for backbone in params.backbones:
        done[f"extract:{backbone}"] = _invoke(
            calls, ["extract", *base, "--backbone", backbone, "--targets", "t.zarr", "--out", "f.zarr"]
        )
    for run in params.tasks:
        stores = ["--features", "f.zarr", "--targets", "t.zarr"]
        done[f"probe:{run}"] = _invoke(calls, ["probe", *base, "--run", run, *stores, "--out", "m.pt"])
        done[f"evaluate:{run}"] = _invoke(
            calls, ["evaluate", *base, "--checkpoint", "m.pt", *stores, "--out", "x.json"]
        )
    out = ["--out", str(path.parent / "plots"), "--data-out", str(path.parent / "plot_data")]
    done["plots:"] = _invoke(calls, ["plots", *base, "--features", "f.zarr", *out])
    return done


def _changed(cls: type, name: str, value: Any, tmp_path: Path) -> Any:
    """A different valid value for a field, derived from its type and metadata (so new fields are covered)."""
    spec = {f.name: f for f in dataclasses.fields(cls)}[name]
    hint = typing.get_type_hints(cls)[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    kind = typing.get_origin(hint) or hint
    if spec.metadata.get("choices"):
        return next(c for c in spec.metadata["choices"] if c != value)
    if kind is bool:
        return not value
    if kind is int:
        return 96 if value is None else value + 1
    if kind is float:
        return value / 2 if value else 0.5
    if kind is list:
        element = (typing.get_args(hint) or (str,))[0]
        return [*value, element(1)]
    if kind is dict:
        return {**value, "added_option": 1}
    if kind is str:
        if isinstance(value, int):  # a size that also takes a word ("native") or HxW
            return value + 8
        if name == "input_size":
            return "96x128"
        sweep = {
            "sweep_lrs": "0.002",
            "sweep_seeds": "0,1",
            "sweep_layers": "-2",
        }  # one lr/layer: no hold-out
        if name in sweep:
            return sweep[name]
        if name == "root":
            return str(tmp_path)
        if name == "layer":
            return "-2"
        return f"{value or ''}x"
    raise AssertionError(f"{cls.__name__}.{name}: no rule to change a {hint} value; add one here")


def _leaves() -> list[tuple[tuple[str, ...], type, str]]:
    """Every key the schema accepts: (where in params.yaml, its dataclass, the field)."""
    leaves: list[tuple[tuple[str, ...], type, str]] = []
    leaves += [(("datasets", "syn"), DatasetEntry, f.name) for f in dataclasses.fields(DatasetEntry)]
    leaves += [(("extract",), ExtractConfig, name) for name in EXTRACT_SHARED]
    leaves += [(("backbones", "vit"), ExtractConfig, name) for name in BACKBONE_KEYS]
    leaves += [(("probe",), ProbeConfig, name) for name in PROBE_SHARED]
    leaves += [(("tasks", "seg"), ProbeConfig, name) for name in RUN_KEYS if name != "dataset"]
    leaves += [(("tasks", "seg"), DatasetEntry, "dataset")]  # a run's dataset: an entry name (below)
    leaves += [(("evaluate",), EvaluateConfig, f.name) for f in dataclasses.fields(EvaluateConfig)]
    leaves += [(("plots",), PlotsParams, f.name) for f in dataclasses.fields(PlotsParams)]
    return leaves


def _covers(stage: dict[str, Any], key: str, names: dict[str, str]) -> bool:
    body = stage.get("do", stage)
    if {"params.yaml": None} in body.get("params", []):
        return True  # DVC tracks the whole file for this stage
    keys = [k for entry in body.get("params", []) for k in entry.get(dvcgen.TRACKED, [])]
    listed = [str(p).replace("${key}", names["key"]) for p in keys]
    return any(key == p or key.startswith(p + ".") for p in listed)


@pytest.mark.heavy
def test_every_key_changes_what_a_stage_does(calls: list[Any], tmp_path: Path) -> None:
    """Walk the whole schema: each key, changed in params.yaml, changes a stage's call or its DVC stage,
    and that stage lists the key under `params:` so `dvc repro` re-runs it. No key is accepted and ignored."""
    base_raw = _minimal()
    before = _behaviour(calls, _write(tmp_path, base_raw, "base.yaml"))
    stages = dvcgen.pipeline(load_params(tmp_path / "base.yaml"))["stages"]
    dvc_stage_of = {
        "prepare": "prepare_{}",
        "extract": "extract_syn",
        "probe": "probe_{}",
        "evaluate": "evaluate_{}",
        "plots": "plots",
    }
    walked = []
    for where, cls, name in _leaves():
        raw = copy.deepcopy(base_raw)
        section = raw
        for part in where:
            section = section[part]
        if where == ("tasks", "seg") and name == "dataset":
            new = "other"
        else:
            default = {f.name: f for f in dataclasses.fields(cls)}[name]
            current = section.get(
                name, default.default_factory() if callable(default.default_factory) else default.default
            )
            new = _changed(cls, name, current, tmp_path)
        section[name] = new
        after = _behaviour(calls, _write(tmp_path, raw, "changed.yaml"))
        differ = sorted(k for k in before if before[k] != after[k])
        key = ".".join([*where, name])
        assert differ, f"{key} changed to {new!r}, but no stage does or records anything different"
        for stage_id in differ:  # the stage that behaves differently declares the key to DVC
            kind, *rest = stage_id.split(":")
            dvc_name = rest[0] if kind == "dvc" else dvc_stage_of[kind].format(*rest[:1])
            covered = _covers(stages[dvc_name], key, {"key": "vit"})
            if kind == "dvc":  # a changed stage definition: the `pipeline` stage makes DVC flag it as stale
                covered = covered or _covers(stages["pipeline"], key, {"key": "vit"})
            assert covered, (key, stage_id, stages[dvc_name])
        walked.append(key)
    assert len(walked) == len(set(walked)) > 60


# ---------------------------------------------------------------- bad params


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["probe"].update(learning_rate=1), r"section probe: unknown keys \['learning_rate'\]"),
        (lambda m: m["extract"].update(model="x"), r"section extract: unknown keys \['model'\]"),
        (
            lambda m: m["backbones"]["vit"].update(name="y"),
            r"section backbones\.vit: unknown keys \['name'\]",
        ),
        (
            lambda m: m["datasets"]["syn"].update(splits={}),
            r"section datasets\.syn: unknown keys \['splits'\]",
        ),
        (lambda m: m["evaluate"].update(batch=1), r"section evaluate: unknown keys"),
        (lambda m: m.update(prepare={}), r"unknown sections \['prepare'\]"),
        (lambda m: m.pop("tasks"), r"lacks sections \['tasks'\]"),
        (lambda m: m["backbones"].clear(), "backbones lists no entry"),
        (lambda m: m["probe"].update(task="semantic"), r"unknown keys \['task'\] \(a task is set per run"),
        (
            lambda m: m["tasks"]["seg"].update(dataset="coco"),
            r"tasks\.seg: dataset 'coco' is not in datasets",
        ),
        (lambda m: m["tasks"]["seg"].pop("task"), r"tasks\.seg: missing \['task'\]"),
        (
            lambda m: m["tasks"]["seg"].update(task="semantik"),
            r"tasks\.seg: --task: unknown task 'semantik'; did you mean semantic",
        ),
        (
            lambda m: m["tasks"]["seg"].update(adapter="maxx"),
            r"tasks\.seg: --adapter: unknown adapter .maxx.; did you mean maxa",
        ),
        (lambda m: m["tasks"]["seg"].update(iterations=0), r"tasks\.seg: --iterations"),
        (lambda m: m["tasks"]["seg"].update(lr="fast"), r"tasks\.seg: lr must be a number"),
        (lambda m: m["tasks"].update({"a b": {}}), r"entry name 'a b'"),
        (
            lambda m: m["datasets"]["syn"].update(dataset="vocc"),
            r"datasets\.syn: --dataset: unknown dataset .vocc.; did you mean voc",
        ),
        (lambda m: m["datasets"]["syn"].update(train_images=0), r"datasets\.syn: train_images must be >= 1"),
        (lambda m: m["datasets"]["syn"]["options"].update(num_images=3), r"set train_images / test_images"),
        (
            lambda m: m["backbones"]["vit"].update(layers="-1,last"),
            r"backbones\.vit\.layers: expected comma-separated integers",
        ),
        (
            lambda m: m["backbones"]["vit"].update(precision="half"),
            r"backbones\.vit: --precision: unknown precision 'half' \(known: auto, fp32",
        ),
        (lambda m: m["plots"].update(count=0), r"plots\.count must be 1\.\.64"),
    ],
)
def test_bad_params_refused(tmp_path: Path, change: Any, message: str) -> None:
    raw = _minimal()
    change(raw)
    with pytest.raises(MaxaError, match=message):
        load_params(_write(tmp_path, raw))


def test_defaults_come_from_the_dataclasses(tmp_path: Path) -> None:
    raw = _minimal()
    for section in ("extract", "probe", "evaluate", "plots"):
        raw.pop(section)  # optional: every value has its dataclass default
    params = load_params(_write(tmp_path, raw))
    assert isinstance(params, Params)
    assert params.tasks["seg"].config == ProbeConfig(task="semantic")
    assert params.backbones["vit"] == ExtractConfig(model="vit_tiny_patch16_224", name="vit")
    assert params.evaluate == EvaluateConfig() and params.plots == PlotsParams()
    other = params.datasets["other"].prepare_config("train")
    assert other.shard_size == PrepareConfig().shard_size and other.options == {}  # no train_images: all


def test_yaml_scalars_are_coerced(tmp_path: Path) -> None:
    raw = _minimal()
    raw["probe"].update(lr="1e-3", layer=-2)  # YAML reads 1e-3 as a string; an int layer is fine
    raw["backbones"]["vit"]["layers"] = "-1,2"
    params = load_params(_write(tmp_path, raw))
    assert params.tasks["seg"].config.lr == 1e-3 and params.tasks["seg"].config.layer == "-2"
    assert params.backbones["vit"].layers == [-1, 2]


def test_unreadable_yaml_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("probe: [unclosed\n")
    with pytest.raises(MaxaError, match="cannot read"):
        load_params(path)
    with pytest.raises(MaxaError, match="cannot read"):
        load_params(tmp_path / "absent.yaml")


# ---------------------------------------------------------------- the CLI: --params and overrides


def test_command_line_overrides_the_params_entry(calls: list[Any], tmp_path: Path) -> None:
    path = _write(tmp_path, _minimal())
    stores = ["--features", "f.zarr", "--targets", "t.zarr", "--out", "m.pt"]
    _invoke(
        calls, ["probe", "--params", str(path), "--run", "seg", *stores, "--lr", "0.5", "--task", "depth"]
    )
    config = calls[0][0][0]
    assert (config.lr, config.task, config.iterations) == (0.5, "depth", ProbeConfig().iterations)
    _invoke(
        calls,
        ["prepare", "--params", str(path), "--data", "syn", "--role", "test", "-o", "seed=3", "--out", "t"],
    )
    prepared = calls[0][0][0]
    assert prepared.options == {"image_size": 32, "num_images": 8, "seed": 3} and prepared.split == "val"
    _invoke(
        calls,
        ["extract", "--params", str(path), "--backbone", "vit", "--targets", "t", "--out", "f", "--norm"],
    )
    assert calls[0][0][0] == ExtractConfig(model="vit_tiny_patch16_224", name="vit", norm=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["probe", "--run", "seg"], "--run needs --params"),
        (["probe", "--params", "{p}"], "--params needs --run"),
        (["probe", "--params", "{p}", "--run", "nope"], "tasks has no entry 'nope' (entries: seg)"),
        (["extract", "--params", "{p}", "--backbone", "vitt"], "backbones has no entry 'vitt'"),
        (["extract"], "give --model"),
        (["prepare", "--params", "{p}", "--data", "syn"], "--data and --role go together"),
    ],
)
def test_params_selection_errors(tmp_path: Path, args: list[str], message: str) -> None:
    path = _write(tmp_path, _minimal())
    stores = ["--features", "f", "--targets", "t", "--out", "o"] if args[0] == "probe" else ["--out", "o"]
    if args[0] == "extract":
        stores = ["--targets", "t", "--out", "o"]
    result = CliRunner().invoke(_cli(), [a.replace("{p}", str(path)) for a in args] + stores)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


# ---------------------------------------------------------------- fixed sets of values


def test_cli_choices_are_the_registries() -> None:
    """--task, --adapter and --dataset offer exactly the registered names (read off the specs)."""
    cli = _cli()
    probe = {p.name: p for p in cli.commands["probe"].params}
    prepare = {p.name: p for p in cli.commands["prepare"].params}
    assert (
        list(probe["task"].type.choices)
        == TASKS.names()
        == ["semantic", "depth", "boundary", "instance", "centers"]
    )
    assert list(probe["adapter"].type.choices) == ADAPTERS.names() == ["maxa", "linear", "knn"]
    assert list(prepare["dataset"].type.choices) == READERS.names()


@pytest.mark.parametrize("command", ["prepare", "extract", "probe", "evaluate"])
def test_fixed_value_options_are_choices(command: str) -> None:
    cli = _cli()
    options = {p.name: p for p in cli.commands[command].params}
    for cls in (PrepareConfig, ExtractConfig, ProbeConfig, EvaluateConfig):
        for f in dataclasses.fields(cls):
            if f.metadata.get("choices") and f.name in options and command in _OWNER[cls]:
                assert isinstance(options[f.name].type, click.Choice), (command, f.name)
                assert list(options[f.name].type.choices) == list(f.metadata["choices"])
    help_text = " ".join(CliRunner().invoke(cli, [command, "--help"]).output.split())
    if command == "probe":
        assert "semantic|depth|boundary|instance|centers" in help_text
        assert "-1 = the last" in help_text  # --layer explains its indexing


_OWNER = {
    PrepareConfig: ("prepare",),
    ExtractConfig: ("extract",),
    ProbeConfig: ("probe",),
    EvaluateConfig: ("evaluate",),
}


# ---------------------------------------------------------------- CLI options from dataclasses


def _command(cls: type, captured: dict[str, Any]) -> click.Command:
    @click.command()
    @config_options(cls)
    def command(**values: Any) -> None:
        captured["values"] = values
        captured["config"] = build_config(cls, values)

    return command


@pytest.mark.parametrize("cls", [ProbeConfig, ExtractConfig, EvaluateConfig])
def test_option_names_mirror_fields(cls: type) -> None:
    command = _command(cls, {})
    assert {p.name for p in command.params} == {f.name for f in dataclasses.fields(cls)}
    flags = {opt for p in command.params for opt in p.opts}
    assert flags == {"--" + f.name.replace("_", "-") for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("cls", [ProbeConfig, EvaluateConfig, PrepareConfig])
def test_option_defaults_match_dataclass(cls: type) -> None:
    captured: dict[str, Any] = {}
    result = CliRunner().invoke(_command(cls, captured), [])
    assert result.exit_code == 0, result.output
    assert captured["config"] == cls()


def test_probe_options_parsed() -> None:
    captured: dict[str, Any] = {}
    args = ["--iterations", "25", "--lr", "0.005", "--layer", "-2", "--adapter", "linear", "--device", "cpu"]
    result = CliRunner().invoke(_command(ProbeConfig, captured), args)
    assert result.exit_code == 0, result.output
    config = captured["config"]
    assert config == ProbeConfig(iterations=25, lr=0.005, layer="-2", adapter="linear", device="cpu")
    assert isinstance(config.iterations, int) and isinstance(config.lr, float)


def test_extract_options_parsed() -> None:
    captured: dict[str, Any] = {}
    args = ["--model", "convnext_atto", "--layers", "-1,2", "--input-size", "64", "--norm"]
    result = CliRunner().invoke(_command(ExtractConfig, captured), args)
    assert result.exit_code == 0, result.output
    assert captured["config"] == ExtractConfig(
        model="convnext_atto", layers=[-1, 2], input_size=64, norm=True
    )


def test_bad_option_values() -> None:
    assert CliRunner().invoke(_command(ExtractConfig, {}), []).exit_code == 2  # --model required
    result = CliRunner().invoke(_command(ProbeConfig, {}), ["--iterations", "many"])
    assert result.exit_code == 2 and "--iterations" in result.output
    result = CliRunner().invoke(_command(ProbeConfig, {}), ["--loader", "disk"])
    assert result.exit_code == 2 and "'disk' is not one of 'auto', 'memory', 'stream'" in result.output
    result = CliRunner().invoke(_command(ProbeConfig, {}), ["--iterations", "0"])
    assert isinstance(result.exception, MaxaError) and "--iterations" in str(result.exception)
    with pytest.raises(click.BadParameter):
        build_config(ExtractConfig, {"model": "m", "layers": "a,b"})


def test_stale_dvc_yaml_stops_the_guard_stage_only(calls: list[Any], tmp_path: Path) -> None:
    """A run added to params.yaml without regenerating dvc.yaml would never run: the guard stage refuses
    and writes no tracked copy (DVC removed it), so no stage can run after it; a stage itself no longer
    renders dvc.yaml (that check is made once, by the guard)."""
    raw = _minimal()
    path = _write(tmp_path, raw)
    assert CliRunner().invoke(_cli(), ["pipeline", str(path)]).exit_code == 0
    tracked = tmp_path / dvcgen.TRACKED
    guard = CliRunner().invoke(_cli(), ["pipeline", str(path), "--guard"])
    assert guard.exit_code == 0, guard.output
    assert json.loads(tracked.read_text()) == json.loads(dvcgen.tracked(raw))
    tracked.unlink()  # as DVC does before the guard's command runs
    raw["tasks"]["depth"] = {"task": "depth", "dataset": "syn"}
    _write(tmp_path, raw)
    result = CliRunner().invoke(_cli(), ["pipeline", str(path), "--guard"])
    assert result.exit_code == 1
    assert f"dvc.yaml is out of date with {path}; run `maxa pipeline {path}`" in result.output
    assert not tracked.exists()
    stores = ["--features", "f", "--targets", "t", "--out", "m.pt"]
    _invoke(calls, ["probe", "--params", str(path), "--run", "depth", *stores])  # by hand: runs


def test_tracked_copy_is_what_dvc_reads_as_json(tmp_path: Path) -> None:
    """The guard's copy holds params.yaml as maxa reads it, one value per entry, plus the protocol
    versions, under a name DVC parses as JSON (it picks the parser by everything after the first dot)."""
    from dvc.fs import LocalFileSystem
    from dvc.utils.serialize import LOADERS, load_json

    from maxa.pipelines.params import protocol_versions

    versions = protocol_versions()
    assert LOADERS[LocalFileSystem.suffix(dvcgen.TRACKED)] is load_json
    raw = _minimal()
    raw["probe"] = {"lr": "1e-3"}  # as PyYAML (maxa's reader) reads it: a string
    copy_ = json.loads(dvcgen.tracked(raw))
    assert json.loads(copy_["probe"]) == raw["probe"]  # a shared section: one value
    assert {name: json.loads(value) for name, value in copy_["datasets"].items()} == raw["datasets"]
    assert set(copy_) == {"_note", *raw, "protocols"}
    for key, value in versions.items():
        head, _, tail = key.partition(".")
        assert (copy_["protocols"][head][tail] if tail else copy_["protocols"][head]) == value


def test_params_loading_does_not_import_the_generator() -> None:
    """A stage loads its params without the dvc.yaml generator (the cycle params -> dvcgen is gone)."""
    import subprocess
    import sys

    code = "import sys, maxa.pipelines.params; assert 'maxa.pipelines.dvcgen' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@dataclasses.dataclass
class _Sweep:
    """The shapes of fields other lanes add (sweep lists, optional lists)."""

    lrs: list[float] = dataclasses.field(default_factory=lambda: [0.001])
    seeds: list[int] | None = None
    names: list[str] = dataclasses.field(default_factory=list)


def test_stale_protocol_versions_stop_the_stages(calls: list[Any], tmp_path: Path) -> None:
    """After an upgrade that bumps a rule, protocols.yaml still holds the old versions until `maxa pipeline`
    rewrites it: a stage refuses to record a result under them, and `--check` says so."""
    from maxa.core import protocols
    from maxa.pipelines.params import protocol_versions

    versions = protocol_versions()
    path = _write(tmp_path, _minimal())
    assert CliRunner().invoke(_cli(), ["pipeline", str(path)]).exit_code == 0
    stores = ["--features", "f", "--targets", "t", "--out", "m.pt"]
    _invoke(calls, ["probe", "--params", str(path), "--run", "seg", *stores])  # current: runs
    current = (tmp_path / dvcgen.PROTOCOLS).read_text()
    assert yaml.safe_load(current)["objective"]["semantic"] == versions["objective.semantic"]
    older = protocols.render({**versions, "objective.semantic": versions["objective.semantic"] - 1})
    (tmp_path / dvcgen.PROTOCOLS).write_text(older)
    calls.clear()
    result = CliRunner().invoke(_cli(), ["probe", "--params", str(path), "--run", "seg", *stores])
    assert result.exit_code == 1 and not calls
    assert f"{tmp_path / dvcgen.PROTOCOLS} does not hold this maxa's protocol versions" in result.output
    check = CliRunner().invoke(_cli(), ["pipeline", str(path), "--check"])
    assert check.exit_code == 1 and "out of date" in check.output
    assert CliRunner().invoke(_cli(), ["pipeline", str(path)]).exit_code == 0
    assert (tmp_path / dvcgen.PROTOCOLS).read_text() == current


def test_each_stage_tracks_the_protocols_of_the_code_it_runs(tmp_path: Path) -> None:
    from maxa.pipelines.params import protocol_versions

    versions = protocol_versions()
    raw = _minimal()
    raw["tasks"]["far"] = {"task": "depth", "dataset": "other"}
    stages = dvcgen.pipeline(load_params(_write(tmp_path, raw)))["stages"]

    def tracked(name: str) -> list[str]:
        body = stages[name].get("do", stages[name])
        keys = [key for entry in body.get("params", []) for key in entry.get(dvcgen.TRACKED, [])]
        return [key.removeprefix("protocols.") for key in keys if key.startswith("protocols.")]

    expected = {
        "prepare_syn": ["targets"],
        "prepare_other": ["targets"],
        "extract_syn": ["features"],
        "extract_other": ["features"],
        "probe_seg": ["objective.semantic"],
        "evaluate_seg": ["metric.semantic"],
        "probe_far": ["objective.depth"],
        "evaluate_far": ["metric.depth"],
        "pipeline": [],
        "report": [],
        "plots": [],
    }
    assert {name: tracked(name) for name in stages} == expected
    assert all(key in versions for keys in expected.values() for key in keys)
    table = json.loads(dvcgen.tracked(_minimal()))["protocols"]  # the nested keys DVC looks up
    for key, value in versions.items():
        head, _, tail = key.partition(".")
        assert (table[head][tail] if tail else table[head]) == value


def _with_local() -> dict[str, Any]:
    raw = _minimal()
    raw["backbones"]["cnn"] = {"model": "convnext_atto"}
    raw["datasets"]["aug"] = {"dataset": "augmented", "options": {"base": "synthetic"}}
    raw["local"] = {
        "nn": {"test": "knn", "dataset": "syn", "k": [1, 5], "shots": 4},
        "ret": {"test": "retrieval", "dataset": "syn", "queries": "aug", "backbones": ["cnn"], "tiles": 2},
        "prop": {"test": "propagate", "dataset": "other", "topk": 3},
    }
    return raw


def test_local_tests_are_entries_with_their_own_stages(tmp_path: Path) -> None:
    from maxa.evaluate.local.config import KnnConfig, PropagationConfig, RetrievalConfig

    params = load_params(_write(tmp_path, _with_local()))
    assert params.local["nn"].config == KnnConfig(k=[1, 5], shots=4)
    assert params.local["ret"].config == RetrievalConfig(tiles=2)
    assert params.local["ret"].backbones == ["cnn"] and params.local["ret"].queries == "aug"
    assert params.local["prop"].config == PropagationConfig(topk=3)
    stages = dvcgen.pipeline(params)["stages"]
    nn, ret, prop = (stages[f"local_{name}"] for name in ("nn", "ret", "prop"))
    assert nn["foreach"] == "${backbones}" and ret["foreach"] == ["cnn"]
    assert nn["do"]["cmd"] == (
        "maxa local knn --params params.yaml --run nn --train-features data/features/syn/${key}/train.zarr "
        "--train-targets data/targets/syn/train.zarr --features data/features/syn/${key}/test.zarr "
        "--targets data/targets/syn/test.zarr --out metrics/nn/${key}.json"
    )
    stores = [
        f"data/{kind}/{split}.zarr"
        for split in ("train", "test")
        for kind in ("features/syn/${key}", "targets/syn")
    ]
    assert nn["do"]["deps"] == [f"{store}.manifest.json" for store in stores]  # each store it reads
    assert nn["do"]["params"] == [{dvcgen.TRACKED: ["local.nn", "protocols.local.knn"]}]
    assert nn["do"]["outs"] == ["metrics/nn/${key}.json"]
    assert nn["do"]["metrics"] == ["metrics/nn/${key}.headline.json"]
    assert ret["do"]["cmd"] == (
        "maxa local retrieval --params params.yaml --run ret --gallery data/features/syn/${item}/test.zarr "
        "--queries data/features/aug/${item}/test.zarr --out metrics/ret/${item}.json"
    )
    assert ret["do"]["deps"] == [
        f"data/features/{d}/${{item}}/test.zarr.manifest.json" for d in ("syn", "aug")
    ]
    assert prop["do"]["deps"] == [
        "data/features/other/${key}/test.zarr.manifest.json",
        "data/targets/other/test.zarr.manifest.json",
    ]
    assert prop["do"]["params"] == [{dvcgen.TRACKED: ["local.prop", "protocols.local.propagate"]}]
    assert "metrics" in stages["report"]["deps"]  # the leaderboard reads the local tests' records too


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["local"]["nn"].update(test="linear"), "local.nn: test must be one of"),
        (lambda r: r["local"]["nn"].update(dataset="nope"), "local.nn: dataset 'nope' is not in datasets"),
        (lambda r: r["local"]["nn"].update(pooling="gem"), "local.nn: unknown keys ['pooling']"),
        (lambda r: r["local"]["nn"].update(k=[0]), "local.nn: --k values must be >= 1"),
        (lambda r: r["local"]["ret"].pop("queries"), "local.ret: queries None is not in datasets"),
        (lambda r: r["local"]["ret"].update(queries="syn"), "local.ret: queries must be another dataset"),
        (lambda r: r["local"]["prop"].update(queries="aug"), "local.prop: unknown keys ['queries']"),
        (lambda r: r["local"]["ret"].update(backbones=["vit", "big"]), "backbones ['big'] are not entries"),
        (lambda r: r["tasks"].update(nn=r["tasks"]["seg"]), "both would write metrics/nn"),
    ],
)
def test_bad_local_entries_refused(tmp_path: Path, change: Any, message: str) -> None:
    raw = _with_local()
    change(raw)
    with pytest.raises(MaxaError, match=re.escape(message)):
        load_params(_write(tmp_path, raw))


def test_local_command_runs_its_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`maxa local knn --params P --run NAME` runs the entry's settings; the command line overrides them."""
    import maxa.evaluate.local.knn as knn

    seen: list[Any] = []

    def record(config: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(config)
        raise _Stop

    monkeypatch.setattr(knn, "evaluate_knn", record)
    path = _write(tmp_path, _with_local())
    assert CliRunner().invoke(_cli(), ["pipeline", str(path)]).exit_code == 0
    stores = ["--train-features", "a", "--train-targets", "b", "--features", "c", "--targets", "d"]
    base = ["local", "knn", *stores, "--out", str(tmp_path / "m.json"), "--params", str(path), "--run", "nn"]
    for extra, expected in (([], [1, 5]), (["--k", "3"], [3])):
        result = CliRunner().invoke(_cli(), [*base, *extra])
        assert isinstance(result.exception, _Stop), result.output
        assert seen[-1].k == expected and seen[-1].shots == 4
    wrong = CliRunner().invoke(_cli(), [*base[:-1], "ret"])
    assert wrong.exit_code == 1 and "local.ret is a retrieval test" in wrong.output
    alone = CliRunner().invoke(_cli(), [*base[:-2]])
    assert alone.exit_code == 1 and "--params needs --run" in alone.output  # as every stage says


def test_typed_list_fields() -> None:
    captured: dict[str, Any] = {}
    args = ["--lrs", "0.1,0.01", "--seeds", "1,2", "--names", "a, b"]
    result = CliRunner().invoke(_command(_Sweep, captured), args)
    assert result.exit_code == 0, result.output
    assert captured["config"] == _Sweep(lrs=[0.1, 0.01], seeds=[1, 2], names=["a", "b"])
    assert isinstance(captured["config"].lrs[0], float)
    result = CliRunner().invoke(_command(_Sweep, {}), ["--seeds", "1,x"])
    assert result.exit_code == 2 and "expected comma-separated integers" in result.output


def test_dvc_tracks_only_sections_the_file_has(tmp_path: Path) -> None:
    """DVC refuses to track a missing key, so an absent shared section is not listed (and adding it
    later is caught as a stale dvc.yaml by the `pipeline` stage, which tracks the whole file)."""
    raw = _minimal()
    del raw["probe"], raw["plots"]
    stages = dvcgen.pipeline(load_params(_write(tmp_path, raw)))["stages"]
    tracked = dvcgen.TRACKED
    assert stages["probe_seg"]["do"]["params"] == [{tracked: ["tasks.seg", "protocols.objective.semantic"]}]
    assert stages["extract_syn"]["do"]["params"] == [
        {tracked: ["backbones.${key}", "extract", "protocols.features"]}
    ]
    assert "params" not in stages["plots"]
    assert stages["pipeline"]["params"] == [{"params.yaml": None}]


def test_split_help_matches_the_readers() -> None:
    from maxa.extract.datasets import ade20k, nyu, nyu_frames, synthetic
    from maxa.extract.reader_specs import splits_help

    assert READERS.get("synthetic").splits == "|".join(synthetic.SPLITS)
    assert READERS.get("nyu").splits == "|".join(nyu.SPLITS)
    assert READERS.get("nyu_frames").splits == "|".join(nyu_frames.SPLIT_ARCHIVES)
    assert READERS.get("ade20k").splits == "|".join(ade20k.SPLIT_FOLDERS)
    assert all(f"{name} {READERS.get(name).splits}" in splits_help() for name in READERS.names())
