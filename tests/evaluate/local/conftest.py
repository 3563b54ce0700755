"""Tiny hand-made feature and target stores (tests.kit.stores.write_stores) in each test's folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.kit.stores import write_stores

WriteStores = Callable[..., tuple[str, str | None]]


@pytest.fixture
def make_stores(tmp_path: Path) -> WriteStores:
    def make(
        name: str, features: dict[str, np.ndarray], targets: dict[str, np.ndarray] | None = None, **kw: Any
    ):
        return write_stores(tmp_path, name, features, targets, **kw)

    return make
