"""Propagated masks as DAVIS-format results: one indexed PNG per frame, `<dir>/<sequence>/<frame>.png`.

This is the layout davis2017-evaluation reads (`python evaluation_method.py --task semi-supervised
--results_path <dir> --davis_path <DAVIS>`) and the one DINO's eval_video_segmentation.py writes
(imwrite_indexed, lines 166-173: a Pillow "P" image, pixel value = object id, with a colour palette).
The palette is the one of the sequence's first annotation when the DAVIS files are at hand, so the
masks look like the annotations; otherwise the standard Pascal VOC / DAVIS colour map.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from maxa.core.errors import MaxaError


def voc_palette() -> list[int]:
    """The 256-colour Pascal VOC colour map (DAVIS annotations use its first colours): bits of the
    index spread over the high bits of R, G and B."""
    palette = []
    for index in range(256):
        r = g = b = 0
        code = index
        for shift in range(7, -1, -1):
            r |= (code & 1) << shift
            g |= ((code >> 1) & 1) << shift
            b |= ((code >> 2) & 1) << shift
            code >>= 3
        palette += [r, g, b]
    return palette


def read_palette(path: Path) -> list[int]:
    """The palette of an indexed PNG (DAVIS annotations are "P" images)."""
    with Image.open(path) as image:
        if image.mode != "P" or image.getpalette() is None:
            raise MaxaError(f"annotation {path} is a {image.mode!r} image, not an indexed ('P') PNG")
        return list(image.getpalette() or [])


def check_free(folder: Path) -> None:
    """Refuse to write into a sequence folder that already holds PNGs (earlier results stay intact)."""
    if folder.is_dir() and any(folder.glob("*.png")):
        raise MaxaError(f"{folder} already holds masks; choose another --masks-dir or remove it first")


def write_sequence(folder: Path, frames: Sequence[str], masks: np.ndarray, palette: Sequence[int]) -> None:
    """Write (T, H, W) object ids as `<folder>/<frame>.png` indexed PNGs (ids must fit in a byte)."""
    if len(frames) != len(masks):
        raise MaxaError(f"{folder}: {len(frames)} frame names for {len(masks)} masks")
    if masks.size and (masks.min() < 0 or masks.max() > 255):
        raise MaxaError(
            f"{folder}: object ids {masks.min()}..{masks.max()} do not fit an indexed PNG (0..255)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for name, mask in zip(frames, masks, strict=True):
        image = Image.fromarray(mask.astype(np.uint8))  # "L"; the palette makes it "P"
        image.putpalette(list(palette))
        image.save(folder / f"{name}.png", format="PNG")
