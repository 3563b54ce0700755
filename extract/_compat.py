"""Make `import timm` work where torchvision's compiled ops cannot load.

PyPI's torchvision wheels link against CUDA builds of torch. Next to a CPU-only torch their
`_C` extension fails to load; torchvision tolerates that for every op but two (`nms`, `qnms`),
whose fake-tensor registration then raises at import. maxa never calls those ops, so declaring
their schemas (without kernels) is enough for torchvision, and therefore timm, to import.
Where the extension loads (a matching torch/torchvision pair, e.g. on a GPU machine) this does nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

import torch

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_done = False


def _extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # not installed: let the real import error surface
    candidates = sorted(Path(next(iter(spec.submodule_search_locations))).glob("_C.*"))
    if not candidates:
        return False
    try:
        torch.ops.load_library(str(candidates[0]))
    except (OSError, RuntimeError):
        return False
    return True


def ensure_torchvision_importable() -> None:
    global _done
    if _done or "torchvision" in sys.modules:
        return
    _done = True
    if _extension_loads():
        return
    for op in ("nms", "qnms"):
        with contextlib.suppress(RuntimeError):  # already declared
            torch.library.define(f"torchvision::{op}", _SCHEMA)
