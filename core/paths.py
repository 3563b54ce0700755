"""The one reading of a path a user typed: `~` and environment variables expanded, wherever it is taken
(a params.yaml `root:` or `weights:`, `--root`, `--weights`), so README's `root: ~/data/VOCdevkit` works
in params.yaml as it does on a shell's command line."""

from __future__ import annotations

import os

URL_SCHEME = "://"


def expand_path(value: str) -> str:
    """`~/x` -> `/home/me/x`, `$DATA/x` -> its value; URLs (`s3://...`) keep their text but for variables."""
    expanded = os.path.expandvars(value)
    return expanded if URL_SCHEME in expanded else os.path.expanduser(expanded)


def unexpanded(value: str) -> str | None:
    """The `$NAME` left in an expanded path (an unset variable), or None: worth naming in an error."""
    for part in value.replace("${", "$").split("$")[1:]:
        name = part.split("/")[0].rstrip("}")
        if name:
            return "$" + name
    return None


MANIFEST_SUFFIX = ".manifest.json"


def manifest_of(store: str) -> str:
    """The manifest beside a local store (core/store/manifest.py): `x.zarr` -> `x.zarr.manifest.json`;
    named here, so the dvc.yaml generator need not import the store package."""
    return store.rstrip("/") + MANIFEST_SUFFIX
