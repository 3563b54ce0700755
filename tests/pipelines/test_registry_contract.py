"""Every entry of every registry keeps the contract (as timm's tests iterate list_models()): a help text,
an options dataclass whose every option has a default and a help, an implementation that imports and is
what the spec says, and a round trip through params.yaml validation."""

from __future__ import annotations

import dataclasses
import inspect
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from maxa.core.codec_specs import CODECS, codec_factory
from maxa.core.registry import Spec, resolve
from maxa.core.store import ArraySpec
from maxa.evaluate.metric_specs import METRICS
from maxa.extract.datasets.base import reader_options
from maxa.extract.datasets.indexed import IndexedDataset
from maxa.extract.presets import PRESETS
from maxa.extract.reader_specs import READERS
from maxa.pipelines.checks import problems
from maxa.pipelines.params import load_params
from maxa.probe.adapter_specs import ADAPTERS
from maxa.probe.config import ProbeConfig
from maxa.probe.task_specs import TASKS


def _check_options(spec: Spec) -> None:
    assert spec.help.strip()
    assert dataclasses.is_dataclass(spec.options)
    for f in spec.option_fields():
        assert f.metadata.get("help"), f"{spec.name}: option {f.name} has no help"
    spec.options()  # the defaults pass the options' own checks


def _params(tmp_path: Path, **sections: object) -> Path:
    base = {
        "datasets": {"syn": {"dataset": "synthetic"}},
        "backbones": {"vit": {"model": "vit_tiny_patch16_224"}},
        "tasks": {"seg": {"task": "semantic", "dataset": "syn"}},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({**base, **sections}))
    return path


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task(name: str, tmp_path: Path) -> None:
    from maxa.evaluate.run import evaluator_class
    from maxa.probe.tasks import Task, get_task

    spec = TASKS.get(name)
    _check_options(spec)
    assert issubclass(resolve(spec.implementation), Task)
    evaluator = evaluator_class(name)
    assert callable(getattr(evaluator, "update", None)) and callable(getattr(evaluator, "compute", None))
    assert spec.primary in METRICS
    # round trip: every option written into a tasks entry comes back in ProbeConfig and the built task
    values = {f.name: spec.defaults()[f.name] for f in spec.option_fields()}
    run = {"task": name, "dataset": "syn", **values}
    config = load_params(_params(tmp_path, tasks={"run": run})).tasks["run"].config
    assert isinstance(config, ProbeConfig) and {k: getattr(config, k) for k in values} == values
    assert get_task(name, **config.task_options()).options() == values


@pytest.mark.parametrize("name", ADAPTERS.names())
def test_every_adapter(name: str, tmp_path: Path) -> None:
    spec = ADAPTERS.get(name)
    _check_options(spec)
    factory = resolve(spec.implementation)
    assert list(inspect.signature(factory).parameters)[:3] == ["in_channels", "out_channels", "options"]
    values = spec.defaults()
    run = {"task": "semantic", "dataset": "syn", "adapter": name, **values}
    config = load_params(_params(tmp_path, tasks={"run": run})).tasks["run"].config
    assert config.adapter == name and {k: getattr(config, k) for k in values} == values
    recorded = {f.name for f in spec.option_fields() if f.metadata.get("record", True)}
    assert recorded <= set(config.adapter_options())  # what the checkpoint rebuilds the adapter from


@pytest.mark.parametrize("name", READERS.names())
def test_every_reader(name: str, tmp_path: Path) -> None:
    spec = READERS.get(name)
    _check_options(spec)
    assert spec.splits.strip()
    reader = resolve(spec.implementation)
    assert reader.name == name  # the name its stores record
    parameters = inspect.signature(reader).parameters
    assert "root" in parameters  # and split, itself or through the listing options it passes on
    assert "split" in parameters or issubclass(reader, IndexedDataset)
    takes = reader_options(name)
    assert not {"split", "root"} & set(takes)
    if issubclass(reader, IndexedDataset):  # every on-disk reader takes the listing options
        assert {"num_images", "skip_ids", "start"} <= set(takes)
    # the options dataclass is what the constructor takes, with the same defaults
    assert _constructor_defaults(reader) == spec.defaults()
    params = load_params(_params(tmp_path, datasets={"syn": {"dataset": name}}))
    assert params.datasets["syn"].prepare_config("train").dataset == name


def _constructor_defaults(reader: type) -> dict[str, Any]:
    """Keyword -> default of a reader's constructor and of the base constructors it passes `**kwargs` to
    (split and root left out)."""
    found: dict[str, Any] = {}
    for cls in reader.__mro__:
        if "__init__" not in vars(cls):
            continue
        params = inspect.signature(vars(cls)["__init__"]).parameters
        for key, p in params.items():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and key not in ("self", "split", "root"):
                found.setdefault(key, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return found


@pytest.mark.parametrize("name", METRICS.names())
def test_every_metric(name: str) -> None:
    spec = METRICS.get(name)
    assert spec.help.strip() and spec.display()
    assert spec.low < spec.high and not (math.isnan(spec.low) or math.isnan(spec.high))


@pytest.mark.parametrize("name", CODECS.names())
def test_every_codec(name: str) -> None:
    import numpy as np

    spec = CODECS.get(name)
    _check_options(spec)
    filters, compressors = codec_factory(name)(np.dtype("float16"))
    assert isinstance(filters, list) and isinstance(compressors, list)
    assert ArraySpec((2, 2, 4), "float16", ("image", "y", "x", "channel"), codec=name).codec_name() == name


@pytest.mark.parametrize("name", PRESETS.names())
def test_every_preset(name: str, tmp_path: Path) -> None:
    preset = PRESETS.get(name)
    assert preset.help.strip() and preset.family
    assert "." in preset.model or (not preset.hub and preset.weights_hint)  # a timm tag, or where to get it
    params = load_params(_params(tmp_path, backbones={"b": {"model": name, "weights": "random-init"}}))
    assert params.backbones["b"].model == name
    assert [p for p in problems(params) if p.startswith("backbones.b")] == []  # its stored facts check out


def test_names_are_unique_across_task_and_adapter_options() -> None:
    """ProbeConfig holds every option once; no option shadows a setting of every probe."""
    names = [f.name for f in dataclasses.fields(ProbeConfig)]
    assert len(names) == len(set(names))
    for registry in (TASKS, ADAPTERS):
        for spec in registry.specs():
            assert {f.name for f in spec.option_fields()} <= set(names)
