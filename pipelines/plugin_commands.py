"""`maxa plugins`: every registered task, adapter, dataset reader, metric and store codec, with where it
was declared (maxa or a plugin module); `--markdown` prints the tables of docs/registry.md (a test keeps
them equal). Reads the torch-free specs only (registered through COMMAND_MODULES in cli.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from maxa.core.codec_specs import CODECS
from maxa.core.plugins import plugin_modules
from maxa.core.registry import Registry, Spec
from maxa.evaluate.metric_specs import METRICS, MetricSpec
from maxa.extract.reader_specs import READERS, ReaderSpec
from maxa.pipelines.errors import user_errors
from maxa.probe.adapter_specs import ADAPTERS, AdapterSpec
from maxa.probe.task_specs import TASKS, TaskSpec


def _options(spec: Spec) -> str:
    return ", ".join(f"`{key}`={value!r}" for key, value in spec.defaults().items()) or "none"


def _range(spec: MetricSpec) -> str:
    return f"[{spec.low:g}, {spec.high:g}]"


def _task(spec: TaskSpec) -> list[str]:
    return [spec.target, f"`{spec.primary}`", _options(spec)]


def _adapter(spec: AdapterSpec) -> list[str]:
    return ["yes" if spec.trainable else "no (memory bank)", _options(spec)]


def _reader(spec: ReaderSpec) -> list[str]:
    return [spec.splits, _options(spec)]


def _metric(spec: MetricSpec) -> list[str]:
    return [spec.display(), "higher" if spec.higher_is_better else "lower", _range(spec)]


TABLES: list[tuple[str, Registry[Any], list[str], Callable[[Any], list[str]]]] = [
    ("Tasks (`--task`, `tasks.<run>.task`)", TASKS, ["target array", "primary metric", "options"], _task),
    ("Adapters (`--adapter`)", ADAPTERS, ["trained", "options"], _adapter),
    ("Dataset readers (`--dataset`, `datasets.<name>.dataset`)", READERS, ["splits", "options"], _reader),
    ("Metrics", METRICS, ["shown as", "better", "values"], _metric),
    ("Store codecs (`ArraySpec(codec=...)`)", CODECS, [], lambda spec: []),
]
"""What `maxa plugins` lists: a heading, the registry, the columns after name, and the cells of a spec."""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown() -> str:
    """The registries as Markdown tables (docs/registry.md)."""
    parts = []
    for title, registry, columns, cells in TABLES:
        header = ["name", *columns, "declared by", "what"]
        rows = [
            [f"`{spec.name}`", *cells(spec), registry.source(spec.name), spec.help]
            for spec in registry.specs()
        ]
        lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
        parts.append("\n".join(lines))
    head = (
        "# Registries\n\nWhat this maxa can run, as `maxa plugins --markdown` prints it from the registries "
        "(tests/pipelines/test_plugin_commands.py keeps this file equal to it). Add an entry without editing "
        'maxa: README "Extending maxa".\n\n'
    )
    return head + "\n\n".join(parts) + "\n"


@click.command("plugins")
@click.option("--markdown", is_flag=True, help="Print the tables of docs/registry.md.")
@click.option("--json", "as_json", is_flag=True, help="Print every entry as JSON.")
@user_errors
def command(markdown: bool, as_json: bool) -> None:
    """List the registered tasks, adapters, dataset readers, metrics and store codecs, with the plugin
    modules that declared any (MAXA_PLUGINS, the `maxa.plugins` entry points; README "Extending maxa")."""
    if markdown:
        click.echo(render_markdown(), nl=False)
        return
    if as_json:
        listing = {
            registry.kind: [
                {"name": s.name, "source": registry.source(s.name), "help": s.help} for s in registry.specs()
            ]
            for _, registry, _, _ in TABLES
        }
        click.echo(json.dumps({"plugins": plugin_modules(), **listing}, indent=2))
        return
    click.echo(f"plugin modules: {', '.join(plugin_modules()) or 'none'}")
    for _, registry, _, _ in TABLES:
        click.echo(f"\n{registry.kind}s:")
        for spec in registry.specs():
            source = registry.source(spec.name)
            mark = "" if source == "maxa" else f"  [{source}]"
            click.echo(f"  {spec.name:<16} {spec.help}{mark}")
