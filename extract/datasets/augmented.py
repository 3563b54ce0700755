"""Augmented copies of another dataset split: the queries of the instance-retrieval test.

Stores hold features of the original images only, so retrieval's queries (blurred, noisy or cropped
copies of gallery images) are a split of their own: `maxa prepare --dataset augmented -o base=...`
then `maxa extract` as for any split. Sample i is base sample i, augmented deterministically from
(seed, i), with the id `aug-<kind>-<base id>` so the retrieval test finds its source by id.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from maxa.core.dataset_facts import AUGMENTATIONS, augmented_id
from maxa.core.errors import MaxaError
from maxa.core.sample import Sample
from maxa.extract.datasets.base import Dataset, build_dataset, dataset_fingerprint, option_problem

DEFAULT_STRENGTH = {"blur": 2.0, "noise": 20.0, "crop": 0.7}
"""blur: Gaussian sigma in pixels; noise: Gaussian std in 8-bit levels; crop: kept fraction of each side."""


def crop_box(height: int, width: int, fraction: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a crop keeping `fraction` of each side, placed uniformly at random."""
    ch, cw = max(1, round(fraction * height)), max(1, round(fraction * width))
    top = int(rng.integers(0, height - ch + 1))
    left = int(rng.integers(0, width - cw + 1))
    return top, left, ch, cw


def augment(sample: Sample, kind: str, strength: float, rng: np.random.Generator) -> Sample:
    """One augmented copy; crops cut the dense targets (and boxes) the same way, blur and noise keep them."""
    image, targets = sample.image, dict(sample.targets)
    if kind == "blur":
        blurred = Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=strength))
        image = np.asarray(blurred, dtype=np.uint8)
    elif kind == "noise":
        noisy = image.astype(np.float32) + rng.normal(0.0, strength, size=image.shape).astype(np.float32)
        image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    else:
        top, left, ch, cw = crop_box(image.shape[0], image.shape[1], strength, rng)
        image = image[top : top + ch, left : left + cw]
        for name, value in sample.targets.items():
            if name == "boxes":
                shifted = value.astype(np.float32) - np.array([left, top, left, top], np.float32)
                clipped = np.clip(shifted, 0, [cw, ch, cw, ch]).astype(np.float32)
                keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
                targets[name] = clipped[keep]
            elif value.ndim == 2 and value.shape == sample.image.shape[:2]:
                targets[name] = value[top : top + ch, left : left + cw]
    return Sample(
        id=augmented_id(kind, sample.id),
        image=np.ascontiguousarray(image),
        targets=targets,
        sequence=sample.sequence,
        frame=sample.frame,
    )


class AugmentedDataset:
    """Augmented copies of the base dataset's split `split` (same length, same order, same targets).

    Options: `base` (registered reader name), `base_options` (a mapping of the base reader's own
    options, e.g. -o 'base_options={num_images: 100}'), `kind` (blur, noise or crop), `strength`
    (default per kind: blur sigma 2 px, noise std 20 levels, crop keeps 0.7 of each side), `seed`.
    `root` is the base dataset's folder. `base_fingerprint` is filled in by config(): a reader
    rebuilt from a target store refuses to run if the base files changed since.
    """

    name = "augmented"

    def __init__(
        self,
        *,
        split: str = "val",
        root: str | None = None,
        base: str = "synthetic",
        base_options: dict[str, Any] | None = None,
        kind: str = "blur",
        strength: float | None = None,
        seed: int = 0,
        base_fingerprint: str | None = None,
    ) -> None:
        if kind not in AUGMENTATIONS:
            raise MaxaError(
                f"augmented dataset: option kind must be one of {', '.join(AUGMENTATIONS)}, got {kind!r}"
            )
        if base_options is not None and not isinstance(base_options, dict):
            raise MaxaError(f"augmented dataset: option base_options must be a mapping, got {base_options!r}")
        value = DEFAULT_STRENGTH[kind] if strength is None else strength
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise MaxaError(f"augmented dataset: option strength must be a positive number, got {strength!r}")
        if kind == "crop" and value > 1:
            raise MaxaError(
                f"augmented dataset: a crop keeps a fraction (0, 1] of each side, got strength {value}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise MaxaError(f"augmented dataset: option seed must be a non-negative integer, got {seed!r}")
        self.split = split
        self.base_name = base
        self.base_options = dict(base_options or {})
        self.kind = kind
        self.strength = float(value)
        self.seed = seed
        problem = option_problem(base, self.base_options)
        if problem is not None:
            raise MaxaError(f"augmented dataset: option base_options: {problem}")
        self.base: Dataset = build_dataset(base, split=split, root=root, **self.base_options)
        self.base_fingerprint = dataset_fingerprint(self.base)
        if base_fingerprint is not None and base_fingerprint != self.base_fingerprint:
            raise MaxaError(
                f"augmented dataset: the base {base}/{split} changed (fingerprint {self.base_fingerprint}, "
                f"expected {base_fingerprint})"
            )
        self.num_classes = self.base.num_classes
        self.class_names = list(self.base.class_names)

    def config(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "base": self.base_name,
            "base_options": self.base_options,
            "kind": self.kind,
            "strength": self.strength,
            "seed": self.seed,
            "base_fingerprint": self.base_fingerprint,
        }

    def __len__(self) -> int:
        return len(self.base)

    @cached_property
    def ids(self) -> list[str]:
        base_ids = getattr(self.base, "ids", None)
        if base_ids is None:
            base_ids = [self.base[i].id for i in range(len(self.base))]
        return [augmented_id(self.kind, str(i)) for i in base_ids]

    def __getitem__(self, index: int) -> Sample:
        sample = self.base[index]
        rng = np.random.default_rng([self.seed, int(index)])
        return augment(sample, self.kind, self.strength, rng)
