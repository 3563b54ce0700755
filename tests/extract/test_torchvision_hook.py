"""A user's `import timm` works in the environment `make` creates (issue 21: `torchvision::nms` errors)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from maxa.extract.torchvision_hook import PTH_NAME, write_pth

SCRIPT = """
import site, sys
site.addsitedir({folder!r})  # what the interpreter does with site-packages at start
heavy = [m for m in ("torch", "torchvision") if m in sys.modules]
import torchvision, timm  # a user's script: no maxa import of its own
model = timm.create_model("resnet18", pretrained=False, num_classes=0)
print(heavy, type(model).__name__, torchvision.__version__ != "")
"""


@pytest.mark.heavy
def test_pth_makes_plain_torchvision_and_timm_imports_work(tmp_path: Path) -> None:
    path = write_pth(tmp_path)
    assert path.name == PTH_NAME and path.read_text().startswith("import ")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(folder=str(tmp_path))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]", "ResNet", "True"]  # nothing heavy imported at start
