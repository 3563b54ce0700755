"""params.yaml -> validated stage configs (the same dataclasses the CLI builds from its options)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from maxa.extract.config import ExtractConfig
from maxa.extract.errors import MaxaError
from maxa.extract.targets import PrepareConfig
from maxa.probe.train import ProbeConfig


@dataclass
class PrepareParams:
    dataset: str
    label_size: int
    shard_size: int
    splits: dict[str, int]
    options: dict[str, Any] = field(default_factory=dict)

    def configs(self) -> list[PrepareConfig]:
        return [
            PrepareConfig(
                dataset=self.dataset,
                split=split,
                label_size=self.label_size,
                shard_size=self.shard_size,
                options={**self.options, "num_images": n},
            )
            for split, n in self.splits.items()
        ]


@dataclass
class ExtractParams:
    batch_size: int
    shard_size: int
    backbones: dict[str, ExtractConfig]


@dataclass
class EvaluateParams:
    batch_size: int = 64


@dataclass
class Params:
    prepare: PrepareParams
    extract: ExtractParams
    probe: ProbeConfig
    evaluate: EvaluateParams


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise MaxaError(f"params section {where} must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise MaxaError(f"params section {where}: unknown keys {unknown} (allowed: {sorted(names)})")
    hints = typing.get_type_hints(cls)
    coerced = {}
    for key, value in values.items():
        if hints[key] in (int, float) and isinstance(value, str):
            try:  # YAML reads 1e-3 (no dot) as a string
                value = hints[key](value)
            except ValueError:
                raise MaxaError(f"params section {where}: {key} must be a number, got {value!r}") from None
        coerced[key] = value
    try:
        return cls(**coerced)
    except TypeError as exc:
        raise MaxaError(f"params section {where}: {exc}") from exc


def _layers(value: Any) -> list[int]:
    return [int(v) for v in str(value).split(",")] if not isinstance(value, list) else [int(v) for v in value]


def load_params(path: Path) -> Params:
    """Parse and validate every section; unknown or mistyped keys are one-line errors naming them."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise MaxaError(f"cannot read {path}: {exc}") from exc
    missing = [s for s in ("prepare", "extract", "probe", "evaluate") if s not in raw]
    if missing:
        raise MaxaError(f"{path} lacks sections {missing}")
    extract = dict(raw["extract"])
    backbones = {}
    for name, entry in (extract.pop("backbones", None) or {}).items():
        entry = {
            **entry,
            "name": name,
            "batch_size": extract.get("batch_size", 32),
            "shard_size": extract.get("shard_size", 32),
        }
        if "layers" in entry:
            try:
                entry["layers"] = _layers(entry["layers"])
            except ValueError as exc:
                raise MaxaError(
                    f"params section extract.backbones.{name}: layers must be comma-separated integers, "
                    f"got {entry['layers']!r}"
                ) from exc
        backbones[name] = _build(ExtractConfig, entry, f"extract.backbones.{name}")
    if not backbones:
        raise MaxaError(f"{path}: extract.backbones lists no backbone")
    probe = {k: (str(v) if k == "layer" else v) for k, v in raw["probe"].items()}
    return Params(
        prepare=_build(PrepareParams, raw["prepare"], "prepare"),
        extract=_build(ExtractParams, {**extract, "backbones": backbones}, "extract"),
        probe=_build(ProbeConfig, probe, "probe"),
        evaluate=_build(EvaluateParams, raw["evaluate"], "evaluate"),
    )
