"""`maxa extract`: run a frozen backbone once over a prepared split and fill a feature store."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from maxa.extract import store as st
from maxa.extract.backbones import Backbone, load_backbone
from maxa.extract.config import ExtractConfig
from maxa.extract.datasets import Dataset
from maxa.extract.device import resolve_device
from maxa.extract.errors import MaxaError
from maxa.extract.targets import dataset_from_targets
from maxa.extract.transforms import normalize, resize_image
from maxa.extract.version import __version__


class _Images(TorchDataset):
    """Decoded, resized uint8 images (decoding runs in DataLoader workers when there are any)."""

    def __init__(self, dataset: Dataset, indices: list[int], size: tuple[int, int]) -> None:
        self.dataset, self.indices, self.size = dataset, indices, size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        index = self.indices[i]
        return index, torch.from_numpy(resize_image(self.dataset[index].image, self.size).copy())


class _ShardWriter:
    """Writes finished shards on a background thread so the backbone never waits on compression."""

    def __init__(self, store: st.Store, depth: int = 2) -> None:
        self.store = store
        self.jobs: queue.Queue[tuple[int, dict[str, np.ndarray]] | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if self.error is None:
                try:
                    self.store.write_shard(*job)
                except BaseException as exc:  # surfaced in put()/close()
                    self.error = exc

    def put(self, shard: int, arrays: dict[str, np.ndarray]) -> None:
        if self.error is not None:
            raise self.error
        self.jobs.put((shard, arrays))

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _batches(loader: DataLoader, device: torch.device) -> Iterator[tuple[list[int], torch.Tensor]]:
    for indices, images in loader:
        yield indices.tolist(), images.to(device, non_blocking=True)


def feature_provenance(backbone: Backbone, targets: st.Store, grids: dict[str, tuple[int, int, int]]) -> dict:
    prov = backbone.provenance()
    tprov = targets.provenance
    prov.update(
        {
            "dataset": {
                "name": tprov["dataset"],
                "split": tprov["split"],
                "fingerprint": tprov["dataset_fingerprint"],
            },
            "feature_shapes": {name: list(shape) for name, shape in grids.items()},
            "patch_size": [
                backbone.input_size[0] // grids[backbone.layer_names[-1]][0],
                backbone.input_size[1] // grids[backbone.layer_names[-1]][1],
            ],
            "dtype": "float16",
            "maxa_version": __version__,
            "created": st.now_iso(),
        }
    )
    return prov


def extract(
    config: ExtractConfig, targets_url: str, out: str, *, overwrite: bool = False, progress: bool = True
) -> st.Store:
    """Fill (or resume) the feature store `out` for the split behind the target store `targets_url`."""
    targets = st.open_store(targets_url, "targets")
    dataset = dataset_from_targets(targets)
    device = resolve_device(config.device)
    backbone = load_backbone(config.spec, device)
    probe = torch.zeros(1, *backbone.input_size, 3, dtype=torch.uint8, device=device)
    try:
        shapes = {
            k: tuple(v.shape[1:])
            for k, v in backbone.features(normalize(probe, backbone.mean, backbone.std)).items()
        }
    except RuntimeError as exc:
        raise MaxaError(
            f"input size {backbone.input_size[0]} does not work with {config.model!r}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    specs = {
        name: st.ArraySpec(shape, "float16", ("image", "y", "x", "channel")) for name, shape in shapes.items()
    }
    provenance = feature_provenance(backbone, targets, shapes)
    provenance["name"] = config.name or config.model
    store = st.create_or_resume(
        out,
        kind="features",
        provenance=provenance,
        ids=targets.ids(),
        arrays=specs,
        shard_size=config.shard_size,
        overwrite=overwrite,
    )
    pending = store.pending_shards()
    indices = [i for shard in pending for i in range(*store.shard_range(shard))]
    loader = DataLoader(
        _Images(dataset, indices, backbone.input_size),
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    writer = _ShardWriter(store)
    buffers: dict[int, dict[str, np.ndarray]] = {}
    filled: dict[int, int] = {}
    try:
        with tqdm(
            total=len(store),
            initial=len(store) - len(indices),
            unit="img",
            disable=not progress,
            desc=f"extract {provenance['name']}",
        ) as bar:
            for batch_indices, images in _batches(loader, device):
                with autocast:
                    grids = backbone.features(normalize(images, backbone.mean, backbone.std))
                host = {name: g.to("cpu", torch.float16).numpy() for name, g in grids.items()}
                for row, index in enumerate(batch_indices):
                    shard = index // store.shard_size
                    if shard not in buffers:
                        start, stop = store.shard_range(shard)
                        buffers[shard] = {n: np.empty((stop - start, *shapes[n]), np.float16) for n in shapes}
                        filled[shard] = 0
                    offset = index - shard * store.shard_size
                    for name, arr in host.items():
                        buffers[shard][name][offset] = arr[row]
                    filled[shard] += 1
                    start, stop = store.shard_range(shard)
                    if filled[shard] == stop - start:
                        writer.put(shard, buffers.pop(shard))
                bar.update(len(batch_indices))
    finally:
        writer.close()
    store.require_complete()
    return store
