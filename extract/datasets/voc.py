"""Pascal VOC 2012 segmentation.

Layout (`root` is the VOC2012 folder, or a folder holding `VOCdevkit/VOC2012` or `VOC2012`):
`JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png`, `SegmentationObject/<id>.png` and
`ImageSets/Segmentation/<split>.txt` (train, val, trainval: one image id per line).

Both label PNGs are palette images (mode 'P'); their palette *indices* are the labels, the colours
are ignored. `semantic`: 0 = background, 1..20 the classes below, 255 = the void band VOC draws
along object outlines (ignore). `instances`: the SegmentationObject indices 1..K (0 on background
and on the void band). `boxes` come from the instance masks, one per instance id, ascending.
Option `instances=false` reads only SegmentationClass (for folders without SegmentationObject).
Sample ids are `voc-<image id>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from maxa.core.errors import MaxaError
from maxa.core.sample import IGNORE_INDEX, Sample
from maxa.extract.datasets.indexed import IndexedDataset
from maxa.extract.datasets.io import (
    check_same_size,
    load_label_png,
    load_rgb,
    require_dir,
    require_file,
    require_root,
)
from maxa.extract.datasets.labels import check_values, instance_targets

CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

SEMANTIC_VALUES = np.array([*range(len(CLASS_NAMES)), IGNORE_INDEX])


def find_voc_folder(root: Path) -> Path:
    """The VOC2012 folder itself: root, root/VOC2012 or root/VOCdevkit/VOC2012."""
    candidates = (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012")
    for folder in candidates:
        if (folder / "ImageSets" / "Segmentation").is_dir():
            return folder
    tried = ", ".join(str(c / "ImageSets" / "Segmentation") for c in candidates)
    raise MaxaError(f"voc dataset: no ImageSets/Segmentation under {root} (looked for {tried})")


class VocDataset(IndexedDataset):
    """Pascal VOC 2012 semantic (21 classes) and object segmentation."""

    name = "voc"
    num_classes = len(CLASS_NAMES)

    def __init__(self, *, root: str | None = None, instances: bool = True, **listing: Any) -> None:
        super().__init__(**listing)
        self.class_names: list[str] = list(CLASS_NAMES)
        split = self.split
        base = require_root(
            root, self.name, "VOCdevkit/VOC2012 with JPEGImages, SegmentationClass, ImageSets"
        )
        self.folder = find_voc_folder(base)
        self.with_instances = bool(instances)
        self.split_file = require_file(
            self.folder / "ImageSets" / "Segmentation" / f"{split}.txt", self.name, f"the {split} image ids"
        )
        require_dir(self.folder / "JPEGImages", self.name, "the images")
        require_dir(self.folder / "SegmentationClass", self.name, "the class label PNGs")
        if self.with_instances:
            require_dir(
                self.folder / "SegmentationObject",
                self.name,
                "the object label PNGs; or pass -o instances=false",
            )
        self.names = [line.split()[0] for line in self.split_file.read_text().splitlines() if line.strip()]
        self._select([f"voc-{n}" for n in self.names], self.split_file)

    def _options(self) -> dict[str, Any]:
        return {"instances": self.with_instances}

    def _label(self, kind: str, name: str, image: np.ndarray, image_path: Path) -> tuple[np.ndarray, Path]:
        path = self.folder / kind / f"{name}.png"
        label = load_label_png(path, f"{kind} label", referenced_by=self.split_file)
        check_same_size(label, image, path, image_path)
        return label, path

    def _image_path(self, position: int) -> Path:
        return self.folder / "JPEGImages" / f"{self.names[position]}.jpg"

    def _load_image(self, position: int, sample_id: str) -> np.ndarray:
        return load_rgb(self._image_path(position), referenced_by=self.split_file)

    def _load(self, position: int, sample_id: str) -> Sample:
        name = self.names[position]
        image_path = self._image_path(position)
        image = self._load_image(position, sample_id)
        semantic, path = self._label("SegmentationClass", name, image, image_path)
        check_values(semantic, SEMANTIC_VALUES, path, "0..20 and 255")
        targets: dict[str, np.ndarray] = {"semantic": semantic}
        if self.with_instances:
            objects, _ = self._label("SegmentationObject", name, image, image_path)
            targets.update(instance_targets(np.where(objects == IGNORE_INDEX, 0, objects)))
        return Sample(id=sample_id, image=image, targets=targets)
