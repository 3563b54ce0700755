"""`maxa extract`: run a frozen backbone once over a prepared split and fill a feature store.

The loop is a pipeline so the backbone never waits: images are decoded and resized ahead of the
forward (by DataLoader worker processes into pinned memory on a GPU machine, by a background
thread on CPU); inputs reach the GPU on a side stream; the model runs under bf16/fp16 autocast
(channels_last for CNNs); features leave the GPU as contiguous float16 through an asynchronous copy
that overlaps the next batch's forward; full shards are written by background threads (raw shard
bytes for the float16 layers, maxa.core.store.raw).
A CUDA out-of-memory error halves the batch and carries on (said on stderr).
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from maxa.core import store as st
from maxa.core.device import resolve_device
from maxa.core.errors import MaxaError
from maxa.core.provenance import NONFINITE_KEY, FeatureProvenance, dataset_reference
from maxa.core.records import now_iso
from maxa.extract.backbones import Backbone, load_backbone
from maxa.extract.config import ExtractConfig
from maxa.extract.controls import ControlForward, is_control
from maxa.extract.datasets import Dataset
from maxa.extract.datasets.base import read_image
from maxa.extract.shard_writer import BufferPool, ShardWriter, write_threads
from maxa.extract.targets import dataset_from_targets
from maxa.extract.transforms import resize_image
from maxa.extract.version import __version__

MAX_AUTO_WORKERS = 16


class _Images(TorchDataset):
    """Decoded, resized uint8 images, no annotations (decoding runs in DataLoader workers when there
    are any)."""

    def __init__(self, dataset: Dataset, indices: list[int], size: tuple[int, int]) -> None:
        self.dataset, self.indices, self.size = dataset, indices, size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        index = self.indices[i]
        return index, torch.from_numpy(resize_image(read_image(self.dataset, index), self.size).copy())


def _rows_only(indices: list[int], batch_size: int) -> Iterator[tuple[torch.Tensor, None]]:
    """Batches of image rows without images: all a control store is computed from."""
    for start in range(0, len(indices), batch_size):
        yield torch.tensor(indices[start : start + batch_size]), None


class _Prefetch:
    """Iterates a loader on a background thread, a few batches ahead of the consumer.

    With in-process loading (no DataLoader workers) this overlaps decoding with the forward pass:
    PIL and numpy release the GIL, and torch's kernels leave gaps between operators.
    """

    _END = object()

    def __init__(self, loader: Iterable[Any], depth: int = 2) -> None:
        self.items: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(loader,), daemon=True)
        self.thread.start()

    def _run(self, loader: Iterable[Any]) -> None:
        try:
            for item in loader:
                while not self.stop.is_set():
                    try:
                        self.items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
        except BaseException as exc:  # re-raised in the consumer's thread
            self.error = exc
        finally:
            if not self.stop.is_set():  # a closed consumer reads nothing more
                self.items.put(self._END)

    def __iter__(self) -> Iterator[Any]:
        while (item := self.items.get()) is not self._END:
            yield item
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop early (the consumer failed) or after the end; returns once the thread has finished."""
        self.stop.set()
        with contextlib.suppress(queue.Empty):
            while True:  # unblock a producer waiting for room
                self.items.get_nowait()
        self.thread.join()


class _ShardAssembler:
    """Collects feature rows into whole shards and hands each full shard to the writer."""

    def __init__(self, store: st.Store, writer: ShardWriter, pool: BufferPool) -> None:
        self.store, self.writer, self.pool = store, writer, pool
        self.buffers: dict[int, dict[str, np.ndarray]] = {}
        self.filled: dict[int, int] = {}

    def add(self, indices: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        """`indices` ascending (DataLoader order), rows of `arrays` aligned with them."""
        size = self.store.shard_size
        shards = indices // size
        for shard in np.unique(shards).tolist():
            rows = np.flatnonzero(shards == shard)
            r0, r1 = int(rows[0]), int(rows[-1]) + 1
            offsets = indices[r0:r1] - shard * size
            where = (
                slice(int(offsets[0]), int(offsets[-1]) + 1)
                if offsets[-1] - offsets[0] == r1 - r0 - 1
                else offsets
            )
            buffers = self._buffers(shard)
            for name, arr in arrays.items():
                buffers[name][where] = arr[r0:r1]
            self.filled[shard] += r1 - r0
            start, stop = self.store.shard_range(shard)
            if self.filled[shard] == stop - start:
                del self.filled[shard]
                self.writer.put(shard, self.buffers.pop(shard))

    def _buffers(self, shard: int) -> dict[str, np.ndarray]:
        if shard not in self.buffers:
            start, stop = self.store.shard_range(shard)
            self.buffers[shard] = self.pool.take(stop - start)
            self.filled[shard] = 0
        return self.buffers[shard]

    def check_done(self) -> None:
        if self.buffers:
            raise RuntimeError(f"shards {sorted(self.buffers)} were left partly filled")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for --precision on `device` (None: run in float32)."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class BatchedForward:
    """Runs the backbone over a batch in chunks, halving the chunk on CUDA out-of-memory.

    Yields (start, stop, float16 features) per chunk; the reduced chunk size sticks for the rest
    of the run, so one OOM costs one retry, not one per batch.
    """

    def __init__(self, backbone: Backbone, batch_size: int, dtype: torch.dtype | None, device: torch.device):
        self.backbone, self.batch_size, self.dtype, self.device = backbone, batch_size, dtype, device

    def __call__(self, images: torch.Tensor) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
        start, n = 0, images.shape[0]
        while start < n:
            stop = min(start + self.batch_size, n)
            out: dict[str, torch.Tensor] | None = None
            try:
                out = self._forward(images[start:stop])
            except torch.cuda.OutOfMemoryError as exc:
                if self.batch_size == 1:
                    raise MaxaError(
                        f"{self.backbone.spec.model} runs out of GPU memory even for one image at "
                        f"input size {self.backbone.input_size[0]}; lower --input-size or use a larger GPU"
                    ) from exc
            if out is None:  # outside the except block: the failed pass's tensors are released now
                self._halve()
                continue
            yield start, stop, out
            start = stop

    def _halve(self) -> None:
        old, self.batch_size = self.batch_size, max(1, self.batch_size // 2)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        tqdm.write(
            f"maxa extract: out of GPU memory at batch size {old}; retrying with {self.batch_size}",
            file=sys.stderr,
        )

    def _forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(
            self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
        ):
            grids = self.backbone.features(self.backbone.prepare(images))
        # One pass converts to float16 (half the bytes to move) and lays the grid out channel-last
        # and contiguous, so every later copy (to the host, into the shard buffer) is a plain memcpy.
        layout = torch.contiguous_format
        return {name: g.to(dtype=torch.float16, memory_format=layout) for name, g in grids.items()}


@dataclass
class _InFlight:
    indices: np.ndarray
    host: dict[str, torch.Tensor]
    event: torch.cuda.Event | None


class _ToDevice:
    """Host -> device copies of input batches on a side stream, overlapping the running forward."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.stream is None:
            return images.to(self.device)
        with torch.cuda.stream(self.stream):
            x = images.to(self.device, non_blocking=True)
        compute = torch.cuda.current_stream(self.device)
        compute.wait_stream(self.stream)
        x.record_stream(compute)  # allocated on the side stream, used on the compute stream
        return x


class _ToHost:
    """Device -> host copies into reused pinned buffers on a side stream (two slots in turn).

    On a GPU the copy of one chunk's features runs while the next chunk computes; `finish` waits
    for a copy only when its rows are needed, one chunk later.
    """

    def __init__(self, device: torch.device, slots: int = 2) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.slots: list[dict[str, torch.Tensor]] = [{} for _ in range(slots)]
        self.turn = 0

    def start(self, indices: np.ndarray, out: dict[str, torch.Tensor]) -> _InFlight:
        if self.stream is None:
            return _InFlight(indices, {name: t.cpu() for name, t in out.items()}, None)
        slot = self.slots[self.turn]
        self.turn = (self.turn + 1) % len(self.slots)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the features are computed
        host = {}
        with torch.cuda.stream(self.stream):
            for name, t in out.items():
                buf = slot.get(name)
                if buf is None or buf.shape[0] < t.shape[0] or buf.shape[1:] != t.shape[1:]:
                    buf = slot[name] = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                view = buf[: t.shape[0]]
                view.copy_(t, non_blocking=True)
                t.record_stream(self.stream)  # keep the device memory until the copy is done
                host[name] = view
            event = torch.cuda.Event()
            event.record(self.stream)
        return _InFlight(indices, host, event)

    @staticmethod
    def finish(job: _InFlight) -> dict[str, np.ndarray]:
        if job.event is not None:
            job.event.synchronize()
        return {name: t.numpy() for name, t in job.host.items()}


def resolve_num_workers(num_workers: int | None, device: torch.device) -> int:
    """None: decode in worker processes on a GPU machine (keep the GPU fed), in-process on CPU.

    On CPU the forward already uses every core, so worker processes only add copies (in-process
    decoding runs on a prefetch thread instead); on a GPU machine two cores stay free for the
    main loop and the store writers.
    """
    if num_workers is not None:
        return num_workers
    if device.type != "cuda":
        return 0
    return max(1, min(MAX_AUTO_WORKERS, (os.cpu_count() or 1) - 2))


def precision_name(dtype: torch.dtype | None) -> str:
    """How the backbone ran: the autocast dtype, else float32."""
    return str(dtype).removeprefix("torch.") if dtype else "float32"


def feature_provenance(
    backbone: Backbone,
    targets: st.Store,
    grids: dict[str, tuple[int, ...]],
    config: ExtractConfig,
    dtype: torch.dtype | None,
) -> FeatureProvenance:
    """The feature store's provenance: the backbone's own facts, how it ran, and the split it read."""
    last = grids[backbone.layer_names[-1]]
    facts = {
        **backbone.provenance(),
        "name": config.name or config.model,
        "dataset": dataset_reference(targets).to_dict(),
        "feature_shapes": {name: list(grids[name]) for name in backbone.layer_names},
        "patch_size": [backbone.input_size[0] // last[0], backbone.input_size[1] // last[1]],
        "dtype": "float16",
        "maxa_version": __version__,
        "created": now_iso(),
        "precision": precision_name(dtype),
        **({NONFINITE_KEY: "keep"} if config.keep_nonfinite else {}),
    }
    return FeatureProvenance.from_dict(facts, f"backbone {config.model}")


def probe_shapes(
    backbone: Backbone, forward: BatchedForward, device: torch.device
) -> dict[str, tuple[int, ...]]:
    """Per-image shape of every output array, from one blank image (fails early on a bad input size)."""
    blank = torch.zeros(1, *backbone.input_size, 3, dtype=torch.uint8, device=device)
    try:
        out = forward._forward(blank)
    except torch.cuda.OutOfMemoryError as exc:
        raise MaxaError(
            f"{backbone.spec.model} runs out of GPU memory for one image at input size "
            f"{backbone.input_size[0]}; lower --input-size"
        ) from exc
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise MaxaError(
            f"input size {backbone.input_size[0]} does not work with {backbone.spec.model!r}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    return {name: tuple(v.shape[1:]) for name, v in out.items()}


def extract(
    config: ExtractConfig,
    targets_url: str,
    out: str,
    *,
    overwrite: bool = False,
    progress: bool = True,
    shards: Sequence[int] | None = None,
    root: str | None = None,
) -> st.Store:
    """Fill (or resume) the feature store `out` for the split behind the target store `targets_url`.

    `shards` restricts the run to those shards (one worker's share of a distributed extraction);
    the store is then not required to be complete when this call returns. `root`: the dataset folder on
    this machine when it differs from the one recorded in the target store (checked by content digests).
    """
    st.check_location(out)
    targets = st.open_store(targets_url, "targets")
    # A control store needs only the image count (the target store's ids): no dataset is opened or decoded.
    dataset = None if is_control(config.weights) else dataset_from_targets(targets, root)
    device = resolve_device(config.device)
    backbone = load_backbone(config.spec, device)
    dtype = autocast_dtype(config.precision, device)
    if device.type == "cuda":
        backbone.use_channels_last()
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    forward = BatchedForward(backbone, config.batch_size, dtype, device)
    shapes = probe_shapes(backbone, forward, device)
    dims = {
        name: ("image", "y", "x", "channel") if len(s) == 3 else ("image", "token", "channel")
        for name, s in shapes.items()
    }
    specs = {name: st.ArraySpec(shape, "float16", dims[name]) for name, shape in shapes.items()}
    control = ControlForward(backbone.weights, shapes, device) if is_control(backbone.weights) else None
    provenance = feature_provenance(backbone, targets, shapes, config, dtype)
    store = st.create_or_resume(
        out,
        kind="features",
        provenance=provenance.to_dict(),
        ids=targets.ids(),
        arrays=specs,
        shard_size=config.shard_size,
        overwrite=overwrite,
        repair=not shards,  # by the caller that owns the whole store, never by one worker of many
    )
    if (note := store.repair_note()) is not None:
        tqdm.write(f"maxa extract: {note}", file=sys.stderr)
    pending = store.pending_shards()
    if shards is not None:
        pending = sorted(set(pending) & set(shards))
    indices = [i for shard in pending for i in range(*store.shard_range(shard))]
    num_workers = resolve_num_workers(config.num_workers, device) if dataset is not None else 0
    loader: Iterable[tuple[torch.Tensor, torch.Tensor | None]] = (
        DataLoader(
            _Images(dataset, indices, backbone.input_size),
            batch_size=config.batch_size,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            prefetch_factor=4 if num_workers else None,
        )
        if dataset is not None
        else _rows_only(indices, config.batch_size)
    )
    threads = write_threads()
    # Buffers in use at once: the one being filled, the queued ones and those being written.
    pool = BufferPool(shapes, store.shard_size, np.float16, keep=2 + 2 + 2 * threads)
    writer = ShardWriter(store, threads=threads, release=pool.give)
    assembler = _ShardAssembler(store, writer, pool)
    to_device, to_host = _ToDevice(device), _ToHost(device)
    batches = _Prefetch(loader) if num_workers == 0 else None
    ok = False
    try:
        with tqdm(
            total=len(store),
            initial=len(store) - len(indices),
            unit="img",
            disable=not progress,
            desc=f"extract {provenance.backbone} ({provenance.weights}, {precision_name(dtype)})",
        ) as bar:
            in_flight: _InFlight | None = None
            for batch_indices, images in batches if batches is not None else loader:
                rows = batch_indices.numpy()
                if control is not None:
                    outputs = control(rows)
                else:
                    assert images is not None  # decoded unless this is a control store
                    outputs = forward(to_device(images))
                for start, stop, grids in outputs:
                    job = to_host.start(rows[start:stop], grids)
                    # The copy just queued overlaps with this wait for the previous one.
                    if in_flight is not None:
                        assembler.add(in_flight.indices, to_host.finish(in_flight))
                        bar.update(len(in_flight.indices))
                    in_flight = job
            if in_flight is not None:
                assembler.add(in_flight.indices, to_host.finish(in_flight))
                bar.update(len(in_flight.indices))
        assembler.check_done()
        ok = True
    finally:
        if batches is not None:
            batches.close()
        writer.close(raise_errors=ok)
    if shards is None:
        store.require_complete()
    return store
