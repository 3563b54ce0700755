"""Writers of tiny datasets in the real on-disk formats (JPEG/PNG files, COCO JSON, MATLAB v7.3 HDF5).

They write only what the format has, so the readers are tested against files laid out exactly as the
downloads are. Images are seeded noise; label maps are small hand-placed rectangles whose ids the tests
know. The fixtures in conftest.py call these; tests import the constants and small helpers directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

PALETTE = [((i * 37) % 256, (i * 91 + 40) % 256, (i * 53 + 90) % 256) for i in range(256)]
"""Palette whose colours differ from their indices, so reading colours instead of indices fails."""


def noise(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def write_noise_pngs(
    folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (20, 24), name: str = "im{}.png"
) -> Path:
    """A folder of `n` noise PNGs (image i from seed + i), named by `name.format(i)`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(noise(*size, seed + i)).save(folder / name.format(i))
    return folder


def write_jpeg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


def write_palette_png(path: Path, indices: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette([c for rgb in PALETTE for c in rgb])
    image.save(path)


def write_grey_png(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file short, like an interrupted download."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def box_mask(height: int, width: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's crowd encoding: column-major run lengths, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def compressed_rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rectangle(rows: tuple[int, int], cols: tuple[int, int]) -> list[list[float]]:
    (y0, y1), (x0, x1) = rows, cols
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


COCO_CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
    {"id": 44, "name": "bottle", "supercategory": "kitchen"},
]
COCO_IMAGES = {1: (40, 48), 3: (24, 24), 5: (32, 32)}  # image id -> (height, width)
COCO_DOG = box_mask(40, 48, (25, 35), (30, 44))
COCO_CROWD = box_mask(40, 48, (0, 12), (30, 48))


def coco_annotations() -> list[dict[str, Any]]:
    """Image 1: a polygon person, an RLE dog, a crowd of people with a bottle drawn over it.
    Image 5: a small dog (lower annotation id) on a large person. Image 3: nothing."""
    return [
        {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [4, 4, 16, 16],
         "segmentation": rectangle((4, 20), (4, 20)), "area": 256.0},
        {"id": 11, "image_id": 1, "category_id": 18, "iscrowd": 0, "bbox": [30, 25, 14, 10],
         "segmentation": compressed_rle(COCO_DOG), "area": 140.0},
        {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [30, 0, 18, 12],
         "segmentation": uncompressed_rle(COCO_CROWD), "area": 216.0},
        {"id": 13, "image_id": 1, "category_id": 44, "iscrowd": 0, "bbox": [40, 2, 6, 6],
         "segmentation": rectangle((2, 8), (40, 46)), "area": 36.0},
        {"id": 20, "image_id": 5, "category_id": 18, "iscrowd": 0, "bbox": [10, 10, 6, 6],
         "segmentation": rectangle((10, 16), (10, 16)), "area": 36.0},
        {"id": 21, "image_id": 5, "category_id": 1, "iscrowd": 0, "bbox": [2, 2, 28, 28],
         "segmentation": rectangle((2, 30), (2, 30)), "area": 784.0},
    ]  # fmt: skip


def write_coco(root: Path, split: str = "val") -> Path:
    images = []
    for image_id, (h, w) in COCO_IMAGES.items():
        name = f"{image_id:012d}.jpg"
        write_jpeg(root / f"{split}2017" / name, noise(h, w, image_id))
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
    content = {"images": images, "annotations": coco_annotations(), "categories": COCO_CATEGORIES}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(content))
    return root


STUFF_VALUES = (0, 11, 91, 181, 255)
"""PNG values in the COCO-Stuff fixture: person, an unused thing id, banner, wood, unlabeled."""


VOC_NAMES = ("2007_000032", "2007_000039", "2008_000002")


def voc_labels(index: int) -> tuple[np.ndarray, np.ndarray]:
    """Class and object maps: a person (15) and a car (7) object, each outlined by the 255 void band."""
    semantic = np.zeros((24, 32), dtype=np.uint8)
    objects = np.zeros((24, 32), dtype=np.uint8)
    for obj, (cls, rows, cols) in enumerate(((15, (2, 10), (2, 12)), (7, (12, 22), (14, 30 - index))), 1):
        semantic[rows[0] - 1 : rows[1] + 1, cols[0] - 1 : cols[1] + 1] = 255
        objects[rows[0] - 1 : rows[1] + 1, cols[0] - 1 : cols[1] + 1] = 255
        semantic[rows[0] : rows[1], cols[0] : cols[1]] = cls
        objects[rows[0] : rows[1], cols[0] : cols[1]] = obj
    return semantic, objects


NYU_COUNT, NYU_H, NYU_W = 4, 48, 64


def write_voc_tree(voc: Path) -> Path:
    """A VOC2012 folder (`voc` = .../VOCdevkit/VOC2012): JPEGs, palette PNGs, train (2) and val (1) lists."""
    for k, name in enumerate(VOC_NAMES):
        write_jpeg(voc / "JPEGImages" / f"{name}.jpg", noise(24, 32, k))
        semantic, objects = voc_labels(k)
        write_palette_png(voc / "SegmentationClass" / f"{name}.png", semantic)
        write_palette_png(voc / "SegmentationObject" / f"{name}.png", objects)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\n".join(VOC_NAMES[:2]) + "\n")
    (sets / "val.txt").write_text(VOC_NAMES[2] + "\n")
    return voc


def nyu_arrays() -> dict[str, np.ndarray]:
    """Per-image (H, W) maps as a reader should return them (before MATLAB's transposition)."""
    rows, cols = np.mgrid[0:NYU_H, 0:NYU_W]
    images = np.stack(
        [np.stack([(rows * 3 + cols + 50 * c + 7 * n) % 256 for c in range(3)], -1) for n in range(NYU_COUNT)]
    ).astype(np.uint8)
    depths = np.stack([0.5 + rows / NYU_H + cols / NYU_W + n for n in range(NYU_COUNT)]).astype(np.float32)
    raw = depths.copy()
    raw[:, :4, :] = 0.0  # the sensor's missing readings
    labels = np.zeros((NYU_COUNT, NYU_H, NYU_W), dtype=np.uint16)
    instances = np.zeros((NYU_COUNT, NYU_H, NYU_W), dtype=np.uint8)
    labels[:, 5:20, 5:20], instances[:, 5:20, 5:20] = 5, 1  # two objects of class 5 ...
    labels[:, 5:20, 30:45], instances[:, 5:20, 30:45] = 5, 2
    labels[:, 25:40, 5:20], instances[:, 25:40, 5:20] = 300, 1  # ... one of a class beyond uint8
    labels[:, 25:40, 30:45] = 21  # labelled, no instance number
    return {"images": images, "depths": depths, "rawDepths": raw, "labels": labels, "instances": instances}


NYU_NAMES = ("book", "bottle", "cabinet", "ceiling", "chair", "cone")


def write_nyu_mat(path: Path, arrays: dict[str, np.ndarray] | None = None) -> None:
    """A MATLAB v7.3 file as MATLAB writes one: HDF5 behind a 512-byte user block, arrays transposed
    (MATLAB is column-major), `names` a cell array of references to uint16 char arrays."""
    arrays = nyu_arrays() if arrays is None else arrays
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as h5:
        h5["images"] = arrays["images"].transpose(0, 3, 2, 1)  # (N, 3, W, H)
        for key in ("depths", "rawDepths", "labels", "instances"):
            h5[key] = arrays[key].transpose(0, 2, 1)  # (N, W, H)
        refs = h5.create_group("#refs#")
        names = h5.create_dataset("names", (1, len(NYU_NAMES)), dtype=h5py.ref_dtype)
        for k, name in enumerate(NYU_NAMES):
            names[0, k] = refs.create_dataset(f"n{k}", data=np.array([[ord(c)] for c in name], np.uint16)).ref
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00"
    with path.open("r+b") as f:
        f.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")


DAVIS_SEQUENCES = {"bear": 3, "car-shadow": 2, "dog": 2}


def davis_objects(sequence: str, frame: int) -> np.ndarray:
    objects = np.zeros((18, 24), dtype=np.uint8)
    objects[2:8, 2 + frame : 10 + frame] = 1
    if sequence != "bear":
        objects[10:16, 12:20] = 2
    objects[0, :] = 255  # a void strip
    return objects
