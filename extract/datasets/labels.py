"""Label-map arithmetic shared by the readers: id remapping and targets derived from instance maps."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from maxa.core.errors import MaxaError
from maxa.core.labels import instance_boxes
from maxa.core.sample import IGNORE_INDEX
from maxa.extract.transforms import instance_boundaries


def lookup_table(mapping: Mapping[int, int], size: int = 256, default: int = IGNORE_INDEX) -> np.ndarray:
    """uint8 table of `size` entries: table[raw] = mapping.get(raw, default)."""
    table = np.full(size, default, dtype=np.uint8)
    for raw, new in mapping.items():
        table[raw] = new
    return table


def check_values(label: np.ndarray, allowed: np.ndarray, path: Path, expected: str) -> None:
    """Fail on ids the format does not define (e.g. an RGB mask re-saved as a palette PNG)."""
    present = np.flatnonzero(np.bincount(label.ravel())) if label.dtype == np.uint8 else np.unique(label)
    bad = present[~np.isin(present, allowed)]
    if bad.size:
        raise MaxaError(f"{path} holds ids {bad[:5].tolist()} outside {expected}")


def instance_targets(instances: np.ndarray) -> dict[str, np.ndarray]:
    """int32 instances plus the boundary and box targets every instance-annotated reader derives."""
    instances = instances.astype(np.int32, copy=False)
    return {
        "instances": instances,
        "boundary": instance_boundaries(instances),
        "boxes": instance_boxes(instances),
    }
