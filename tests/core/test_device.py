"""`--device`: names torch does not know and GPUs this machine lacks are one-line errors."""

from __future__ import annotations

import pytest
import torch

from maxa.core.device import resolve_device
from maxa.core.errors import MaxaError


def test_names_and_missing_gpus() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for name in ("gpu", "cuda:x", "CPU", "cuda:0:1"):
        with pytest.raises(MaxaError, match=rf"--device '{name}' is not a device"):
            resolve_device(name)
    beyond = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"
    with pytest.raises(MaxaError, match=rf"--device {beyond}: this machine has"):
        resolve_device(beyond)
