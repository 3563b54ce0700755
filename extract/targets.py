"""`maxa prepare`: a dataset split -> a target store at a declared label resolution.

Besides the targets, the store keeps a content digest of every sample as read (`digests`: blake2b-128 of
the decoded image only; the targets live in the store itself), so whoever reads the dataset again from
the store (extract, with the data anywhere given by `--root`) is refused when an image differs from what
prepare read.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from maxa.core import store as st
from maxa.core.errors import Interrupted, MaxaError
from maxa.core.paths import expand_path
from maxa.core.provenance import NATIVE, TargetProvenance, dataset_reference
from maxa.core.records import DatasetRef
from maxa.core.sample import Sample
from maxa.extract.config import PrepareConfig
from maxa.extract.datasets import Dataset, build_dataset, dataset_fingerprint
from maxa.extract.datasets.base import option_problem, read_image
from maxa.extract.transforms import instance_boundaries, resize_image, resize_nearest

TARGET_SPECS: dict[str, tuple[str, tuple[str, ...]]] = {
    "semantic": ("uint8", ("image", "y", "x")),
    "instances": ("int32", ("image", "y", "x")),
    "depth": ("float32", ("image", "y", "x")),
    "boundary": ("uint8", ("image", "y", "x")),
}


def open_dataset(name: str, split: str, root: str | None, options: Mapping[str, Any]) -> Dataset:
    problem = option_problem(name, options)
    if problem is not None:
        raise MaxaError(f"reader options: {problem}")
    try:
        return build_dataset(name, split=split, root=root, **options)
    except TypeError as exc:
        raise MaxaError(f"dataset {name!r} does not take these options: {exc}") from exc


def image_digest(image: np.ndarray) -> np.ndarray:
    """blake2b-128 of a decoded image (dtype, shape and bytes): what extraction reads of a sample.

    Targets need no digest: they live in the target store itself; the image is what is read again."""
    a = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=st.DIGEST_SIZE)
    h.update(f"image:{a.dtype.str}:{a.shape};".encode())
    h.update(a.tobytes())
    return np.frombuffer(h.digest(), np.uint8)


def resolved_root(root: str | None) -> str | None:
    """Roots are stored absolute, so a store read from another folder finds its data."""
    return str(Path(expand_path(root)).resolve()) if root else None


class VerifiedDataset:
    """A reader whose samples are checked against the digests prepare recorded, as they are read."""

    def __init__(self, dataset: Dataset, digests: np.ndarray, store: st.Store, root: str | None) -> None:
        self.dataset, self.digests, self.store_url, self.root = dataset, digests, store.url, root
        self.sample_ids = store.ids()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "dataset":  # unpickling (DataLoader workers) looks these up
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def _check(self, index: int, image: np.ndarray, sample_id: str | None = None) -> None:
        expected = self.sample_ids[index]
        if (sample_id is not None and sample_id != expected) or not np.array_equal(
            image_digest(image), self.digests[index]
        ):
            where = f"under {self.root}" if self.root else "of the reader"
            raise MaxaError(
                f"sample {expected!r} {where} differs from what prepare read into "
                f"{self.store_url} (content digest); re-run prepare, or pass --root pointing at the same data"
            )

    def __getitem__(self, index: int) -> Sample:
        sample = self.dataset[index]
        self._check(index, sample.image, sample.id)
        return sample

    def image(self, index: int) -> np.ndarray:
        """Only the image (extraction's fast path), checked like a whole sample."""
        image = read_image(self.dataset, index)
        self._check(index, image)
        return image


def dataset_from_targets(store: st.Store, root: str | None = None) -> Dataset:
    """Rebuild the reader a target store was prepared from (so features join it id for id).

    `root` replaces the stored dataset root (the data lives elsewhere on this machine); every sample read
    is then checked against the content digests prepare recorded, so a different copy is refused.
    """
    ref = dataset_reference(store)
    digests = store.digests()
    if root and digests is None:
        raise MaxaError(
            f"target store {store.url} has no content digests (store format 1), so --root data cannot be "
            "checked against it; re-run `maxa prepare` on the data"
        )
    root = resolved_root(root) if root else ref.root
    if root and not Path(root).exists() and "://" not in root:
        raise MaxaError(
            f"dataset root {root} (from {store.url}) does not exist here; pass --root DIR, where the "
            f"{ref.name} data is on this machine"
        )
    dataset = open_dataset(ref.name, ref.split, root, ref.options)
    if dataset_fingerprint(dataset) != ref.fingerprint:
        raise MaxaError(
            f"the {ref.name} files behind {store.url} changed since it was prepared "
            f"(fingerprint {dataset_fingerprint(dataset)} != {ref.fingerprint}); re-run prepare"
        )
    if digests is None:
        return dataset  # a format-1 store: no content digests to check against
    return VerifiedDataset(dataset, digests, store, root)


def reader_of(store: st.Store) -> Dataset | None:
    """The reader behind a target store, or None when it cannot be rebuilt here (what evaluation is
    handed to order video frames by, without importing a reader itself)."""
    try:
        return dataset_from_targets(store)
    except MaxaError:
        return None


def _sample(dataset: Dataset, index: int, skip_bad: bool) -> Sample:
    """dataset[index]; a file that cannot be read names the way past it (--skip-bad)."""
    try:
        return dataset[index]
    except MaxaError as exc:
        if skip_bad or "--skip-bad" in str(exc):
            raise
        raise MaxaError(
            f"{exc}; pass --skip-bad to leave unreadable samples out (they are recorded)"
        ) from exc


def label_shape(label_size: int | str, first: Sample) -> tuple[int, int]:
    """(height, width) of the stored targets: a square side, or the first image's own size."""
    if label_size == NATIVE:
        return int(first.image.shape[0]), int(first.image.shape[1])
    return int(label_size), int(label_size)


def _label_arrays(sample: Sample, shape: tuple[int, int], native: bool = False) -> dict[str, np.ndarray]:
    if native and sample.image.shape[:2] != shape:
        raise MaxaError(
            f"--label-size native: sample {sample.id!r} is {sample.image.shape[0]}x{sample.image.shape[1]} "
            f"but the split's first image is {shape[0]}x{shape[1]}; native needs one size (give a side)"
        )
    out = {"image": resize_image(sample.image, shape)}
    for name in TARGET_SPECS:
        if name in sample.targets:
            out[name] = resize_nearest(sample.targets[name], shape)
    if "instances" in out:  # thin lines do not survive resizing: recompute at label resolution
        out["boundary"] = instance_boundaries(out["instances"])
    # Box areas are scored in the original image's pixels (COCO's area ranges), so keep its size.
    out["original_size"] = np.asarray(sample.image.shape[:2], np.int32)
    return out


def _stopped_at_a_bad_sample(out: str, provenance: Mapping[str, Any]) -> bool:
    """Whether `out` is what a prepare of the same split left when a sample failed to load: unfinished,
    same reader, split and root. `--skip-bad`, the fix that error names, replaces it (the skipped ids
    change the reader's options, so it could not resume it) instead of asking for --overwrite."""
    try:
        old = st.open_store(out, "targets", require_complete=False)
    except MaxaError:
        return False
    if old.complete:
        return False
    return all(old.provenance.get(k) == provenance.get(k) for k in ("dataset", "split", "root"))


def prepare(
    config: PrepareConfig, out: str, *, overwrite: bool = False, progress: bool = True, skip_bad: bool = False
) -> st.Store:
    """`skip_bad`: leave out samples that fail to load; their ids and reasons go in the store's `skipped`
    attribute and, through the reader's `skip_ids` option, into its provenance."""
    st.check_location(out)  # before any file is read
    skipped: dict[str, str] = {}
    if skip_bad:
        from maxa.extract.datasets.skipping import exclude_bad_samples

        def build(skip_ids: list[str]) -> Dataset:
            options = {**config.options, "skip_ids": skip_ids} if skip_ids else config.options
            return open_dataset(config.dataset, config.split, config.root, options)

        dataset, skipped = exclude_bad_samples(build, config.options.get("skip_ids") or (), progress=progress)
    else:
        dataset = open_dataset(config.dataset, config.split, config.root, config.options)
    if len(dataset) == 0:
        raise MaxaError(f"dataset {config.dataset!r} split {config.split!r} has no samples")
    sample0 = _sample(dataset, 0, skip_bad)
    shape = label_shape(config.label_size, sample0)
    first = _label_arrays(sample0, shape)
    specs = {"image": st.ArraySpec((*shape, 3), "uint8", ("image", "y", "x", "rgb"))}
    for name in first:
        if name in TARGET_SPECS:
            dtype, dims = TARGET_SPECS[name]
            specs[name] = st.ArraySpec(shape, dtype, dims)
    specs["original_size"] = st.ArraySpec((2,), "int32", ("image", "height_width"))
    specs[st.DIGESTS] = st.ArraySpec((st.DIGEST_SIZE,), "uint8", ("image", "byte"), compress=False)
    ids = (
        [_sample(dataset, i, skip_bad).id for i in range(len(dataset))]
        if not hasattr(dataset, "ids")
        else list(dataset.ids)
    )
    reader_config = dataset.config()
    provenance = TargetProvenance(
        dataset=DatasetRef(
            name=config.dataset,
            split=config.split,
            fingerprint=dataset_fingerprint(dataset),
            options={k: v for k, v in reader_config.items() if k not in ("split", "root")},
            root=resolved_root(config.root),
        ),
        num_classes=dataset.num_classes,
        class_names=list(dataset.class_names),
        label_size=shape,
        label_resolution=NATIVE if config.label_size == NATIVE else None,
        targets=sorted(k for k in specs if k not in ("image", "original_size", st.DIGESTS)),
    ).to_dict()
    store = st.create_or_resume(
        out,
        kind="targets",
        provenance=provenance,
        ids=ids,
        arrays=specs,
        shard_size=config.shard_size,
        overwrite=overwrite or (skip_bad and _stopped_at_a_bad_sample(out, provenance)),
    )
    if (note := store.repair_note()) is not None:
        tqdm.write(f"maxa prepare: {note}", file=sys.stderr)
    if skip_bad:
        store.set_attr("skipped", skipped)
    pending = store.pending_shards()
    try:
        _write_pending(store, dataset, specs, ids, pending, config, progress, shape)
    except KeyboardInterrupt:
        done = store.num_shards - len(store.pending_shards())
        raise Interrupted(
            f"interrupted: {done} of {store.num_shards} shards of {out} are written and kept; "
            "re-run the same command to resume"
        ) from None
    return store


def _write_pending(
    store: st.Store,
    dataset: Dataset,
    specs: Mapping[str, st.ArraySpec],
    ids: list[str],
    pending: list[int],
    config: PrepareConfig,
    progress: bool,
    shape: tuple[int, int],
) -> None:
    native = config.label_size == NATIVE
    with tqdm(
        total=len(dataset),
        desc=f"prepare {config.dataset}/{config.split}",
        disable=not progress,
        unit="img",
        initial=len(dataset) - sum(np.diff(store.shard_range(s))[0] for s in pending),
    ) as bar:
        for shard in pending:
            start, stop = store.shard_range(shard)
            blocks: dict[str, list[np.ndarray]] = {name: [] for name in specs}
            for index in range(start, stop):
                sample = _sample(dataset, index, skip_bad=False)
                arrays = _label_arrays(sample, shape, native)
                arrays[st.DIGESTS] = image_digest(sample.image)
                for name in specs:
                    if name not in arrays:
                        raise MaxaError(f"sample {ids[index]!r} has no {name!r} target but sample 0 has")
                    blocks[name].append(arrays[name])
                bar.update(1)
            store.write_shard(shard, {name: np.stack(b) for name, b in blocks.items()})
