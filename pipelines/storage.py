"""How endpoint and options reach every command that opens an object-store URL, and never a secret on disk.

Three sources, later ones winning: params.yaml's `storage` section (committed and tracked by DVC, so it
may hold no credentials), `maxa --storage-options JSON`, and the fsspec options a library call passes.
They travel in the environment (maxa.core.store's MAXA_STORAGE_OPTIONS), so dask workers inherit them.
Credentials come from the environment the backends read themselves (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
/ AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS), never from a file maxa writes or records.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from maxa.core.errors import MaxaError

SECRET = re.compile(
    r"^(key|secret|token|password)$|secret|password|token|credential|access_key", re.IGNORECASE
)
"""Option names that hold credentials (s3fs's `key`/`secret`/`token`, botocore's aws_* names, ...)."""


def secrets_in(options: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of every option (nested ones included) that looks like a credential."""
    found = []
    for name, value in options.items():
        dotted = f"{prefix}{name}"
        if SECRET.search(str(name)):
            found.append(dotted)
        if isinstance(value, Mapping):
            found.extend(secrets_in(value, f"{dotted}."))
    return found


def parse(text: str, where: str) -> dict[str, Any]:
    """A JSON object of fsspec storage options (`where` names the option or file it came from)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MaxaError(f"{where} must be a JSON object of fsspec storage options ({exc})") from None
    if not isinstance(value, dict):
        raise MaxaError(
            f"{where} must be a JSON object of fsspec storage options, got {type(value).__name__}"
        )
    return value


def check_recordable(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Refuse credentials in a file that git and DVC record (params.yaml)."""
    found = secrets_in(options)
    if found:
        raise MaxaError(
            f"{where}: {', '.join(found)} {'looks' if len(found) == 1 else 'look'} like credentials, and "
            "this file is committed and tracked by DVC; set them in the environment instead "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE; GOOGLE_APPLICATION_CREDENTIALS)"
        )
    return dict(options)


def override(options: Mapping[str, Any]) -> None:
    """Lay `options` over those in effect for this process and the workers it starts (`--storage-options`)."""
    os.environ[_env()] = json.dumps({**_current(), **options})


def add_defaults(options: Mapping[str, Any]) -> None:
    """Lay `options` under those in effect (params.yaml `storage`: the command line wins)."""
    os.environ[_env()] = json.dumps({**options, **_current()})


def _env() -> str:
    from maxa.core.store import STORAGE_ENV  # not at import: `maxa --help` stays free of zarr

    return STORAGE_ENV


def _current() -> dict[str, Any]:
    text = os.environ.get(_env(), "")
    return parse(text, _env()) if text.strip() else {}


def apply_params(params_file: str | None) -> None:
    """Before a command runs from --params: its `storage` section, under the options given otherwise."""
    if params_file:
        from maxa.pipelines.params import load_params

        storage = load_params(Path(params_file)).storage
        if storage:
            add_defaults(storage)
