"""Facts of datasets that their readers and the evaluation of their results both need.

Kept here so that evaluation imports no dataset reader: NYU's frame size and Eigen evaluation crop,
the input size DINO feeds DAVIS frames at, and the sample ids of augmented copies (retrieval queries).
"""

from __future__ import annotations

import math
import re

import numpy as np

NYU_FRAME_SIZE = (480, 640)
"""NYU-Depth v2 frames, (height, width)."""
EIGEN_CROP = (45, 471, 41, 601)
"""Eigen et al.'s evaluation crop at 480x640: rows [45, 471), columns [41, 601)."""


def eigen_crop_mask(shape: tuple[int, int] = NYU_FRAME_SIZE) -> np.ndarray:
    """Boolean (H, W) mask of the Eigen crop, scaled from 480x640 (half-up rounding) for resized maps."""
    h, w = shape
    top, bottom, left, right = EIGEN_CROP

    def scale(value: int, size: int, full: int) -> int:
        return math.floor(value * size / full + 0.5)

    mask = np.zeros((h, w), dtype=bool)
    rows = slice(scale(top, h, NYU_FRAME_SIZE[0]), scale(bottom, h, NYU_FRAME_SIZE[0]))
    cols = slice(scale(left, w, NYU_FRAME_SIZE[1]), scale(right, w, NYU_FRAME_SIZE[1]))
    mask[rows, cols] = True
    return mask


DINO_SHORT_SIDE = 480
DINO_MULTIPLE = 64


def dino_input_size(
    height: int, width: int, short_side: int = DINO_SHORT_SIDE, multiple: int = DINO_MULTIPLE
) -> tuple[int, int]:
    """(height, width) DINO feeds its network for a frame of this size: short side `short_side`,
    long side scaled to keep the aspect ratio and floored to a multiple of `multiple`."""
    if height > width:
        return math.floor(short_side * height / width // multiple * multiple), short_side
    return short_side, math.floor(short_side * width / height // multiple * multiple)


AUGMENTATIONS = ("blur", "noise", "crop")
"""The kinds of augmented copies (the `augmented` reader's)."""
_AUGMENTED_ID = re.compile(rf"^aug-({'|'.join(AUGMENTATIONS)})-(.+)$")


def augmented_id(kind: str, base_id: str) -> str:
    """The id of the `kind` copy of sample `base_id`."""
    return f"aug-{kind}-{base_id}"


def parse_augmented_id(sample_id: str) -> tuple[str, str] | None:
    """(kind, source id) of an augmented sample's id; None for any other id."""
    match = _AUGMENTED_ID.match(sample_id)
    return (match.group(1), match.group(2)) if match else None
