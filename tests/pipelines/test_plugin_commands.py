"""`maxa plugins`: the registries as the CLI lists them, and docs tables that list exactly the registries."""

from __future__ import annotations

import json
import re
from pathlib import Path

from maxa.core.codec_specs import CODECS
from maxa.evaluate.metric_specs import METRICS
from maxa.extract.reader_specs import READERS
from maxa.pipelines.plugin_commands import render_markdown
from maxa.probe.adapter_specs import ADAPTERS
from maxa.probe.task_specs import TASKS
from tests.kit.cli import ok

ROOT = Path(__file__).resolve().parents[2]


def test_the_listing_names_every_entry_and_its_source() -> None:
    listing = json.loads(ok("plugins", "--json").output)
    assert listing["plugins"] == []
    for registry in (TASKS, ADAPTERS, READERS, METRICS, CODECS):
        entries = listing[registry.kind]
        assert [e["name"] for e in entries] == registry.names()
        assert all(e["source"] == "maxa" and e["help"] == registry.get(e["name"]).help for e in entries)
    text = ok("plugins").output
    assert text.startswith("plugin modules: none")
    assert all(f"  {name} " in text for name in TASKS.names() + READERS.names())


def test_docs_tables_list_exactly_the_registries() -> None:
    assert (ROOT / "docs/registry.md").read_text() == render_markdown(), "run `maxa plugins --markdown`"
    maxa_md = (ROOT / "docs/maxa.md").read_text()
    task_rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \|", maxa_md, flags=re.M)
    assert task_rows == [(name, TASKS.get(name).target) for name in TASKS.names()]
    metric_rows = re.findall(r"^\| (\w+) \| `(\w+)` [↑↓] \|", maxa_md, flags=re.M)
    assert [task for task, _ in metric_rows] == TASKS.names()
    assert all(TASKS.get(task).primary == primary for task, primary in metric_rows)
    datasets_md = (ROOT / "docs/datasets.md").read_text()
    assert sorted(re.findall(r"^## (\w+) — ", datasets_md, flags=re.M)) == sorted(READERS.names())
