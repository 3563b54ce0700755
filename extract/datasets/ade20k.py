"""ADE20K scene parsing (the SceneParse150 / ADEChallengeData2016 release).

Layout (`root` is ADEChallengeData2016, or a folder holding it):
`images/{training,validation}/*.jpg` and `annotations/{training,validation}/*.png` with the same
stems. Splits `train` / `val` read `training` / `validation`.

The annotation PNGs are 8-bit: 0 = "other" (no class), 1..150 the classes. Semantic ids shift down
by one, the usual "reduce zero label" convention: 1..150 -> 0..149 (wall 0, ..., flag 149) and
0 -> 255 (ignore). There is no background class. Sample ids are `ade20k-<file stem>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from maxa.core.errors import MaxaError
from maxa.core.sample import Sample
from maxa.extract.datasets.indexed import IndexedDataset
from maxa.extract.datasets.io import check_same_size, load_label_png, load_rgb, require_dir, require_root
from maxa.extract.datasets.labels import check_values, lookup_table

CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)  # fmt: skip
"""CLASS_NAMES[k] is semantic id k, annotation value k + 1."""

SPLIT_FOLDERS = {"train": "training", "val": "validation"}
LABEL_TABLE = lookup_table({raw: raw - 1 for raw in range(1, len(CLASS_NAMES) + 1)})
"""Annotation value -> semantic id (0 -> 255)."""


def find_ade_folder(root: Path) -> Path:
    for folder in (root, root / "ADEChallengeData2016"):
        if (folder / "images").is_dir() and (folder / "annotations").is_dir():
            return folder
    raise MaxaError(
        f"ade20k dataset: no images/ and annotations/ folders in {root} or {root / 'ADEChallengeData2016'}"
    )


class Ade20kDataset(IndexedDataset):
    """ADE20K SceneParse150: 150-class semantic segmentation."""

    name = "ade20k"
    num_classes = len(CLASS_NAMES)
    split_names = tuple(SPLIT_FOLDERS)

    def __init__(self, *, root: str | None = None, **listing: Any) -> None:
        super().__init__(**listing)
        self.class_names: list[str] = list(CLASS_NAMES)
        split = self.split
        base = find_ade_folder(require_root(root, self.name, "ADEChallengeData2016 (images/, annotations/)"))
        sub = SPLIT_FOLDERS[split]
        self.image_dir = require_dir(base / "images" / sub, self.name, f"the {split} images")
        self.label_dir = require_dir(base / "annotations" / sub, self.name, f"the {split} annotation PNGs")
        self.image_files = sorted(self.image_dir.glob("*.jpg"))
        self._select([f"ade20k-{p.stem}" for p in self.image_files], self.image_dir)

    def _load_image(self, position: int, sample_id: str) -> np.ndarray:
        return load_rgb(self.image_files[position])

    def _load(self, position: int, sample_id: str) -> Sample:
        image_path = self.image_files[position]
        label_path = self.label_dir / f"{image_path.stem}.png"
        image = self._load_image(position, sample_id)
        label = load_label_png(label_path, "annotation", referenced_by=image_path)
        check_same_size(label, image, label_path, image_path)
        check_values(label, np.arange(len(CLASS_NAMES) + 1), label_path, "0..150")
        return Sample(id=sample_id, image=image, targets={"semantic": LABEL_TABLE[label]})
