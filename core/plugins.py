"""Plugins: modules outside maxa that register specs (tasks, adapters, readers, metrics, presets, codecs).

Two ways to name them, both read once per process, before any registry is read:

- the `maxa.plugins` entry point group of an installed package (pyproject.toml:
  `[project.entry-points."maxa.plugins"] mytask = "mypkg.maxa_specs"`): installed once, seen everywhere;
- the `MAXA_PLUGINS` environment variable, comma-separated module names (`MAXA_PLUGINS=mypkg.specs`):
  for a module on the Python path that is not packaged.

A plugin module must import nothing heavy at the top (the CLI imports it for `--help`): it registers
specs whose implementations are named as `module:attribute` and imported when used.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

GROUP = "maxa.plugins"
ENV = "MAXA_PLUGINS"

_loaded: list[str] = []
_done = False


def plugin_modules() -> list[str]:
    """The plugin modules named by the entry point group and by MAXA_PLUGINS, in that order."""
    named = [ep.value.partition(":")[0].strip() for ep in entry_points(group=GROUP)]
    named += [part.strip() for part in os.environ.get(ENV, "").split(",") if part.strip()]
    return list(dict.fromkeys(named))


def load_plugins() -> list[str]:
    """Import every plugin module once; a module that fails to import (or whose specs are refused) is a
    one-line error naming it."""
    global _done
    if _done:
        return list(_loaded)
    _done = True
    from maxa.core.errors import MaxaError

    for module in plugin_modules():
        try:
            importlib.import_module(module)
        except Exception as exc:  # a plugin's own mistake (a name registered twice, a bad spec) too
            _done = False
            why = str(exc) if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"
            raise MaxaError(
                f"plugin module {module!r} (from {ENV} or the {GROUP} entry points) cannot be imported: {why}"
            ) from exc
        _loaded.append(module)
    return list(_loaded)
