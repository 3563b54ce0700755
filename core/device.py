"""Where computation runs: `auto` picks the GPU when there is one."""

import re

import torch

from maxa.core.errors import MaxaError

DEVICES = "auto | cpu | cuda | cuda:N | mps"
_NAME = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def resolve_device(name: str) -> torch.device:
    """The torch device for `--device NAME`; a name torch does not know, or a GPU this machine does
    not have, is a one-line error before any work (not a traceback from the first tensor moved)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not _NAME.match(name):
        raise MaxaError(f"--device {name!r} is not a device (expected {DEVICES})")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            have = f"{count} CUDA GPU(s)" if count else "no CUDA GPU (torch built for CPU or no driver)"
            raise MaxaError(f"--device {name}: this machine has {have}; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise MaxaError("--device mps: Apple's MPS is not available here; use --device cpu or auto")
    return torch.device(name)
