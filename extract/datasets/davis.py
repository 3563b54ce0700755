"""DAVIS 2017 (semi-supervised video object segmentation): every frame of a split is a sample.

Layout (`root` is the DAVIS folder, or a folder holding `DAVIS/`):
`JPEGImages/480p/<sequence>/00000.jpg`, `Annotations/480p/<sequence>/00000.png` (palette PNGs whose
indices are object ids) and `ImageSets/2017/<split>.txt` (train, val: one sequence per line).
Option `resolution` picks another image/annotation folder (e.g. `Full-Resolution`), option
`sequences` restricts a split to some of its sequences. Every frame needs its annotation, as in
train and val (test-dev, annotated on its first frames only, is not supported).

Samples run sequence by sequence (in the split file's order), frames in file-name order, with
`sequence` set, `frame` = the frame's 0-based position in its sequence, and ids
`davis-<sequence>-<frame stem>`. Targets: `instances` = the annotation's object ids (1..K, the same
object keeps its id across a sequence; 0 = background); `semantic` = 1 on any object, 0 on
background (a binary foreground map, 2 classes), 255 where the annotation marks void (index 255,
which is no instance either); `boxes` one per object id present, ascending.

Resolution as DINO evaluates DAVIS (eval_video_segmentation.py, read_frame, lines 197-214): the
frame's short side becomes 480 and the long side keeps the aspect ratio, rounded down to a multiple
of 64 (480x854 -> 480x832, see `dino_input_size`); labels are scored at the annotations' own 480p
size, so prepare DAVIS with `--label-size native`.
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
from maxa.extract.datasets.labels import instance_targets


def find_davis_folder(root: Path) -> Path:
    for folder in (root, root / "DAVIS"):
        if (folder / "ImageSets").is_dir() and (folder / "JPEGImages").is_dir():
            return folder
    raise MaxaError(f"davis dataset: no ImageSets/ and JPEGImages/ folders in {root} or {root / 'DAVIS'}")


class DavisDataset(IndexedDataset):
    """DAVIS 2017 video frames with per-object masks (sequence and frame index on every sample)."""

    name = "davis"
    num_classes = 2

    def __init__(
        self,
        *,
        root: str | None = None,
        resolution: str = "480p",
        sequences: list[str] | None = None,
        **listing: Any,
    ) -> None:
        super().__init__(**listing)
        self.class_names: list[str] = ["background", "object"]
        split = self.split
        base = find_davis_folder(
            require_root(root, self.name, "DAVIS (JPEGImages/, Annotations/, ImageSets/)")
        )
        self.resolution = str(resolution)
        self.image_root = require_dir(base / "JPEGImages" / self.resolution, self.name, "the frames")
        self.label_root = require_dir(base / "Annotations" / self.resolution, self.name, "the annotations")
        self.split_file = require_file(
            base / "ImageSets" / "2017" / f"{split}.txt", self.name, f"the {split} sequence names"
        )
        listed = [line.strip() for line in self.split_file.read_text().splitlines() if line.strip()]
        self.sequences = self._choose(listed, sequences)
        self.sequences_option = None if sequences is None else list(self.sequences)
        self.frames: list[tuple[str, int, Path]] = []
        for sequence in self.sequences:
            folder = self.image_root / sequence
            if not folder.is_dir():
                raise MaxaError(
                    f"davis dataset: sequence {sequence!r} in {self.split_file} has no folder {folder}"
                )
            self.frames.extend((sequence, k, path) for k, path in enumerate(sorted(folder.glob("*.jpg"))))
        self._select([f"davis-{seq}-{path.stem}" for seq, _, path in self.frames], self.split_file)

    def _choose(self, listed: list[str], chosen: list[str] | None) -> list[str]:
        if chosen is None:
            return listed
        if isinstance(chosen, str):
            chosen = [chosen]
        unknown = [s for s in chosen if s not in listed]
        if unknown:
            raise MaxaError(f"davis dataset: sequences {unknown} are not in {self.split_file}")
        return [s for s in listed if s in set(chosen)]

    def annotation_path(self, sequence: str, frame: int = 0) -> Path:
        """The annotation PNG of a sequence's `frame`-th frame (its palette colours the object ids)."""
        stems = [path.stem for seq, _, path in self.frames if seq == sequence]
        if not stems:
            raise MaxaError(f"davis dataset: no sequence {sequence!r} in {self.split_file}")
        return self.label_root / sequence / f"{stems[frame]}.png"

    def _options(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "sequences": self.sequences_option}

    def _load_image(self, position: int, sample_id: str) -> np.ndarray:
        return load_rgb(self.frames[position][2])

    def _load(self, position: int, sample_id: str) -> Sample:
        sequence, frame, image_path = self.frames[position]
        label_path = self.label_root / sequence / f"{image_path.stem}.png"
        image = self._load_image(position, sample_id)
        objects = load_label_png(label_path, "annotation", referenced_by=image_path)
        check_same_size(objects, image, label_path, image_path)
        void = objects == IGNORE_INDEX
        instances = np.where(void, 0, objects)
        semantic = np.where(void, IGNORE_INDEX, instances > 0).astype(np.uint8)
        return Sample(
            id=sample_id,
            image=image,
            targets={"semantic": semantic, **instance_targets(instances)},
            sequence=sequence,
            frame=frame,
        )
