"""extract/timm_facts.py: a plain timm name's facts kept on disk, so a repeated check imports no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from maxa.core.errors import MaxaError
from maxa.extract import backbones, timm_facts
from maxa.extract.backbones import describe

PROBE = """
import sys
from pathlib import Path
from maxa.pipelines.checks import problems
from maxa.pipelines.params import load_params
print(problems(load_params(Path(sys.argv[1]))), "torch" in sys.modules)
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("MAXA_CACHE_DIR", str(folder))
    return folder


@pytest.mark.heavy
def test_a_second_check_reads_the_cache_without_torch(tmp_path: Path, cache: Path) -> None:
    """The first check of a plain timm name builds it (torch imported) and keeps its facts; the second
    finds the same problems from the cache alone."""
    raw = {
        "datasets": {"a": {"dataset": "synthetic"}},
        "backbones": {
            "ok": {"model": "vit_tiny_patch16_224", "layers": "-1"},
            "deep": {"model": "vit_tiny_patch16_224", "layers": "12"},
            "odd": {"model": "resnet18", "input_size": 50, "layers": "-1"},
        },
        "tasks": {"seg": {"task": "semantic", "dataset": "a"}},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "MAXA_CACHE_DIR": str(cache)}
    runs = [
        subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, env=env)
        for _ in range(2)
    ]
    assert [run.returncode for run in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    first, second = (run.stdout.strip().rpartition(" ") for run in runs)
    assert first[2] == "True" and second[2] == "False"  # torch imported the first time only
    assert first[0] == second[0] and "layer 12 is out of range" in first[0]
    stored = json.loads(timm_facts.cache_file().read_text())
    assert set(stored) == {"vit_tiny_patch16_224", "resnet18"}


def test_cached_facts_are_describes(cache: Path) -> None:
    info = describe("vit_tiny_patch16_224")
    assert timm_facts.facts("vit_tiny_patch16_224") == timm_facts.ModelFacts(
        info.levels, info.num_prefix_tokens, info.patch, info.input_size
    )
    stored = json.loads(timm_facts.cache_file().read_text())["vit_tiny_patch16_224"]
    assert timm_facts.ModelFacts(**stored) == timm_facts.facts("vit_tiny_patch16_224")
    assert "timm-facts-" in timm_facts.cache_file().name and timm_facts.cache_file().parent == cache


def test_unknown_names_and_other_definitions_are_not_kept(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(MaxaError, match="unknown backbone 'vit_tiny_patch16_22'"):
        timm_facts.facts("vit_tiny_patch16_22")
    assert not timm_facts.cache_file().exists()
    monkeypatch.setattr(backbones, "timm_defines", lambda name: False)  # as for a plugin's model
    timm_facts.facts("resnet18")
    assert not timm_facts.cache_file().exists()


def test_a_damaged_cache_is_rebuilt(cache: Path) -> None:
    cache.mkdir()
    timm_facts.cache_file().write_text('{"resnet18": {"levels": "x"')  # cut off mid-write
    found = timm_facts.facts("resnet18")
    assert found.levels == describe("resnet18").levels
    assert json.loads(timm_facts.cache_file().read_text())["resnet18"]["levels"] == found.levels


def test_timm_defines_its_own_models_only() -> None:
    assert backbones.timm_defines("vit_tiny_patch16_224.augreg_in21k")
    assert not backbones.timm_defines("no_such_model")
