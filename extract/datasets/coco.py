"""COCO instances (2017 layout), read with pycocotools.

Layout: `root/{split}2017/*.jpg` and `root/annotations/instances_{split}2017.json` (option `year`
for other releases with the same layout, e.g. 2014).

Targets, per image:
- `semantic`: 0 = background, 1..80 = the annotation file's categories sorted by COCO category id
  (so COCO ids 1..90, which have gaps, become contiguous: person 1, ..., toothbrush 80); crowd
  regions (`iscrowd=1`) are 255 (ignore) where no ordinary instance covers them.
- `instances`: 1..K for the non-crowd annotations that stay visible, numbered in annotation-id order;
  masks are painted largest first so a small object lying on a larger one keeps its pixels.
  Crowd regions are never instances.
  Options for the MAXA paper's targets (deap/datasets/coco_simple.py:65,99-103: every annotation's
  mask through torchvision's `wrap_dataset_for_transforms_v2`, then an argmax over [background,
  mask_1, ...], so the first annotation in the file's order wins a pixel and crowd regions are
  instances): `overlap=first` (instead of `smallest`, the default) and `crowd=instance` (instead of
  `ignore`, the default). Instances are then numbered in the file's order.
- `boxes`: the annotations' own `bbox` (xywh -> xyxy), row k-1 for instance k.
- `boundary`: edges between instance ids.

Polygons with fewer than 3 points are dropped (pycocotools cannot rasterise them); an annotation
left with no polygon draws nothing.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from maxa.core.errors import MaxaError
from maxa.core.sample import IGNORE_INDEX, Sample
from maxa.extract.datasets.indexed import IndexedDataset
from maxa.extract.datasets.io import load_rgb, require_dir, require_file, require_root
from maxa.extract.transforms import instance_boundaries

OVERLAP_RULES = ("smallest", "first")
"""Who owns a pixel two masks cover: the smaller mask (maxa), or the annotation listed first (deap)."""
CROWD_RULES = ("ignore", "instance")
"""Crowd (`iscrowd=1`) regions: 255 in semantic and no instance (maxa), or an instance like any (deap)."""


def load_coco(path: Path) -> Any:
    """pycocotools' index of an annotation file, without its prints, with errors naming the file."""
    from pycocotools.coco import COCO  # lazy: it imports matplotlib

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MaxaError(f"{path} is not valid JSON: {exc}") from None
    except (AssertionError, KeyError, TypeError) as exc:
        raise MaxaError(f"{path} is not a COCO annotation file: {exc!r}") from None
    for key in ("images", "categories"):
        if not isinstance(coco.dataset.get(key), list):
            raise MaxaError(f"{path} is not a COCO annotation file: no {key!r} list")
    incomplete = [i for i in coco.dataset["images"] if not {"id", "file_name", "height", "width"} <= set(i)]
    if incomplete:
        raise MaxaError(f"{path}: image entry {incomplete[0]} lacks id, file_name, height or width")
    orphans = [a for a in coco.anns.values() if a.get("image_id") not in coco.imgs]
    if orphans:
        raise MaxaError(
            f"{path}: annotation {orphans[0].get('id')} refers to image id {orphans[0].get('image_id')}, "
            f"which the file does not list ({len(orphans)} such annotations)"
        )
    return coco


Window = tuple[slice, slice]


def decode_segmentation(
    segmentation: Any, height: int, width: int, where: str
) -> tuple[Window, np.ndarray] | None:
    """A polygon list's or an RLE's (compressed or not) mask, cut to its bounding window (painting
    only there keeps big images with many small objects cheap); None if it draws nothing."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return None
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict):
        size = [int(v) for v in segmentation.get("size", [])]
        if size != [height, width]:
            raise MaxaError(
                f"{where}: RLE mask size {size} does not match the image's [height, width] {[height, width]}"
            )
        counts = segmentation.get("counts")
        rle = (
            mask_utils.frPyObjects(segmentation, height, width) if isinstance(counts, list) else segmentation
        )
    else:
        raise MaxaError(f"{where}: segmentation must be a polygon list or an RLE dict")
    x, y, w, h = (int(v) for v in mask_utils.toBbox(rle))
    if w == 0 or h == 0:
        return None
    window = (slice(y, y + h), slice(x, x + w))
    with warnings.catch_warnings():  # pycocotools' own NumPy 2 deprecation, not the user's concern
        warnings.simplefilter("ignore", DeprecationWarning)
        return window, mask_utils.decode(rle)[window].astype(bool)


class CocoDataset(IndexedDataset):
    """COCO instance segmentation: semantic (81 classes with background), instances, boxes."""

    name = "coco"

    def __init__(
        self,
        *,
        root: str | None = None,
        year: int = 2017,
        overlap: str = "smallest",
        crowd: str = "ignore",
        **listing: Any,
    ) -> None:
        if overlap not in OVERLAP_RULES:
            raise MaxaError(
                f"coco dataset: option overlap must be one of {', '.join(OVERLAP_RULES)}, got {overlap!r}"
            )
        if crowd not in CROWD_RULES:
            raise MaxaError(
                f"coco dataset: option crowd must be one of {', '.join(CROWD_RULES)}, got {crowd!r}"
            )
        super().__init__(**listing)
        split = self.split
        self.year = int(year)
        self.overlap, self.crowd = overlap, crowd
        tag = f"{split}{self.year}"
        base = require_root(root, self.name, f"{tag}/*.jpg and annotations/instances_{tag}.json")
        self.image_dir = require_dir(base / tag, self.name, f"the {split} images")
        self.annotation_file = require_file(
            base / "annotations" / f"instances_{tag}.json", self.name, f"the {split} instance annotations"
        )
        self.coco = load_coco(self.annotation_file)
        categories = sorted(self.coco.cats)
        if len(categories) >= IGNORE_INDEX:
            raise MaxaError(f"{self.annotation_file}: {len(categories)} categories do not fit uint8 labels")
        self.category_index = {cat: k + 1 for k, cat in enumerate(categories)}
        self.class_names = ["background", *(str(self.coco.cats[c]["name"]) for c in categories)]
        self.num_classes = len(self.class_names)
        self.image_ids = sorted(self.coco.imgs)
        all_ids = [f"coco-{Path(self.coco.imgs[i]['file_name']).stem}" for i in self.image_ids]
        self._select(all_ids, self.annotation_file)

    def _options(self) -> dict[str, Any]:
        # Default rules are left out, so stores prepared before these options keep their fingerprint.
        rules = {"overlap": (self.overlap, OVERLAP_RULES[0]), "crowd": (self.crowd, CROWD_RULES[0])}
        return {"year": self.year, **{k: value for k, (value, default) in rules.items() if value != default}}

    def _load_image(self, position: int, sample_id: str) -> np.ndarray:
        info = self.coco.imgs[self.image_ids[position]]
        path = self.image_dir / str(info["file_name"])
        return load_rgb(path, referenced_by=f"{self.annotation_file}, image id {info['id']}")

    def _load(self, position: int, sample_id: str) -> Sample:
        info = self.coco.imgs[self.image_ids[position]]
        path = self.image_dir / str(info["file_name"])
        image = self._load_image(position, sample_id)
        height, width = int(info["height"]), int(info["width"])
        if image.shape[:2] != (height, width):
            raise MaxaError(
                f"{path} is {image.shape[0]}x{image.shape[1]} but {self.annotation_file} says "
                f"{height}x{width} (image id {info['id']})"
            )
        semantic, instances, boxes = self._rasterise(info["id"], height, width)
        targets = {
            "semantic": semantic,
            "instances": instances,
            "boundary": instance_boundaries(instances),
            "boxes": boxes,
        }
        return Sample(id=sample_id, image=image, targets=targets)

    def _rasterise(self, image_id: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        semantic = np.zeros((height, width), dtype=np.uint8)
        instances = np.zeros((height, width), dtype=np.int32)
        things: list[tuple[Window, np.ndarray, int, list[float]]] = []
        listed = self.coco.imgToAnns.get(image_id, [])  # the file's order: deap's argmax order
        for ann in listed if self.overlap == "first" else sorted(listed, key=lambda a: a["id"]):
            where = f"{self.annotation_file} annotation {ann['id']}"
            if ann.get("category_id") not in self.category_index:
                raise MaxaError(f"{where}: category id {ann.get('category_id')} is not in the categories")
            try:
                decoded = decode_segmentation(ann.get("segmentation"), height, width, where)
            except (TypeError, ValueError, IndexError) as exc:
                raise MaxaError(f"{where}: cannot decode its segmentation ({exc})") from None
            if decoded is None:
                continue
            window, mask = decoded
            if ann.get("iscrowd", 0) and self.crowd == "ignore":
                semantic[window][mask] = IGNORE_INDEX
            else:
                category = self.category_index[ann["category_id"]]
                things.append((window, mask, category, list(ann.get("bbox", []))))
        # Basic slices are views, so the masked writes below land in the full-size maps. The pixel goes
        # to the mask painted last: the smallest (largest painted first), or the first listed.
        order = (
            range(len(things) - 1, -1, -1)
            if self.overlap == "first"
            else sorted(range(len(things)), key=lambda k: -int(things[k][1].sum()))
        )
        for k in order:
            window, mask, category, _ = things[k]
            semantic[window][mask] = category
            instances[window][mask] = k + 1
        visible = np.bincount(instances.ravel(), minlength=len(things) + 1)[1:] > 0
        renumber = np.zeros(len(things) + 1, dtype=np.int32)
        renumber[1:][visible] = np.arange(1, int(visible.sum()) + 1, dtype=np.int32)
        boxes = [
            _xyxy(bbox, window) for (window, _, _, bbox), keep in zip(things, visible, strict=True) if keep
        ]
        return semantic, renumber[instances], np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def _xyxy(bbox: list[float], window: Window) -> tuple[float, float, float, float]:
    """The annotation's xywh box as xyxy; the mask's own box if the annotation has none."""
    if len(bbox) == 4:
        x, y, w, h = (float(v) for v in bbox)
        return (x, y, x + w, y + h)
    rows, cols = window
    return (float(cols.start), float(rows.start), float(cols.stop), float(rows.stop))
