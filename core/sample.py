"""The one record every dataset reader yields: an image and whatever dense targets it has."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE_INDEX = 255
"""Semantic label for pixels that no metric or loss may count."""

TARGET_KINDS = ("semantic", "instances", "depth", "boundary")
"""Dense (H, W) targets a Sample may carry, in the order the target store writes them."""


@dataclass
class Sample:
    """One image with its targets at image resolution.

    targets may hold `semantic` (uint8 class ids, 255 = ignore), `instances` (int32 instance ids,
    0 = none), `depth` (float32 metres, 0 = invalid), `boundary` (uint8 0/1 instance boundaries),
    `boxes` (float32 (K, 4) xyxy pixels); `sequence` / `frame` name a video frame's place.
    """

    id: str
    image: np.ndarray  # uint8 (H, W, 3)
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    sequence: str | None = None
    frame: int | None = None

    def __post_init__(self) -> None:
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(
                f"sample {self.id!r}: image must be uint8 (H, W, 3), "
                f"got {self.image.dtype} {self.image.shape}"
            )
        h, w = self.image.shape[:2]
        for name in TARGET_KINDS:
            target = self.targets.get(name)
            if target is not None and target.shape != (h, w):
                raise ValueError(
                    f"sample {self.id!r}: target {name!r} has shape {target.shape}, expected {(h, w)}"
                )
