"""The stage table (pipelines/stages.py): what each generated command writes is what its stage declares,
and what it builds is the config class its stage declares.

The generated dvc.yaml of a tiny experiment is expanded as DVC's foreach does and every stage's command
is run in-process, in DVC's order; after each, the files that appeared must lie inside the stage's
declared outputs, and every declared output must exist. A path spelled differently by a command and
by the generator (or a file written beside the outputs, which DVC would neither cache nor clean) fails.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from maxa.pipelines import dag, options, stages
from maxa.pipelines.params import load_for_stage
from maxa.pipelines.stages import STAGES
from tests.kit.cli import invoke, ok


def _params() -> dict[str, Any]:
    return {
        "datasets": {
            "syn": {
                "dataset": "synthetic",
                "train_images": 8,
                "test_images": 4,
                "label_size": 16,
                "shard_size": 4,
                "options": {"image_size": 32, "num_classes": 3, "max_objects": 2},
            }
        },
        "backbones": {"vit": {"model": "vit_tiny_patch16_224", "weights": "random-init", "input_size": 32}},
        "extract": {"batch_size": 4, "shard_size": 4},
        "probe": {"iterations": 2, "batch_size": 4, "query_grid": 2, "width": 8, "heads": 2},
        "tasks": {
            "seg": {"task": "semantic", "dataset": "syn", "sweep_seeds": "0,1"},  # a sweep: its members too
            "far": {"task": "depth", "dataset": "syn"},
        },
        "local": {"nn": {"test": "knn", "dataset": "syn", "k": [1]}},
        "evaluate": {"batch_size": 4},
        "plots": {"count": 1},
    }


def _expanded(pipeline: dict[str, Any], backbones: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Each stage as DVC's foreach resolves it: (`name@item`, body with `${key}` / `${item}` replaced)."""
    out = []
    for name, stage in pipeline["stages"].items():
        if "foreach" not in stage:
            out.append((name, stage))
            continue
        items = backbones if stage["foreach"] == "${backbones}" else stage["foreach"]
        for item in items:
            text = yaml.safe_dump(stage["do"]).replace("${key}", item).replace("${item}", item)
            out.append((f"{name}@{item}", yaml.safe_load(text)))
    return out


def _paths(entries: list[Any]) -> list[str]:
    return [next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries]


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_every_command_writes_what_its_stage_declares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    raw = _params()
    Path("params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    ok("pipeline", "params.yaml")
    generated = yaml.safe_load(Path("dvc.yaml").read_text())
    ran = set()
    for name, body in _expanded(generated, list(raw["backbones"])):
        before = _files(tmp_path)
        for line in body["cmd"].split(" && "):
            words = shlex.split(line)
            assert words[0] == "maxa" and words[1] in STAGES, line  # every stage is a command of the table
            ok(*words[1:])
            ran.add(words[1])
        declared = [Path(p) for p in _paths([*body.get("outs", []), *body.get("metrics", [])])]
        for out in declared:
            assert out.exists(), f"{name}: {out} declared, not written"
        for new in _files(tmp_path) - before:
            assert any(new == out or out in new.parents for out in declared), f"{name} wrote {new} undeclared"
        for dep in _paths(body.get("deps", [])):
            assert Path(dep).exists(), f"{name}: {dep} is read before it is written"
    assert ran == set(STAGES)  # the table has no stage the pipeline does not run
    # the layout's names for what the commands wrote
    assert Path(stages.targets("syn", "test"), "zarr.json").is_file()
    assert Path(stages.features("syn", "vit", "train"), "zarr.json").is_file()
    assert Path(stages.model("seg", "vit")).is_file() and Path(stages.sweep("seg", "vit")).is_dir()
    assert Path(stages.metrics("nn", "vit")).is_file()
    assert all(Path(path).is_file() for path in stages.LEADERBOARD)


def test_pipeline_run_schedules_by_the_table() -> None:
    """`maxa pipeline run` places each generated stage by its table entry (device, cpu or the gate)."""
    for spec in STAGES.values():
        assert dag.stage_kind(spec.command_line("x", "--out y")) == spec.kind


class _Built(Exception):
    """Raised by the spy once a command has built its config: nothing after it runs."""


def test_every_command_builds_its_stages_config_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each generated command line, run from its params entry and from options alone, builds exactly the
    config class its table entry declares (every sub-command of a group too)."""
    monkeypatch.chdir(tmp_path)
    raw = _params()
    raw["datasets"]["aug"] = {"dataset": "augmented", "options": {"base": "synthetic"}}
    raw["local"] |= {
        "ret": {"test": "retrieval", "dataset": "syn", "queries": "aug"},
        "prop": {"test": "propagate", "dataset": "syn"},
    }
    Path("params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    ok("pipeline", "params.yaml")
    built: list[object] = []
    real = options.build_config

    def spy(cls: type, values: dict[str, Any]) -> Any:
        built.append(real(cls, values))
        raise _Built

    monkeypatch.setattr(options, "build_config", spy)
    seen = set()
    for name, body in _expanded(yaml.safe_load(Path("dvc.yaml").read_text()), list(raw["backbones"])):
        for line in body["cmd"].split(" && "):
            words = shlex.split(line)[1:]
            spec = STAGES[words[0]]
            sub = words[1] if spec.configs else None
            if spec.config is None and not spec.configs:
                continue
            expected = spec.config_class(sub)
            seen.add((spec.command, sub))
            if spec.section is None and spec.command == "plots":  # its command reads the section only
                assert type(spec.settings(load_for_stage(Path("params.yaml")))) is expected
                continue
            alone = _without_entry(words, spec.selector) + (
                ["--model", "m"] if spec.command == "extract" else []
            )
            for args in (words, alone):
                built.clear()
                result = invoke(*args, catch_exceptions=True)
                assert isinstance(result.exception, _Built), (name, args, result.output)
                assert [type(config) for config in built] == [expected], (name, args)
    declared = {(s.command, None) for s in STAGES.values() if s.config is not None}
    declared |= {(s.command, sub) for s in STAGES.values() for sub in s.configs}
    assert seen == declared  # every declared config was exercised


def _without_entry(words: list[str], selector: str | None) -> list[str]:
    """A command line without `--params FILE`, the selector and `--role` (the options-alone form)."""
    drop = {"--params", "--role", *([selector] if selector else [])}
    out: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in drop:
            skip = True
        else:
            out.append(word)
    return out
