"""COCO-Stuff 164k: dense stuff + thing labels from the `stuffthingmaps_trainval2017` PNGs.

Layout: `root/{split}2017/*.jpg` (the COCO images) and
`root/stuffthingmaps_trainval2017/{split}2017/*.png`, one 8-bit PNG per image whose value v is
COCO-Stuff category id v + 1 (0 = person, ..., 181 = wood) and 255 = unlabeled.

Class mapping: 11 thing ids of the original 91 were never annotated (street sign, hat, shoe, eye
glasses, plate, mirror, window, desk, door, blender, hair brush), so the PNGs use 171 of the 182
values. Those 171 map, in increasing order, to semantic ids 0..170 (0 person ... 79 toothbrush,
80 banner ... 170 wood), the usual "COCO-Stuff-171" numbering; 255 and any unused value -> 255
(ignore). There is no background class. Sample ids are `coco-<file stem>`, the same as the `coco`
reader's, so both readers' stores of one split join image for image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from maxa.core.sample import Sample
from maxa.extract.datasets.indexed import IndexedDataset
from maxa.extract.datasets.io import (
    check_same_size,
    load_label_png,
    load_rgb,
    require_dir,
    require_root,
)
from maxa.extract.datasets.labels import lookup_table

CATEGORY_NAMES = (
    # things: COCO category ids 1..91 (PNG values 0..90)
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird",
    "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "hat", "backpack",
    "umbrella", "shoe", "eye glasses", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window", "desk",
    "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave",
    "oven", "toaster", "sink", "refrigerator", "blender", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush", "hair brush",
    # stuff: ids 92..182 (PNG values 91..181)
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter",
    "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit",
    "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light", "mat",
    "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement",
    "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river",
    "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper",
    "snow", "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent",
    "textile-other", "towel", "tree", "vegetable", "wall-brick", "wall-concrete", "wall-other",
    "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops",
    "window-blind", "window-other", "wood",
)  # fmt: skip
"""COCO-Stuff category names; CATEGORY_NAMES[v] is PNG value v (category id v + 1)."""

UNUSED_VALUES = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
"""PNG values of the 11 thing categories removed from COCO (street sign ... hair brush)."""

USED_VALUES = tuple(v for v in range(len(CATEGORY_NAMES)) if v not in UNUSED_VALUES)
"""The 171 PNG values with labels; USED_VALUES[k] is semantic class k."""

LABEL_TABLE = lookup_table({raw: k for k, raw in enumerate(USED_VALUES)})
"""PNG value -> semantic id (0..170, 255 = ignore)."""


class CocoStuffDataset(IndexedDataset):
    """COCO-Stuff semantic segmentation with 171 classes (80 things, 91 stuff)."""

    name = "coco_stuff"
    num_classes = len(USED_VALUES)

    def __init__(self, *, root: str | None = None, **listing: Any) -> None:
        super().__init__(**listing)
        self.class_names: list[str] = [CATEGORY_NAMES[v] for v in USED_VALUES]
        split = self.split
        tag = f"{split}2017"
        base = require_root(root, self.name, f"{tag}/*.jpg and stuffthingmaps_trainval2017/{tag}/*.png")
        self.image_dir = require_dir(base / tag, self.name, f"the {split} images")
        self.label_dir = require_dir(
            base / "stuffthingmaps_trainval2017" / tag, self.name, f"the {split} stuff+thing label PNGs"
        )
        self.label_files = sorted(self.label_dir.glob("*.png"))
        self._select([f"coco-{p.stem}" for p in self.label_files], self.label_dir)

    def _load_image(self, position: int, sample_id: str) -> np.ndarray:
        label_path = self.label_files[position]
        return load_rgb(self.image_dir / f"{label_path.stem}.jpg", referenced_by=label_path)

    def _load(self, position: int, sample_id: str) -> Sample:
        label_path = self.label_files[position]
        image_path = self.image_dir / f"{label_path.stem}.jpg"
        image = self._load_image(position, sample_id)
        label = load_label_png(label_path)
        check_same_size(label, image, label_path, image_path)
        return Sample(id=sample_id, image=image, targets={"semantic": LABEL_TABLE[label]})
