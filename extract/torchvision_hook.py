"""`import torchvision` / `import timm` in a user's own script, in the environment `make` creates.

constraints-cpu.txt installs the CPU build of torch; the registry's torchvision wheel is built against the
CUDA build, and importing it next to a CPU torch fails (`operator torchvision::nms does not exist`).
maxa fixes that for itself before it imports timm (_compat.py); a user's script did not get the fix.
`make install` runs this module, which writes a one-line .pth file into the environment: at interpreter
start it puts a finder in front of the import system (nothing heavy is imported), and the first
`import torchvision` runs maxa's fix, then the ordinary import. Where torchvision's ops load (a matching
pair), the fix does nothing.
"""

from __future__ import annotations

import importlib.abc
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PTH_NAME = "maxa_torchvision.pth"
PTH_LINE = "import maxa.extract.torchvision_hook\n"  # .pth lines that start with `import` are executed


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs the fix once, when torchvision is first imported, then steps aside."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> None:
        if fullname == "torchvision":
            sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
            from maxa.extract._compat import ensure_torchvision_importable

            ensure_torchvision_importable()
        return None  # the ordinary finders import it


def install() -> None:
    if "torchvision" not in sys.modules and not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())


def write_pth(folder: str | Path | None = None) -> Path:
    """Write the .pth file into `folder` (default: this environment's site-packages)."""
    target = Path(folder or sysconfig.get_paths()["purelib"]) / PTH_NAME
    target.write_text(PTH_LINE)
    return target


install()

if __name__ == "__main__":
    print(f"wrote {write_pth()}")
