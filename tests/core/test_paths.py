"""One reading of a typed path: `~` and `$VARS` expanded, URLs left to their scheme."""

from __future__ import annotations

from pathlib import Path

import pytest

from maxa.core.paths import expand_path, unexpanded


def test_home_and_variables_expand(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DATA", "/mnt/data")
    assert expand_path("~/VOCdevkit") == f"{tmp_path}/VOCdevkit"
    assert expand_path("$DATA/voc") == "/mnt/data/voc" == expand_path("${DATA}/voc")
    assert expand_path("s3://bucket/$DATA/x") == "s3://bucket//mnt/data/x"  # no home expansion in a URL
    assert expand_path("relative/dir") == "relative/dir"


def test_unset_variables_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAXA_NOT_SET", raising=False)
    assert unexpanded(expand_path("$MAXA_NOT_SET/voc")) == "$MAXA_NOT_SET"
    assert unexpanded(expand_path("${MAXA_NOT_SET}/voc")) == "$MAXA_NOT_SET"
    assert unexpanded("/plain/path") is None
