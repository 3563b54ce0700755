"""The dataset readers, declared once each (torch- and numpy-free): what `--dataset` and a params.yaml
`datasets.<name>.dataset` accept, the splits a reader knows, and the class that reads the files.

A reader's options are its class's keyword arguments besides `split` and `root` (`maxa params` checks a
params entry's `options` against them). A reader of one's own is a `ReaderSpec` registered in READERS
from a plugin module (README "Extending maxa"); its class follows extract/datasets/base.py `Dataset`.
"""

from __future__ import annotations

from dataclasses import dataclass

from maxa.core.registry import Registry, Spec


@dataclass(frozen=True, kw_only=True)
class ReaderSpec(Spec):
    splits: str
    """The values `--split` takes, as `--help` shows them (e.g. "train|val")."""
    implementation: str
    """`module:Class` of the reader: Class(split=..., root=..., **options) -> a `Dataset`."""


READERS: Registry[ReaderSpec] = Registry("dataset reader")

_PACKAGE = "maxa.extract.datasets"
_IMAGE_SETS = "any list in ImageSets (train, val, trainval)"

for _name, _class, _splits, _help in (
    ("ade20k", "ade20k:Ade20kDataset", "train|val", "ADE20K SceneParse150: 150 classes"),
    ("augmented", "augmented:AugmentedDataset", "the base split's", "augmented copies of another split"),
    ("coco", "coco:CocoDataset", "train|val (the {split}2017 folders)", "COCO 2017 instances"),
    ("coco_stuff", "coco_stuff:CocoStuffDataset", "train|val (the {split}2017 folders)", "COCO-Stuff 164k"),
    ("davis", "davis:DavisDataset", _IMAGE_SETS, "DAVIS 2017 video frames with object masks"),
    ("folder", "folder:FolderDataset", "a label only", "any folder of images (features only)"),
    ("nyu", "nyu:NyuDepthV2Dataset", "train|test|all", "NYU-Depth v2 labelled subset: depth and 40 classes"),
    ("nyu_frames", "nyu_frames:NyuFramesDataset", "train|validation", "NYU-Depth v2, the 47k raw frames"),
    ("synthetic", "synthetic:SyntheticDataset", "train|val|test", "built-in shapes with every target"),
    ("voc", "voc:VocDataset", _IMAGE_SETS, "Pascal VOC 2012 semantic and object segmentation"),
):
    READERS.register(
        ReaderSpec(name=_name, help=_help, splits=_splits, implementation=f"{_PACKAGE}.{_class}")
    )


def splits_help() -> str:
    """What `--split` takes per reader (docs/datasets.md has the layouts)."""
    return "The reader's split: " + "; ".join(f"{spec.name} {spec.splits}" for spec in READERS.specs()) + "."
