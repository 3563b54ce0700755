"""What `maxa params` and the guard stage check of a plain timm name, cached on disk.

Checking a params.yaml that names a plain timm model (no preset) needs the model's feature levels,
prefix tokens, patch and default input size. Reading them means importing torch and timm and building
the model on the meta device: ~4 s of CPU per `maxa pipeline --check` / guard stage, every time, for
the same answer. The answer depends only on the installed timm and torch, so it is kept in one small
JSON file per (timm, torch) pair in the user's cache folder (MAXA_CACHE_DIR, else
$XDG_CACHE_HOME/maxa, else ~/.cache/maxa); a check whose names are all there imports neither.

Only names timm itself defines are kept (a plugin may register a model under a name and change it
without changing timm's version), and only names that resolved: an unknown name always goes to timm,
for its error with close names. A cache that cannot be read or written is ignored.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

FORMAT = 1
"""Bumped when what `facts` reads off a model changes (the cached values of older formats are left)."""


@dataclass(frozen=True)
class ModelFacts:
    """A model's facts that a params check needs (extract.config.check_spec's inputs)."""

    levels: int
    num_prefix_tokens: int
    patch: int | None
    input_size: int


def cache_dir() -> Path:
    """Where maxa keeps what it may recompute (MAXA_CACHE_DIR overrides)."""
    given = os.environ.get("MAXA_CACHE_DIR")
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "maxa"


def _installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "none"


def cache_file() -> Path:
    """The cache of this timm and torch (their versions are read from the package metadata: no import)."""
    return cache_dir() / f"timm-facts-{_installed('timm')}-torch-{_installed('torch')}-v{FORMAT}.json"


def _load(path: Path) -> dict[str, dict[str, int | None]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store(path: Path, name: str, found: ModelFacts) -> None:
    """Add one entry (read again first: another process may have added others); atomic replace."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**_load(path), name: asdict(found)}
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(fh.name, path)
    except OSError:
        return


def _read(entry: object) -> ModelFacts | None:
    try:
        return ModelFacts(**entry)  # type: ignore[arg-type]
    except TypeError:  # another format's entry, or not a mapping
        return None


def facts(name: str) -> ModelFacts:
    """The facts of timm name `name` (with or without tag); a MaxaError for an unknown name."""
    path = cache_file()
    cached = _read(_load(path).get(name))
    if cached is not None:
        return cached
    from maxa.extract.backbones import check_model_name, describe, timm_defines

    check_model_name(name)
    info = describe(name)
    found = ModelFacts(info.levels, info.num_prefix_tokens, info.patch, info.input_size)
    if timm_defines(name):
        _store(path, name, found)
    return found
