"""pipelines/checks.py: every problem of a params file at once, each naming its key, nothing run."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from maxa.pipelines.checks import problems
from maxa.pipelines.params import load_params


def test_all_problems_listed_together(tmp_path: Path) -> None:
    raw = {
        "datasets": {
            "a": {"dataset": "folder", "root": str(tmp_path / "missing")},
            "b": {"dataset": "voc", "root": str(tmp_path), "options": {"instance": True}},
        },
        "backbones": {
            "x": {"model": "dinov2_s", "layers": "0,12"},
            "y": {"model": "convnext_t", "weights": str(tmp_path / "w.safetensors"), "layers": "-5"},
        },
        "tasks": {"seg": {"task": "semantic", "dataset": "a"}},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    found = problems(load_params(path))
    assert [p.split(":")[0] for p in found] == [
        "datasets.a.root",
        "datasets.b.options",
        "backbones.x",
        "backbones.y.weights",
        "backbones.y",
    ]
    assert "did you mean 'instances'" in found[1]
    assert "layer 12 is out of range for 'dinov2_s', which has 12 feature levels" in found[2]
    assert "layer -5" in found[4] and "4 feature levels" in found[4]


PROBE = """
import sys
from pathlib import Path
from maxa.pipelines.checks import problems
from maxa.pipelines.params import load_params
found = problems(load_params(Path(sys.argv[1])))
print(len(found), "torch" in sys.modules)
"""


def test_presets_are_checked_without_torch(tmp_path: Path) -> None:
    import subprocess

    raw = {
        "datasets": {"a": {"dataset": "synthetic"}},
        "backbones": {
            "x": {"model": "dinov2_s", "layers": "12"},
            "y": {"model": "vit_base_patch16_224.dino", "layers": "-1"},  # dino_b's timm name: its facts
        },
        "tasks": {"seg": {"task": "semantic", "dataset": "a"}},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "False"]
