"""Published values (pipelines/paper/published.yaml) and the rule that pairs one with a maxa run.

A published number is comparable only to a run measured the same way, so every entry names its full
protocol and a run pairs with it only when every field matches; otherwise the report names the field
that differs. A field the source does not state is `unknown`: such an entry never pairs, and says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maxa.core.errors import MaxaError

PUBLISHED = Path(__file__).resolve().parents[1] / "pipelines" / "paper" / "published.yaml"
ENTRY_KEYS = (
    "source",
    "checked",
    "models",
    "weights",
    "adapter",
    "task",
    "dataset",
    "split",
    "metric",
    "value",
    "scale",
    "tolerance",
    "protocol",
)
"""What every entry states: where the value comes from and how it was checked, what it measures, and how."""

PROBE_FIELDS = ("input_size", "label_size", "layer", "norm", "iterations", "eval_start", "eval_samples")
PROTOCOL_FIELDS: dict[str, tuple[str, ...]] = {
    "semantic": PROBE_FIELDS,
    "boundary": PROBE_FIELDS,
    "instance": PROBE_FIELDS,
    "centers": PROBE_FIELDS,
    "depth": (*PROBE_FIELDS, "eigen_crop"),
    "propagation": ("input_size", "label_size", "layer", "norm", "sequences"),
}
"""The protocol fields an entry must name, per task: the run's `protocol` fields of the same names."""

IDENTITY = ("weights", "adapter", "task", "dataset", "split")
"""Run fields an entry names outright (with its `models` and `metric`): what is measured, not how."""

UNKNOWN = "unknown"
"""A protocol field the source does not state (the entry then pairs with no run)."""


@dataclass(frozen=True)
class Difference:
    field: str
    maxa: Any
    published: Any

    def __str__(self) -> str:
        if _text(self.published) == UNKNOWN:
            return f"{self.field}: not stated by the source (maxa {_text(self.maxa)})"
        return f"{self.field}: maxa {_text(self.maxa)}, published {_text(self.published)}"


def load_published(path: Path) -> list[dict[str, Any]]:
    """The entries of a published-values file (format 1), each checked to name its whole protocol."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise MaxaError(f"cannot read published values {path}: {exc}") from exc
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise MaxaError(f"published values {path} need a list under `entries`")
    for i, entry in enumerate(entries):
        missing = [k for k in ENTRY_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise MaxaError(f"published values {path}: entry {i} lacks {', '.join(missing)}")
        fields = PROTOCOL_FIELDS.get(str(entry["task"]))
        if fields is None:
            raise MaxaError(
                f"published values {path}: entry {i} has task {entry['task']!r} "
                f"(known: {', '.join(PROTOCOL_FIELDS)})"
            )
        protocol = entry["protocol"]
        absent = [f for f in fields if not isinstance(protocol, dict) or f not in protocol]
        if absent:
            raise MaxaError(
                f"published values {path}: entry {i} ({entry['source']}) does not name protocol "
                f"{', '.join(absent)} (write `unknown` where the source does not state it)"
            )
    return entries


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "x".join(_text(v) for v in value)
    return "null" if value is None else str(value).lower()


def _normal(value: Any) -> Any:
    """One spelling per value: a square side n is [n, n]; text is compared without case."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [_text(value), _text(value)]
    if isinstance(value, list | tuple):
        return [_text(v) for v in value]
    return _text(value)


def same_measurement(run: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    """The entry scores what the run scores: its model, weights, adapter, task, data split and metric."""
    primary = run.get("primary") or {}
    return (
        str(run.get("model")) in [str(m) for m in entry["models"]]
        and entry["metric"] == primary.get("name")
        and all(
            _text(run.get(k)) == _text(entry[k]) for k in ("weights", "adapter", "task", "dataset", "split")
        )
    )


def differences(run: Mapping[str, Any], entry: Mapping[str, Any]) -> list[Difference]:
    """Every protocol field of the entry whose value is not the run's (empty: they pair)."""
    protocol = run.get("protocol") if isinstance(run.get("protocol"), dict) else {}
    found = []
    for field, published in entry["protocol"].items():
        ours = protocol.get(field)  # type: ignore[union-attr]
        if _text(published) == UNKNOWN or _normal(ours) != _normal(published):
            found.append(Difference(field, ours, published))
    return found
