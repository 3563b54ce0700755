"""`maxa prepare`: a dataset split -> a target store at a declared label resolution."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tqdm import tqdm

from maxa.extract import store as st
from maxa.extract.config import NATIVE, PrepareConfig
from maxa.extract.datasets import Dataset, build_dataset, dataset_fingerprint
from maxa.extract.errors import MaxaError
from maxa.extract.sample import Sample
from maxa.extract.transforms import instance_boundaries, resize_image, resize_nearest
from maxa.extract.version import __version__

TARGET_SPECS: dict[str, tuple[str, tuple[str, ...]]] = {
    "semantic": ("uint8", ("image", "y", "x")),
    "instances": ("int32", ("image", "y", "x")),
    "depth": ("float32", ("image", "y", "x")),
    "boundary": ("uint8", ("image", "y", "x")),
}


def open_dataset(name: str, split: str, root: str | None, options: Mapping[str, Any]) -> Dataset:
    try:
        return build_dataset(name, split=split, root=root, **options)
    except TypeError as exc:
        raise MaxaError(f"dataset {name!r} does not take these options: {exc}") from exc


def dataset_from_targets(store: st.Store) -> Dataset:
    """Rebuild the reader a target store was prepared from (so features join it id for id)."""
    prov = store.provenance
    options = {k: v for k, v in prov["dataset_config"].items() if k not in ("split", "root")}
    dataset = open_dataset(prov["dataset"], prov["split"], prov.get("root"), options)
    if dataset_fingerprint(dataset) != prov["dataset_fingerprint"]:
        raise MaxaError(
            f"the {prov['dataset']} files behind {store.url} changed since it was prepared "
            f"(fingerprint {dataset_fingerprint(dataset)} != {prov['dataset_fingerprint']}); re-run prepare"
        )
    return dataset


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


def prepare(
    config: PrepareConfig, out: str, *, overwrite: bool = False, progress: bool = True, skip_bad: bool = False
) -> st.Store:
    """`skip_bad`: leave out samples that fail to load; their ids and reasons go in the store's `skipped`
    attribute and, through the reader's `skip_ids` option, into its provenance."""
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
    native = config.label_size == NATIVE
    shape = label_shape(config.label_size, dataset[0])
    first = _label_arrays(dataset[0], shape)
    specs = {"image": st.ArraySpec((*shape, 3), "uint8", ("image", "y", "x", "rgb"))}
    specs["original_size"] = st.ArraySpec((2,), "int32", ("image", "height_width"))
    for name in first:
        if name in TARGET_SPECS:
            dtype, dims = TARGET_SPECS[name]
            specs[name] = st.ArraySpec(shape, dtype, dims)
    ids = [dataset[i].id for i in range(len(dataset))] if not hasattr(dataset, "ids") else list(dataset.ids)
    provenance = {
        "dataset": config.dataset,
        "split": config.split,
        "root": config.root,
        "dataset_config": dataset.config(),
        "dataset_fingerprint": dataset_fingerprint(dataset),
        "num_classes": dataset.num_classes,
        "class_names": list(dataset.class_names),
        "label_size": list(shape),
        **({"label_resolution": NATIVE} if native else {}),
        "targets": sorted(k for k in specs if k not in ("image", "original_size")),
        "maxa_version": __version__,
        "created": st.now_iso(),
    }
    store = st.create_or_resume(
        out,
        kind="targets",
        provenance=provenance,
        ids=ids,
        arrays=specs,
        shard_size=config.shard_size,
        overwrite=overwrite,
    )
    if skip_bad:
        store.set_attr("skipped", skipped)
    pending = store.pending_shards()
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
                arrays = _label_arrays(dataset[index], shape, native)
                for name in specs:
                    if name not in arrays:
                        raise MaxaError(f"sample {ids[index]!r} has no {name!r} target but sample 0 has")
                    blocks[name].append(arrays[name])
                bar.update(1)
            store.write_shard(shard, {name: np.stack(b) for name, b in blocks.items()})
    return store
