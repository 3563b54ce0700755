"""NYU-Depth v2, the 47k-frame set the MAXA paper trains depth on: Hugging Face `sayakpaul/nyu_depth_v2`.

The set is distributed as tar archives of per-frame HDF5 files (from fast-depth's `nyudepthv2`):
`data/train-000000.tar` .. `data/train-000011.tar` and `data/val-000000.tar`, `data/val-000001.tar`,
each member `*.h5` holding `rgb` (3, 480, 640) uint8 and `depth` (480, 640) float32 metres. `root` is
the folder `hf_hub_download(..., local_dir=root)` fills (the archives under `root/data/`, or directly
in `root`). The archives are read as they are, never unpacked.

Order: the dataset's own loading script numbers the frames archive by archive (in the order of its
file list, i.e. by archive number) and, inside an archive, in the order of its members, skipping
anything that is not `.h5`. This reader lists them the same way, so frame i here is row i of
`load_dataset("sayakpaul/nyu_depth_v2")` and of deap's `load_from_disk` copy
(deap/datasets/nyu_depth_simple.py:42-44). deap's splits are index ranges of that order
(nyu_depth_simple.py:19-28): train = `train` frames 0..42000, val = 42000..47000, test = the
654 frames of `validation`; in params.yaml they are `train_images: 42000`, `start: 42000`, and
`test_split: validation`.

Targets: `depth` in metres, 0 where it is not a positive finite number. deap sets depth outside
(1e-3, 10] to 0 when it reads a frame (nyu_depth_simple.py:92-93); maxa keeps the metres and scores
inside (1e-3, 10) (`nyu.valid_depth_mask`), so the stored maps stay the files' own.
Sample ids: `nyu47k-<split>-<index>` (index in the split's order, 5 digits).
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from maxa.core.errors import MaxaError
from maxa.core.sample import Sample
from maxa.extract.datasets.indexed import IndexedDataset
from maxa.extract.datasets.io import require_root

SPLIT_ARCHIVES = {"train": "train", "validation": "val"}
"""Split -> archive name prefix (`train-000000.tar`, `val-000000.tar`), as the loading script names them."""
FRAME_SUFFIX = ".h5"


def list_archives(root: Path, split: str) -> list[Path]:
    """The split's archives in the loading script's order (by archive number)."""
    prefix = SPLIT_ARCHIVES[split]
    folder = root / "data" if (root / "data").is_dir() else root
    archives = sorted(folder.glob(f"{prefix}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"))
    if not archives:
        raise MaxaError(
            f"nyu_frames dataset: no {prefix}-NNNNNN.tar archives in {folder} (expected the "
            "sayakpaul/nyu_depth_v2 files data/train-000000.tar .. and data/val-000000.tar ..)"
        )
    return archives


def list_frames(archive: Path) -> list[tuple[str, int, int]]:
    """(member name, data offset, size) of every `.h5` member, in the archive's own order."""
    try:
        with tarfile.open(archive, "r:") as tar:
            return [
                (m.name, m.offset_data, m.size) for m in tar if m.isfile() and m.name.endswith(FRAME_SUFFIX)
            ]
    except (tarfile.TarError, OSError) as exc:
        raise MaxaError(f"nyu_frames dataset: {archive} is not a readable tar archive: {exc}") from None


class NyuFramesDataset(IndexedDataset):
    """NYU-Depth v2 raw frames (47,584 train + 654 validation, 480x640) with depth, as deap reads them."""

    name = "nyu_frames"
    num_classes = 0
    split_names = tuple(SPLIT_ARCHIVES)

    def __init__(
        self, *, root: str | None = None, archives: dict[str, int] | None = None, **listing: Any
    ) -> None:
        super().__init__(**listing)
        self.class_names: list[str] = []
        split = self.split
        base = require_root(
            root, self.name, "the sayakpaul/nyu_depth_v2 archives (data/train-000000.tar ...)"
        )
        self.archives = list_archives(base, split)
        self.frames: list[tuple[int, str, int, int]] = []  # (archive number, member, offset, size)
        self.counts: dict[str, int] = {}
        for number, archive in enumerate(self.archives):
            listed = list_frames(archive)
            self.frames.extend((number, *frame) for frame in listed)
            self.counts[archive.name] = len(listed)
        if archives is not None and dict(archives) != self.counts:
            raise MaxaError(
                f"nyu_frames dataset: the archives in {base} hold frames {self.counts}, but this store was "
                f"prepared from {dict(archives)} (another download: the frame indices would not match)"
            )
        self._files: dict[int, IO[bytes]] = {}
        self._pid = -1
        self._select([f"nyu47k-{split}-{i:05d}" for i in range(len(self.frames))], base)

    def _options(self) -> dict[str, Any]:
        # The archives' names and frame counts: a reader rebuilt from a store checks it sees the same.
        return {"archives": dict(self.counts)}

    def _file(self, number: int) -> IO[bytes]:
        """This process's own handle on an archive (handles must not cross a fork into DataLoader workers)."""
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        if number not in self._files:
            self._files[number] = open(self.archives[number], "rb")  # noqa: SIM115 (kept open for reads)
        return self._files[number]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_files"], state["_pid"] = {}, -1
        return state

    def _read(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        import h5py

        number, member, offset, size = self.frames[position]
        where = f"{self.archives[number]} member {member}"
        handle = self._file(number)
        handle.seek(offset)
        blob = handle.read(size)
        if len(blob) != size:
            raise MaxaError(f"nyu_frames dataset: {where} is truncated ({len(blob)} of {size} bytes)")
        try:
            with h5py.File(io.BytesIO(blob), "r") as h5:
                if "rgb" not in h5 or "depth" not in h5:
                    raise MaxaError(f"nyu_frames dataset: {where} lacks 'rgb' or 'depth' (has {sorted(h5)})")
                rgb, depth = np.asarray(h5["rgb"]), np.asarray(h5["depth"], dtype=np.float32)
        except OSError as exc:
            raise MaxaError(f"nyu_frames dataset: {where} is not an HDF5 file: {exc}") from None
        if rgb.ndim != 3 or rgb.shape[0] != 3 or rgb.dtype != np.uint8 or depth.shape != rgb.shape[1:]:
            raise MaxaError(
                f"nyu_frames dataset: {where} has rgb {rgb.dtype} {rgb.shape} and depth {depth.shape}; "
                "expected uint8 (3, H, W) and (H, W)"
            )
        return np.ascontiguousarray(rgb.transpose(1, 2, 0)), depth

    def _load_image(self, position: int, sample_id: str) -> np.ndarray:
        return self._read(position)[0]

    def _load(self, position: int, sample_id: str) -> Sample:
        image, depth = self._read(position)
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
        return Sample(id=sample_id, image=image, targets={"depth": depth})
