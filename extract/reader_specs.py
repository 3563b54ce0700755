"""The dataset readers, declared once each (torch- and numpy-free): what `--dataset` and a params.yaml
`datasets.<name>.dataset` accept, the splits a reader knows, and the class that reads the files.

A reader's options are its spec's options dataclass (names, types, defaults, help): `maxa params` and
`maxa prepare` check a params entry's `options` (and `-o KEY=VALUE`) against it, and the docs tables list
it (a field whose metadata says `options_of: <field>` holds the options of the reader that field names,
checked against that reader's dataclass); the reader class takes them as keyword arguments besides `split`
and `root`, with the same defaults (tests/pipelines/test_registry_contract.py). A reader of one's own is a
`ReaderSpec` registered in READERS from a plugin module (README "Extending maxa"); its class follows
extract/datasets/base.py `Dataset`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from maxa.core.registry import Registry, Spec


@dataclass(frozen=True, kw_only=True)
class ReaderSpec(Spec):
    splits: str
    """The values `--split` takes, as `--help` shows them (e.g. "train|val")."""
    implementation: str
    """`module:Class` of the reader: Class(split=..., root=..., **options) -> a `Dataset`."""


READERS: Registry[ReaderSpec] = Registry("dataset reader")


@dataclass(frozen=True)
class ListingOptions:
    """What every on-disk reader takes (extract/datasets/indexed.py `IndexedDataset`)."""

    num_images: int | None = field(
        default=None, metadata={"help": "keep the first N samples of the split's fixed order (null: all)."}
    )
    skip_ids: list[str] | None = field(
        default=None,
        metadata={"help": "sample ids to leave out (e.g. those `maxa prepare --skip-bad` found unreadable)."},
    )
    start: int = field(default=0, metadata={"help": "drop the first K samples of the fixed order first."})


@dataclass(frozen=True)
class SyntheticOptions:
    num_images: int = field(default=64, metadata={"help": "images in the split."})
    image_size: int = field(default=128, metadata={"help": "side of the square images (pixels)."})
    num_classes: int = field(
        default=4, metadata={"help": "shape kinds, 1..8 (semantic ids 1..N; 0 is the background)."}
    )
    max_objects: int = field(default=5, metadata={"help": "at most this many shapes per image."})
    seed: int = field(default=0, metadata={"help": "seed of the scenes (with the split and the index)."})


@dataclass(frozen=True)
class AugmentedOptions:
    base: str = field(default="synthetic", metadata={"help": "the reader of the original images."})
    base_options: dict[str, Any] | None = field(
        default=None, metadata={"help": "the base reader's options.", "options_of": "base"}
    )
    kind: str = field(default="blur", metadata={"help": "the augmentation: blur, noise or crop."})
    strength: float | None = field(
        default=None,
        metadata={"help": "null: blur sigma 2 px, noise std 20 levels, crop keeps 0.7 of each side."},
    )
    seed: int = field(default=0, metadata={"help": "seed of the random augmentations."})
    base_fingerprint: str | None = field(
        default=None, metadata={"help": "refuse a base split whose fingerprint differs (prepare records it)."}
    )


@dataclass(frozen=True)
class CocoOptions(ListingOptions):
    year: int = field(default=2017, metadata={"help": "the release ({split}{year} folders)."})
    overlap: str = field(
        default="smallest",
        metadata={"help": "which instance owns a pixel two masks cover.", "choices": ("smallest", "first")},
    )
    crowd: str = field(
        default="ignore",
        metadata={"help": "crowd regions: ignored (255) or instances.", "choices": ("ignore", "instance")},
    )


@dataclass(frozen=True)
class DavisOptions(ListingOptions):
    resolution: str = field(default="480p", metadata={"help": "the JPEGImages/Annotations subfolder."})
    sequences: list[str] | None = field(
        default=None, metadata={"help": "only these sequences (null: the split's list)."}
    )


@dataclass(frozen=True)
class NyuOptions(ListingOptions):
    splits: str = field(default="splits.mat", metadata={"help": "the file of the official train/test split."})
    class_map: str | None = field(
        default=None,
        metadata={"help": "a file mapping raw ids 1..894 to classes 1..K, e.g. classMapping40.mat."},
    )
    num_classes: int | None = field(
        default=None, metadata={"help": "without a class_map: keep raw ids 1..C as classes (null: 254)."}
    )
    depth: str = field(
        default="filled",
        metadata={"help": "the filled depths or the raw ones.", "choices": ("filled", "raw")},
    )


@dataclass(frozen=True)
class NyuFramesOptions(ListingOptions):
    archives: dict[str, int] | None = field(
        default=None, metadata={"help": "frames per archive to expect (prepare records them; null: any)."}
    )


@dataclass(frozen=True)
class VocOptions(ListingOptions):
    instances: bool = field(default=True, metadata={"help": "read the object (instance) masks too."})


_PACKAGE = "maxa.extract.datasets"
_IMAGE_SETS = "any list in ImageSets (train, val, trainval)"

for _name, _class, _options, _splits, _help in (
    ("ade20k", "ade20k:Ade20kDataset", ListingOptions, "train|val", "ADE20K SceneParse150: 150 classes"),
    ("augmented", "augmented:AugmentedDataset", AugmentedOptions, "the base split's",
     "augmented copies of another split"),
    ("coco", "coco:CocoDataset", CocoOptions, "train|val (the {split}2017 folders)", "COCO 2017 instances"),
    ("coco_stuff", "coco_stuff:CocoStuffDataset", ListingOptions, "train|val (the {split}2017 folders)",
     "COCO-Stuff 164k"),
    ("davis", "davis:DavisDataset", DavisOptions, _IMAGE_SETS, "DAVIS 2017 video frames with object masks"),
    ("folder", "folder:FolderDataset", ListingOptions, "a label only",
     "any folder of images (features only)"),
    ("nyu", "nyu:NyuDepthV2Dataset", NyuOptions, "train|test|all",
     "NYU-Depth v2 labelled subset: depth and 40 classes"),
    ("nyu_frames", "nyu_frames:NyuFramesDataset", NyuFramesOptions, "train|validation",
     "NYU-Depth v2, the 47k raw frames"),
    ("synthetic", "synthetic:SyntheticDataset", SyntheticOptions, "train|val|test",
     "built-in shapes with every target"),
    ("voc", "voc:VocDataset", VocOptions, _IMAGE_SETS, "Pascal VOC 2012 semantic and object segmentation"),
):  # fmt: skip
    READERS.register(
        ReaderSpec(
            name=_name, help=_help, options=_options, splits=_splits, implementation=f"{_PACKAGE}.{_class}"
        )
    )


def splits_help() -> str:
    """What `--split` takes per reader (docs/datasets.md has the layouts)."""
    return "The reader's split: " + "; ".join(f"{spec.name} {spec.splits}" for spec in READERS.specs()) + "."
