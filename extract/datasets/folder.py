"""A plain folder of images, for features only: no targets.

Every `.jpg`, `.jpeg` and `.png` below `root` (any depth, any letter case), sorted by relative path;
the sample id is that relative path (e.g. `cats/001.jpg`). `split` selects nothing; it is recorded
so that a folder's "train" and "val" stores stay apart.
"""

from __future__ import annotations

from typing import Any

from maxa.core.errors import MaxaError
from maxa.core.sample import Sample
from maxa.extract.datasets.indexed import IndexedDataset
from maxa.extract.datasets.io import list_images, load_rgb, require_dir, require_root


class FolderDataset(IndexedDataset):
    """Images found recursively under a folder; samples carry no targets."""

    name = "folder"
    num_classes = 0

    def __init__(self, *, root: str | None = None, **listing: Any) -> None:
        super().__init__(**listing)
        self.class_names: list[str] = []
        self.root = require_dir(require_root(root, self.name, "a folder of images"), self.name, "the images")
        self.files = list_images(self.root)
        if not self.files:
            raise MaxaError(f"folder dataset: no .jpg/.jpeg/.png images under {self.root}")
        self._select([p.relative_to(self.root).as_posix() for p in self.files], self.root)

    def _load(self, position: int, sample_id: str) -> Sample:
        return Sample(id=sample_id, image=load_rgb(self.files[position]))
