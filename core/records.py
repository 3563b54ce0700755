"""The records that cross stage boundaries: fingerprints, the dataset reference, run ids, metrics.

Every hash in maxa is sha256 over the same canonical JSON (keys sorted, no spaces, UTF-8, no NaN), so a
record written by hand from docs/store.md hashes exactly as maxa's own.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maxa.core.errors import MaxaError

METRICS_FORMAT = 1
"""Version of the metrics record (`format` in every metrics JSON)."""

METRICS_REQUIRED = ("backbone", "task", "adapter", "scores", "primary", "run_id")


def now_iso() -> str:
    """The `created` time of a record: now, or SOURCE_DATE_EPOCH when set (reproducible-builds.org's
    convention), so two runs of one pipeline can write byte-identical stores."""
    fixed = os.environ.get("SOURCE_DATE_EPOCH")
    if fixed:
        try:
            return _dt.datetime.fromtimestamp(int(fixed), _dt.timezone.utc).isoformat(timespec="seconds")
        except (ValueError, OverflowError):
            raise MaxaError(f"SOURCE_DATE_EPOCH must be seconds since 1970, got {fixed!r}") from None
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def canonical_json(value: Any) -> str:
    """The one serialisation every fingerprint hashes: sorted keys, compact separators, UTF-8."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise MaxaError(f"cannot fingerprint a record holding NaN or inf ({exc})") from exc
    except TypeError as exc:
        raise MaxaError(f"cannot fingerprint a record holding a non-JSON value ({exc})") from exc


def digest(value: Any, length: int = 16) -> str:
    """First `length` hex digits of sha256(canonical_json(value))."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:length]


def run_id(
    backbone: str,
    adapter: str,
    task: str,
    config: Mapping[str, Any],
    features_fingerprint: str,
    targets_fingerprint: str,
) -> str:
    """`backbone/adapter/task/hash8`: two runs share an id only if config and both stores agree."""
    payload = {"config": dict(config), "features": features_fingerprint, "targets": targets_fingerprint}
    return f"{backbone}/{adapter}/{task}/{digest(payload, 8)}"


BACKBONE_FIELDS = ("model", "weights", "weights_sha256", "input_size", "mean", "std", "norm")
"""Feature-store provenance fields that make two stores' features come from the same network, the same way."""


def backbone_fields(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The BACKBONE_FIELDS of a feature store's provenance (absent fields as null)."""
    return {k: provenance.get(k) for k in BACKBONE_FIELDS}


def backbone_fingerprint(provenance: Mapping[str, Any]) -> str:
    """Hash of the BACKBONE_FIELDS of a feature store's provenance (absent fields count as null)."""
    return digest(backbone_fields(provenance))


def run_key(record: Mapping[str, Any]) -> str:
    """What report, plots and compare key on: the run id, else backbone/adapter/task (older records)."""
    rid = record.get("run_id")
    if rid:
        return str(rid)
    return "/".join(str(record.get(k, "?")) for k in ("backbone", "adapter", "task"))


@dataclass(frozen=True)
class DatasetRef:
    """The one description of a dataset split that target and feature provenance share.

    `fingerprint` hashes reader name, split, options and length; `content` hashes what was read
    (the per-sample digests of every decoded image; targets live in the store itself) and is known
    once prepare has finished.
    """

    name: str
    split: str
    fingerprint: str
    options: dict[str, Any] = field(default_factory=dict)
    root: str | None = None
    content: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Any, where: str) -> DatasetRef:
        if not isinstance(value, Mapping):
            raise MaxaError(f"{where}: dataset reference must be an object, got {value!r}")
        missing = [k for k in ("name", "split", "fingerprint") if k not in value]
        if missing:
            raise MaxaError(f"{where}: dataset reference lacks {', '.join(missing)}")
        names = ("name", "split", "fingerprint", "options", "root", "content")
        known = {k: value[k] for k in names if k in value}
        return cls(**{**known, "options": dict(known.get("options") or {})})

    def differences(self, other: DatasetRef) -> list[str]:
        """Fields that make two references name different data (root is where, not what)."""
        out = [
            f"{k}: {getattr(self, k)!r} vs {getattr(other, k)!r}"
            for k in ("name", "split", "fingerprint")
            if getattr(self, k) != getattr(other, k)
        ]
        if self.content and other.content and self.content != other.content:
            out.append(f"content: {self.content} vs {other.content}")
        return out


def require_fields(record: Mapping[str, Any], names: Iterable[str], where: str) -> None:
    """One-line refusal naming every missing field (never a KeyError later)."""
    missing = [n for n in names if n not in record]
    if missing:
        raise MaxaError(f"{where} lacks required field(s) {', '.join(missing)}; re-create it with this maxa")


def _nulls_everywhere(value: Any, path: str, nulls: dict[str, str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        nulls.setdefault(path, f"not finite ({value})")
        return None
    if isinstance(value, Mapping):
        return {k: _nulls_everywhere(v, f"{path}.{k}" if path else str(k), nulls) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nulls_everywhere(v, f"{path}[{i}]", nulls) for i, v in enumerate(value)]
    return value


def metrics_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a metrics record and make it valid JSON: every NaN/inf becomes null with a reason."""
    require_fields(record, METRICS_REQUIRED, "metrics record")
    nulls: dict[str, str] = dict(record.get("nulls") or {})
    body = {k: v for k, v in record.items() if k != "nulls"}
    clean = _nulls_everywhere(body, "", nulls)
    clean["format"] = METRICS_FORMAT
    clean["nulls"] = nulls
    uncertainty = clean.get("uncertainty")
    if uncertainty is not None and not isinstance(uncertainty, Mapping):
        raise MaxaError(f"metrics record: uncertainty must map metric -> interval, got {uncertainty!r}")
    return clean


# Metrics files written before `scores` and `primary` existed: their top-level scores, and each task's
# primary metric (task -> (key, higher is better)). Known here and nowhere else.
_LEGACY_SCORES = ("miou", "pixel_accuracy", "ce")
_LEGACY_PRIMARY: dict[str, tuple[str, bool]] = {"semantic": ("miou", True)}
_METRICS_KEYS: tuple[str, ...] = ("format", "run_id", "backbone", "adapter", "task", "dataset", "split")
_METRICS_KEYS += ("scores", "primary", "constant_baseline", "uncertainty", "protocol", "nulls")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Primary:
    """The one number a run is ranked by."""

    name: str
    value: float | None
    higher_is_better: bool = True


@dataclass(frozen=True)
class MetricsRecord:
    """A metrics file as later stages read it (report, plots, compare). `write_metrics` is its writer;
    `from_dict` is its reader: it validates, and it is the only place older layouts are known.

    `other` holds the rest of the file unchanged (model, weights, stores, checkpoint, parameter
    counts, per-class scores...).
    """

    backbone: str
    task: str
    run_id: str
    adapter: str | None = None
    dataset: str | None = None
    split: str | None = None
    scores: dict[str, Any] = field(default_factory=dict)
    primary: Primary | None = None
    constant_baseline: Any = None
    uncertainty: dict[str, Any] | None = None
    protocol: dict[str, Any] | None = None
    nulls: dict[str, str] = field(default_factory=dict)
    other: dict[str, Any] = field(default_factory=dict)
    format: int = METRICS_FORMAT
    order: tuple[str, ...] = field(default=(), compare=False, repr=False)  # the file's key order, kept

    @classmethod
    def from_dict(cls, value: Mapping[str, Any], where: str) -> MetricsRecord:
        require_fields(value, ("backbone", "task"), where)
        version = int(value.get("format", 0) or 0)
        if version > METRICS_FORMAT:
            raise MaxaError(
                f"{where} has format {value['format']}, this maxa reads up to {METRICS_FORMAT}; upgrade maxa"
            )
        scores = value.get("scores")
        if not isinstance(scores, Mapping):
            scores = {k: value[k] for k in _LEGACY_SCORES if _is_number(value.get(k))}
        raw = value.get("primary")
        primary = None
        if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
            given = raw.get("value", scores.get(raw["name"]))
            primary = Primary(raw["name"], given, bool(raw.get("higher_is_better", True)))
        elif (legacy := _LEGACY_PRIMARY.get(str(value.get("task")))) and _is_number(scores.get(legacy[0])):
            primary = Primary(legacy[0], scores[legacy[0]], legacy[1])
        uncertainty = value.get("uncertainty")
        if uncertainty is not None and not isinstance(uncertainty, Mapping):
            raise MaxaError(f"{where}: uncertainty must map metric -> interval, got {uncertainty!r}")

        def text(key: str) -> str | None:
            return str(value[key]) if value.get(key) is not None else None

        return cls(
            backbone=str(value["backbone"]),
            task=str(value["task"]),
            run_id=str(value.get("run_id") or run_key(value)),
            adapter=text("adapter"),
            dataset=text("dataset"),
            split=text("split"),
            scores=dict(scores),
            primary=primary,
            constant_baseline=value.get("constant_baseline"),
            uncertainty=None if uncertainty is None else dict(uncertainty),
            protocol=value.get("protocol"),
            nulls={str(k): str(v) for k, v in (value.get("nulls") or {}).items()},
            other={k: v for k, v in value.items() if k not in _METRICS_KEYS},
            format=version,
            order=tuple(value),
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-like values, in the key order it was read with (new keys last)."""
        named = {"adapter": self.adapter, "dataset": self.dataset, "split": self.split}
        out = {
            "run_id": self.run_id,
            "backbone": self.backbone,
            "task": self.task,
            **{k: v for k, v in named.items() if v is not None},
            **self.other,
            "scores": dict(self.scores),
            "primary": None if self.primary is None else asdict(self.primary),
            "constant_baseline": self.constant_baseline,
            **({} if self.uncertainty is None else {"uncertainty": self.uncertainty}),
            **({} if self.protocol is None else {"protocol": self.protocol}),
            "nulls": dict(self.nulls),
            "format": self.format,
        }
        return {**{k: out[k] for k in self.order if k in out}, **out}


def check_writable(path: str | Path, what: str) -> Path:
    """Fail before any work when `path` cannot be written (the folder is created if missing)."""
    target = Path(path)
    folder = target.parent
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise MaxaError(
            f"{what} {path} cannot be written ({blocker} is a file, not a folder); choose another path"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{target.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        reason = exc.strerror or exc
        raise MaxaError(f"{what} {path} cannot be written ({reason}); choose another path") from exc
    if target.is_dir():
        raise MaxaError(f"{what} {path} is a folder; give a file path")
    return target


def write_json_atomic(value: Any, out: str | Path, what: str) -> Path:
    """Write JSON (never NaN) through a temporary file and a rename: a crash leaves the old file."""
    target = check_writable(out, what)
    text = json.dumps(value, indent=2, allow_nan=False) + "\n"
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, target)
    return target


def write_metrics(record: Mapping[str, Any], out: str | Path) -> dict[str, Any]:
    """The one writer of metrics JSON, and of its headline beside it (core/headline.py: what
    `dvc metrics show` lists); returns the full record written."""
    from maxa.core.headline import headline, headline_path

    clean = metrics_record(record)
    write_json_atomic(clean, out, "metrics file")
    top = headline(clean)
    if top is not None:
        write_json_atomic(top, headline_path(out), "metrics headline")
    return clean


def read_metrics(path: str | Path) -> MetricsRecord:
    """The one reader of a metrics file: refuses invalid JSON, a file that is no run, newer formats."""
    return MetricsRecord.from_dict(read_json(path), f"metrics file {path}")


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object written by maxa (a metrics file or a leaderboard), refused in one line when it is
    missing, not JSON, not an object, or of a newer format."""
    p = Path(path)
    try:
        value = json.loads(p.read_text())
    except FileNotFoundError:
        raise MaxaError(f"metrics file {path} does not exist; run `maxa evaluate` first") from None
    except (OSError, ValueError) as exc:
        raise MaxaError(f"metrics file {path} is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise MaxaError(f"metrics file {path} must hold one JSON object")
    if int(value.get("format", 0) or 0) > METRICS_FORMAT:
        raise MaxaError(
            f"metrics file {path} has format {value['format']}, this maxa reads up to {METRICS_FORMAT}; "
            "upgrade maxa"
        )
    return value
