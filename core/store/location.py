"""Where a store lives: local paths and fsspec URLs, their storage options, and the checks made before
any work is done there."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import zarr
import zarr.errors

from maxa.core.errors import MaxaError


def check_location(url: str) -> None:
    """Fail before any work when a local store path cannot be written (remote URLs fail on write)."""
    path = resolve(url)
    if "://" in path:
        return
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise MaxaError(f"store {url} cannot be written (permission denied); choose another path")
        return
    from maxa.core.records import check_writable

    check_writable(path, "store")


def resolve(url: str) -> str:
    """`file://` URLs become plain paths, so local stores use zarr's LocalStore (atomic writes)."""
    return url[len("file://") :] if url.startswith("file://") else url


STORAGE_ENV = "MAXA_STORAGE_OPTIONS"
"""JSON object of fsspec storage options for every object-store URL this process opens (set by
`maxa --storage-options` and params.yaml `storage`; inherited by dask workers). Never recorded."""


def fsspec_options(url: str, given: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """fsspec options for `url`: MAXA_STORAGE_OPTIONS for object stores, overridden by `given`."""
    local = "://" not in url or url.startswith(("file://", "memory://"))
    text = "" if local else os.environ.get(STORAGE_ENV, "")
    try:
        defaults = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise MaxaError(f"{STORAGE_ENV} must hold a JSON object of fsspec storage options ({exc})") from None
    if not isinstance(defaults, dict):
        raise MaxaError(f"{STORAGE_ENV} must hold a JSON object of fsspec storage options")
    return {**defaults, **dict(given or {})} or None


def open_group(url: str, mode: str, options: Mapping[str, Any] | None = None) -> zarr.Group | None:
    """The group at `url`, None where there is none. Read-only opens of s3:// go through obstore where it
    can take the options (core/store/objects.py), everything else through fsspec."""
    from maxa.core.store.objects import read_store

    given = fsspec_options(url, options)
    try:
        through = read_store(url, given) if mode == "r" else None
        if through is not None:
            store, path = through
            return zarr.open_group(store, path=path, mode="r")
        return zarr.open_group(resolve(url), mode=mode, storage_options=given)  # type: ignore[arg-type]
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return None
