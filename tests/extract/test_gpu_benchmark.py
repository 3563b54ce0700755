"""benchmarks/gpu.py keeps working without a GPU: its --smoke mode runs every measurement on CPU."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def _load_script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("maxa_benchmark_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_smoke_mode_measures_extraction_and_stage_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TQDM_DISABLE", "1")
    gpu = _load_script(monkeypatch)
    out = tmp_path / "figures.json"
    result = gpu.main(["--smoke", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    e = result["extraction"]
    assert e["images"] == gpu.SMOKE.images and result["device"] == "cpu"
    assert e["bare_img_s"] > 0 and e["extract_img_s"] > 0
    runs = e["runs_s"]
    assert math.isclose(e["ratio"], min(runs["bare"]) / min(runs["extract"]))
    assert math.isclose(e["extract_img_s"], e["images"] / min(runs["extract"]))
    assert e["peak_gpu_gib"] is None  # no GPU: said, not made up
    t = result["stage_two"]
    assert t["memory"]["samples_s"] > 0 and t["stream"]["samples_s"] > 0
    assert math.isclose(t["ratio_memory_over_stream"], t["memory"]["samples_s"] / t["stream"]["samples_s"])
    assert t["memory"]["peak_gpu_gib"] is None


def test_full_mode_refuses_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gpu = _load_script(monkeypatch)
    with pytest.raises(SystemExit, match="--smoke"):
        gpu.main([])
