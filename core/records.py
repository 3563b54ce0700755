"""The records that cross stage boundaries: fingerprints, the dataset reference, run ids, metrics.

Every hash in maxa is sha256 over the same canonical JSON (keys sorted, no spaces, UTF-8, no NaN), so a
record written by hand from docs/store.md hashes exactly as maxa's own.
"""

from __future__ import annotations

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


def read_metrics(path: str | Path) -> dict[str, Any]:
    """The one reader of metrics JSON: refuses invalid JSON and newer formats in one line."""
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
