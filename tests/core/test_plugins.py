"""core/plugins.py: plugin modules named by the `maxa.plugins` entry point group and MAXA_PLUGINS are
imported once, before a registry is read."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from maxa.core import plugins
from maxa.core.errors import MaxaError
from maxa.core.registry import Registry, Spec


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean plugin state and a folder on sys.path for plugin modules and distributions."""
    monkeypatch.setattr(plugins, "_done", False)
    monkeypatch.setattr(plugins, "_loaded", [])
    monkeypatch.delenv(plugins.ENV, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _module(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(body)
    sys.modules.pop(name, None)


def test_modules_from_the_environment_and_entry_points_are_loaded_once(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    widgets: Registry[Spec] = Registry("widget")
    monkeypatch.setattr(plugins, "WIDGETS", widgets, raising=False)
    body = "from maxa.core import plugins\nfrom maxa.core.registry import Spec\n"
    _module(fresh, "plug_env", body + "plugins.WIDGETS.register(Spec(name='from_env', help='env'))\n")
    _module(fresh, "plug_ep", body + "plugins.WIDGETS.register(Spec(name='from_ep', help='entry point'))\n")
    dist = fresh / "toy_widgets-1.0.dist-info"  # an installed distribution declaring the entry point
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-widgets\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[maxa.plugins]\nwidgets = plug_ep\n")
    monkeypatch.setenv(plugins.ENV, " plug_env , ")
    assert plugins.plugin_modules() == ["plug_ep", "plug_env"]
    assert widgets.names() == ["from_ep", "from_env"]  # reading a registry loads the plugins first
    assert widgets.source("from_env") == "plug_env" and widgets.source("from_ep") == "plug_ep"
    assert plugins.load_plugins() == ["plug_ep", "plug_env"]  # and only once
    assert widgets.names() == ["from_ep", "from_env"]


def test_a_plugin_that_cannot_be_imported_is_one_line_naming_it(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(plugins.ENV, "no_such_plugin_module")
    with pytest.raises(MaxaError, match="plugin module 'no_such_plugin_module' \\(from MAXA_PLUGINS"):
        plugins.load_plugins()
    with pytest.raises(MaxaError, match="no_such_plugin_module"):  # still refused: not silently skipped
        plugins.load_plugins()
    again = "TaskSpec(name='semantic', help='x', target='t', label='x', primary='x', implementation='m:T', "
    again += "evaluator='m:E')"
    _module(
        fresh, "plug_twice", f"from maxa.probe.task_specs import TASKS, TaskSpec\nTASKS.register({again})\n"
    )
    monkeypatch.setenv(plugins.ENV, "plug_twice")
    with pytest.raises(
        MaxaError, match=r"plugin module 'plug_twice' .* ValueError: task 'semantic' is registered twice"
    ):
        plugins.load_plugins()


def test_the_console_script_reports_a_broken_plugin_in_one_line(tmp_path: Path) -> None:
    import os
    import subprocess

    env = {**os.environ, plugins.ENV: "no_such_plugin_module"}
    env.pop("MAXA_DEBUG", None)
    done = subprocess.run(
        [sys.executable, "-c", "from maxa.pipelines.launch import main; main()", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: plugin module 'no_such_plugin_module' (from MAXA_PLUGINS or the maxa.plugins entry points) "
        "cannot be imported: No module named 'no_such_plugin_module'"
    ]
