"""NYU-Depth v2, labelled subset: `nyu_depth_v2_labeled.mat` (MATLAB v7.3, i.e. HDF5, read with h5py).

`root` is the folder holding `nyu_depth_v2_labeled.mat` (or the .mat file itself). MATLAB writes
arrays transposed, so the HDF5 datasets are `images` (N, 3, W, H) uint8, `depths` / `rawDepths`
(N, W, H) float32 metres, `labels` (N, W, H) uint16 (894 classes, 0 = unlabelled) and `instances`
(N, W, H) uint8 (instance numbers *per class*); this reader transposes them back to (H, W).

Splits: `train` (795 images) and `test` (654) come from the official `splits.mat` (a MATLAB v5
file with 1-based `trainNdxs` / `testNdxs`), found by the option `splits` (default `splits.mat`;
relative paths are inside root). `all` reads all 1449 images and needs no split file.

Targets:
- `depth`: option `depth` = `filled` (the in-painted `depths`, default) or `raw` (`rawDepths`,
  0 where the sensor had no reading). Evaluate inside `valid_depth_mask` (depth range and the
  Eigen crop, rows 45:471 and cols 41:601 of the 480x640 frame). The MAXA paper scores at the
  native 480x640 (deap/tasks/depth_estimation.py): prepare with `--label-size native` for its RMSE.
- `semantic`: with option `class_map` (a file mapping raw ids 1..894 to classes 1..K, 0 = none:
  the usual `classMapping40.mat` with its `mapClass` array, a .npy, or a text file of integers),
  semantic = mapped class - 1, so the standard 40-class set gives ids 0..39 (wall ... otherprop).
  Without it, raw ids are kept but must fit uint8: raw 1..num_classes -> 0..num_classes-1
  (num_classes defaults to 254), and larger raw ids, like raw 0, become 255 (ignore).
- `instances`: one id per (class, instance number) pair, numbered 1..K in that sorted order; 0 where
  the class or the instance number is 0. `boxes` and `boundary` follow from it.
Sample ids are `nyu-<1-based index in the .mat>` (e.g. `nyu-0001`), matching splits.mat's numbering.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from maxa.core.dataset_facts import eigen_crop_mask
from maxa.core.errors import MaxaError
from maxa.core.sample import IGNORE_INDEX, Sample
from maxa.extract.datasets.indexed import IndexedDataset
from maxa.extract.datasets.io import require_file, require_root, resolve_option_path
from maxa.extract.datasets.labels import instance_targets

if TYPE_CHECKING:
    import h5py

MAT_FILE = "nyu_depth_v2_labeled.mat"
MIN_DEPTH, MAX_DEPTH = 1e-3, 10.0
"""The depth range NYU evaluations count, in metres."""
DEPTH_SOURCES = {"filled": "depths", "raw": "rawDepths"}
SPLITS = ("train", "test", "all")
SPLIT_KEYS = {"train": "trainNdxs", "test": "testNdxs"}

NYU40_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)  # fmt: skip
"""Names of the 40-class set of Gupta et al. (class k + 1 of classMapping40.mat is semantic id k)."""


def valid_depth_mask(
    depth: np.ndarray,
    *,
    min_depth: float = MIN_DEPTH,
    max_depth: float = MAX_DEPTH,
    eigen_crop: bool = True,
) -> np.ndarray:
    """Pixels an NYU depth evaluation counts: finite depth in (min_depth, max_depth), inside the
    Eigen crop. Works on (H, W) or batched (..., H, W) maps."""
    valid = np.isfinite(depth) & (depth > min_depth) & (depth < max_depth)
    if eigen_crop:
        valid &= eigen_crop_mask(depth.shape[-2:])
    return valid


def load_split_indices(path: Path, split: str, count: int) -> np.ndarray:
    """0-based, ascending image indices of `split` from the official splits.mat (1-based there)."""
    from scipy.io import loadmat

    try:
        content = loadmat(str(path))
    except (OSError, ValueError, NotImplementedError) as exc:
        raise MaxaError(f"{path} is not a readable MATLAB v5 split file: {exc}") from None
    key = SPLIT_KEYS[split]
    if key not in content:
        raise MaxaError(f"{path} has no {key!r} (expected trainNdxs and testNdxs, 1-based)")
    indices = np.asarray(content[key]).astype(np.int64).ravel()
    if indices.size == 0 or indices.min() < 1 or indices.max() > count:
        raise MaxaError(f"{path}: {key} must hold 1-based indices within 1..{count}")
    return np.unique(indices) - 1


def load_class_map(path: Path) -> np.ndarray:
    """int64 array m with m[raw - 1] = class (1..K, 0 = none) for raw ids 1..len(m)."""
    try:
        if path.suffix == ".mat":
            from scipy.io import loadmat

            content = {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
            arrays = [v for v in content.values() if isinstance(v, np.ndarray) and v.dtype.kind in "iuf"]
            values = (
                content["mapClass"] if "mapClass" in content else (arrays[0] if len(arrays) == 1 else None)
            )
            if values is None:
                raise MaxaError(
                    f"class map {path} has no 'mapClass' array (and not exactly one numeric array)"
                )
        elif path.suffix == ".npy":
            values = np.load(path)
        else:
            values = np.array(path.read_text().replace(",", " ").split(), dtype=np.float64)
    except FileNotFoundError:
        raise MaxaError(f"nyu dataset: class map {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise MaxaError(f"nyu dataset: cannot read class map {path}: {exc}") from None
    mapping = np.asarray(values).ravel()
    if mapping.size == 0 or np.any(mapping < 0) or np.any(mapping != np.round(mapping)):
        raise MaxaError(f"nyu dataset: class map {path} must hold non-negative integers")
    if mapping.max() >= IGNORE_INDEX or mapping.max() < 1:
        raise MaxaError(f"nyu dataset: class map {path} must map to classes 1..254, got max {mapping.max()}")
    return mapping.astype(np.int64)


def pair_ids(labels: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """int32 ids 1..K of the distinct (label, number) pairs in sorted order; 0 where either is 0.

    Table lookups over the few labels present, not a sort of every pixel: linear in the pixels.
    """
    rank = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    present = np.flatnonzero(np.bincount(labels.ravel()))
    rank[present] = np.arange(len(present))
    keys = rank[labels] * 256 + numbers  # numbers are uint8: a valid key is never a multiple of 256
    keys[(labels == 0) | (numbers == 0)] = 0
    counts = np.bincount(keys.ravel())
    counts[0] = 0
    table = np.zeros(len(counts), dtype=np.int32)
    used = np.flatnonzero(counts)
    table[used] = np.arange(1, len(used) + 1, dtype=np.int32)
    return table[keys]


def _read_names(h5: h5py.File) -> list[str] | None:
    """The 894 raw class names (a MATLAB cell array of char arrays), or None if absent."""
    if "names" not in h5:
        return None
    try:
        refs = np.asarray(h5["names"]).ravel()
        return ["".join(chr(int(c)) for c in np.asarray(h5[ref]).ravel()) for ref in refs]
    except (KeyError, TypeError, ValueError, OSError):
        return None


class NyuDepthV2Dataset(IndexedDataset):
    """NYU-Depth v2 labelled: depth, semantic and instance maps of 1449 indoor 480x640 frames."""

    name = "nyu"
    split_names = SPLITS

    def __init__(
        self,
        *,
        root: str | None = None,
        splits: str = "splits.mat",
        class_map: str | None = None,
        num_classes: int | None = None,
        depth: str = "filled",
        **listing: Any,
    ) -> None:
        if depth not in DEPTH_SOURCES:
            raise MaxaError(
                f"nyu dataset: option depth must be one of {', '.join(DEPTH_SOURCES)}, got {depth!r}"
            )
        super().__init__(**listing)
        split = self.split
        base = require_root(root, self.name, f"a folder holding {MAT_FILE} (and splits.mat)")
        folder = base.parent if base.is_file() else base
        self.path = base if base.is_file() else require_file(base / MAT_FILE, self.name, "the labelled .mat")
        self.splits, self.class_map, self.depth = splits, class_map, depth
        self.depth_key = DEPTH_SOURCES[depth]
        count, names = self._inspect()
        self.indices = (
            np.arange(count)
            if split == "all"
            else load_split_indices(self._splits_file(folder), split, count)
        )
        self.num_classes_option = num_classes
        self._semantic_table(folder, names, class_map, num_classes)
        self._h5: h5py.File | None = None
        self._pid = -1
        self._select([f"nyu-{i + 1:04d}" for i in self.indices], self.path)

    def _splits_file(self, folder: Path) -> Path:
        path = resolve_option_path(self.splits, folder)
        if not path.is_file():
            raise MaxaError(
                f"nyu dataset: split {self.split!r} needs the official split file {path} (splits.mat with "
                "trainNdxs/testNdxs); pass -o splits=PATH, or use --split all"
            )
        return path

    def _inspect(self) -> tuple[int, list[str] | None]:
        """Check the datasets and their axis order once; return the image count and raw class names."""
        import h5py

        try:
            with h5py.File(self.path, "r") as h5:
                wanted = ("images", self.depth_key, "labels", "instances")
                missing = [k for k in wanted if k not in h5]
                if missing:
                    raise MaxaError(f"{self.path} has no dataset(s) {', '.join(missing)} (expected {wanted})")
                shape = h5["images"].shape
                if len(shape) != 4 or shape[1] != 3 or h5["images"].dtype != np.uint8:
                    raise MaxaError(
                        f"{self.path}: 'images' is {h5['images'].dtype} {shape}, expected uint8 (N, 3, W, H)"
                    )
                for key in wanted[1:]:
                    if h5[key].shape != (shape[0], shape[2], shape[3]):
                        raise MaxaError(
                            f"{self.path}: {key!r} has shape {h5[key].shape}, expected (N, W, H) = "
                            f"{(shape[0], shape[2], shape[3])} like 'images'"
                        )
                return int(shape[0]), _read_names(h5)
        except OSError as exc:
            raise MaxaError(
                f"{self.path} is not a MATLAB v7.3 (HDF5) file ({exc}); the labelled NYU .mat is v7.3"
            ) from None

    def _semantic_table(
        self, folder: Path, names: list[str] | None, class_map: str | None, num_classes: int | None
    ) -> None:
        """Set the uint8 table raw label -> semantic id, and the classes it produces."""
        self.table = np.full(1 << 16, IGNORE_INDEX, dtype=np.uint8)
        self.raw_limit: int | None = None
        if class_map is not None:
            if num_classes is not None:
                raise MaxaError("nyu dataset: give either class_map or num_classes, not both")
            mapping = load_class_map(resolve_option_path(class_map, folder))
            self.raw_limit = len(mapping)
            self.table[1 : 1 + len(mapping)] = np.where(mapping > 0, mapping - 1, IGNORE_INDEX)
            self.num_classes = int(mapping.max())
            generic = [f"class_{k + 1}" for k in range(self.num_classes)]
            self.class_names = list(NYU40_NAMES) if self.num_classes == len(NYU40_NAMES) else generic
            return
        cap = IGNORE_INDEX - 1 if num_classes is None else num_classes
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap < IGNORE_INDEX:
            raise MaxaError(f"nyu dataset: option num_classes must be an integer in 1..254, got {cap!r}")
        self.table[1 : cap + 1] = np.arange(cap, dtype=np.uint8)
        self.num_classes = cap
        raw_names = names or []
        self.class_names = [raw_names[k] if k < len(raw_names) else f"raw_{k + 1}" for k in range(cap)]

    def _options(self) -> dict[str, Any]:
        return {
            "splits": self.splits,
            "class_map": self.class_map,
            "num_classes": self.num_classes_option,
            "depth": self.depth,
        }

    def _file(self) -> h5py.File:
        """This process's own handle (HDF5 handles must not cross a fork into DataLoader workers)."""
        if self._h5 is None or self._pid != os.getpid():
            import h5py

            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_h5"], state["_pid"] = None, -1
        return state

    def _load_image(self, position: int, sample_id: str) -> np.ndarray:
        index = int(self.indices[position])
        try:
            return np.ascontiguousarray(np.asarray(self._file()["images"][index]).transpose(2, 1, 0))
        except (OSError, ValueError, KeyError) as exc:
            raise MaxaError(f"{self.path}: cannot read image {index + 1}: {exc}") from None

    def _load(self, position: int, sample_id: str) -> Sample:
        image = self._load_image(position, sample_id)
        index = int(self.indices[position])
        h5 = self._file()
        try:
            depth = np.asarray(h5[self.depth_key][index], dtype=np.float32).T
            labels = np.asarray(h5["labels"][index]).T
            numbers = np.asarray(h5["instances"][index]).T
        except (OSError, ValueError, KeyError) as exc:
            raise MaxaError(f"{self.path}: cannot read image {index + 1}: {exc}") from None
        if self.raw_limit is not None and labels.max() > self.raw_limit:
            raise MaxaError(
                f"{self.path} image {index + 1} has raw label {labels.max()}, beyond the "
                f"{self.raw_limit} entries of class map {self.class_map}"
            )
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
        instances = pair_ids(labels, numbers)
        targets = {"semantic": self.table[labels], "depth": depth, **instance_targets(instances)}
        return Sample(id=sample_id, image=image, targets=targets)
