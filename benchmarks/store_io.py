"""Feature-store I/O: which codec and read path to default to, measured against raw bytes.

Writes one realistic float16 feature array (default 2048 x 16 x 16 x 384, 384 MiB) as
  - a plain file (one write call), a numpy memmap (.npy) and an h5py dataset (chunked per image,
    uncompressed): the baselines,
  - maxa stores (through maxa.core.store and the extraction's ShardWriter threads, i.e. exactly
    the code extraction uses), one per codec; the first codec is also written through zarr-python
    alone (MAXA_RAW_WRITES=0, the write path before maxa's raw shard writer),
then reads everything back in full and prints MB/s, compression ratio, the write ratio to the plain
file and the read ratio to the memmap read of the same bytes. Every write ends with os.sync() (its
time counted); writes are best of --write-repeats. Store reads are timed twice: with zarr-python's
own codec pipeline and with the zarrs pipeline maxa uses for local bulk reads when it is installed
(zarr-python's reads are timed for the first codec only, unless --all-pipelines). The first codec is
also written without per-chunk checksums (the layout of stores written before maxa stored a CRC32C in
every chunk) and read raw: the checked / unchecked read-time ratio is the checksum's read cost.

"warm" reads come from the page cache (best of --repeats); "cold" reads follow an eviction of the
files from the page cache with posix_fadvise(DONTNEED) after os.sync() (best of --cold-repeats),
which is what a store larger than RAM or a freshly pulled store sees. Numbers are single-run ratios
on a shared machine: compare rows of one run, not runs. The ViT-B/14-at-518-px item size:

    python benchmarks/store_io.py --codecs none --data activations --size 256 --grid 37 \
        --channels 768 --shard-size 32
    python benchmarks/store_io.py                      # ~2 min on 2 cores
    python benchmarks/store_io.py --codecs none --data activations --write-threads 2
    python benchmarks/store_io.py --size 512 --data activations
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import h5py
import numpy as np

from maxa.core import store as st
from maxa.core.codec_specs import codec_factory
from maxa.extract.shard_writer import ShardWriter

MB = 1e6


@dataclass
class Row:
    format: str
    stored: int
    write: float
    warm: float
    cold: float
    random: float | None
    check: str


def vit_features(n: int, grid: int, channels: int) -> np.ndarray:
    """Last-block features of a random-init ViT-S/16 on synthetic scenes, tiled to n images.

    Tiling repeats whole images; every codec compresses one image chunk at a time, so repeats do
    not flatter the ratios.
    """
    import torch

    from maxa.extract.backbones import load_backbone
    from maxa.extract.config import RANDOM_INIT, BackboneSpec
    from maxa.extract.datasets import build_dataset
    from maxa.extract.transforms import normalize, resize_image

    if channels != 384:
        raise SystemExit("--data vit gives 384 channels (ViT-S); use --data activations for others")
    side = grid * 16
    backbone = load_backbone(BackboneSpec("vit_small_patch16_224", weights=RANDOM_INIT, input_size=side))
    unique = min(n, 32)
    dataset = build_dataset("synthetic", split="train", num_images=unique, image_size=side)
    images = torch.from_numpy(np.stack([resize_image(dataset[i].image, (side, side)) for i in range(unique)]))
    with torch.inference_mode():
        (grid_feats,) = backbone.features(normalize(images, backbone.mean, backbone.std)).values()
    feats = grid_feats.to(torch.float16).numpy()
    return np.ascontiguousarray(np.resize(feats, (n, *feats.shape[1:])))


def activation_like(n: int, grid: int, channels: int, seed: int = 0) -> np.ndarray:
    """Synthetic activations: spatially smooth, log-normal channel scales, a few massive channels.

    64 distinct images tiled to n (codecs see one image at a time, so tiling does not flatter them).
    """
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0.0, 0.8, channels)).astype(np.float32)
    scale[rng.choice(channels, 4, replace=False)] *= 40.0  # the "few high-variance dimensions"
    offset = rng.normal(0.0, 0.5, channels).astype(np.float32)
    x = rng.standard_normal((min(n, 64), grid, grid, channels), dtype=np.float32)
    for axis in (1, 2):  # light spatial smoothing: neighbouring patches correlate
        x = 0.25 * np.roll(x, -1, axis=axis) + 0.5 * x + 0.25 * np.roll(x, 1, axis=axis)
    unique = (x * scale + offset).astype(np.float16)
    return np.ascontiguousarray(np.resize(unique, (n, *unique.shape[1:])))


def evict(path: Path) -> None:
    """Flush to disk, then drop a file or folder from the page cache (needs no privileges).

    One os.sync() flushes every file in one go, as the kernel's write-back does for a writer that
    never calls fsync (neither zarr nor maxa does); an fsync per file would instead charge a store
    one journal commit per object, a cost no extraction pays.
    """
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    os.sync()
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def disk_bytes(path: Path) -> int:
    return (
        path.stat().st_size
        if path.is_file()
        else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    )


def timed(fn: Callable[[], object], repeats: int, before: Callable[[], None] | None = None) -> float:
    best = float("inf")
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=2048, help="number of images")
    parser.add_argument("--grid", type=int, default=16, help="feature grid side (patches)")
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--shard-size", type=int, default=64, help="images per shard")
    parser.add_argument("--data", choices=("vit", "activations"), default="vit")
    parser.add_argument(
        "--codecs", default="none,blosc-lz4,blosc-lz4-bitshuffle,blosc-zstd,zstd,bitround7-blosc-lz4"
    )
    parser.add_argument("--repeats", type=int, default=3, help="warm reads: best of this many")
    parser.add_argument("--cold-repeats", type=int, default=2, help="cold reads: best of this many")
    parser.add_argument(
        "--all-pipelines",
        action="store_true",
        help="time zarr-python's reads for every codec, not just the first",
    )
    parser.add_argument("--random-reads", type=int, default=200, help="single-image reads timed")
    parser.add_argument("--write-repeats", type=int, default=3, help="writes: best of this many")
    parser.add_argument("--write-threads", type=int, default=2, help="store writer threads")
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temp dir, removed)")
    args = parser.parse_args()
    warnings.filterwarnings(
        "ignore", message=".*(not in the Zarr version 3|unsupported by ZarrsCodecPipeline).*"
    )

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="maxa-store-io-"))
    scratch.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    x = (vit_features if args.data == "vit" else activation_like)(args.size, args.grid, args.channels)
    raw = x.nbytes
    print(
        f"data: {args.data} {x.shape} float16, {raw / 2**20:.0f} MiB, std {x.std(dtype=np.float32):.3f}, "
        f"max |x| {np.abs(x).max():.1f} (made in {time.perf_counter() - t0:.1f}s); shards of "
        f"{args.shard_size}, one-image chunks; zarrs pipeline: {st.fast_reads_available()}"
    )
    rows: list[Row] = []
    rng = np.random.default_rng(0)
    picks = [int(i) for i in rng.integers(0, args.size, args.random_reads)]

    def measure(
        name: str,
        path: Path,
        write_s: float,
        read: Callable[[], np.ndarray],
        single: Callable[[int], np.ndarray] | None,
    ) -> None:
        evict(path)
        back = read()
        exact = bool(np.array_equal(back, x))
        err = "exact" if exact else f"max rel err {np.max(np.abs(back - x) / (np.abs(x) + 1e-3)):.1e}"
        warm = timed(read, args.repeats)
        cold = timed(read, args.cold_repeats, before=lambda: evict(path))
        rand = None
        if single is not None:
            rand = args.random_reads / timed(lambda: [single(i) for i in picks], 1)
        rows.append(
            Row(name, disk_bytes(path), raw / write_s / MB, raw / warm / MB, raw / cold / MB, rand, err)
        )
        print(f"  measured {name}", flush=True)

    # --- baselines ------------------------------------------------------------------------------
    plain = scratch / "features.bin"

    def write_plain() -> None:
        with plain.open("wb", buffering=0) as fh:
            fh.write(x.data.cast("B"))
        evict(plain)

    measure(
        "plain file",
        plain,
        timed(write_plain, args.write_repeats),
        lambda: np.fromfile(plain, dtype=np.float16).reshape(x.shape),
        None,
    )

    npy = scratch / "features.npy"

    def write_npy() -> None:
        mm = np.lib.format.open_memmap(npy, "w+", np.float16, x.shape)
        mm[:] = x
        mm.flush()
        del mm
        evict(npy)

    measure(
        "numpy memmap",
        npy,
        timed(write_npy, args.write_repeats),
        lambda: np.array(np.load(npy, mmap_mode="r")),
        lambda i: np.array(np.load(npy, mmap_mode="r")[i]),
    )

    h5 = scratch / "features.h5"

    def write_h5() -> None:
        with h5py.File(h5, "w") as f:
            dset = f.create_dataset("f", shape=x.shape, dtype=np.float16, chunks=(1, *x.shape[1:]))
            for s in range(0, args.size, args.shard_size):
                dset[s : s + args.shard_size] = x[s : s + args.shard_size]
        evict(h5)

    def read_h5() -> np.ndarray:
        with h5py.File(h5, "r") as f:
            return np.asarray(f["f"][...])

    def single_h5(i: int) -> np.ndarray:
        with h5py.File(h5, "r") as f:
            return np.asarray(f["f"][i])

    measure("h5py (1-image chunks)", h5, timed(write_h5, args.write_repeats), read_h5, single_h5)

    # --- maxa stores, one per codec ---------------------------------------------------------------
    spec_shape = x.shape[1:]
    codecs = args.codecs.split(",")
    variants = [(codecs[0], False, True)] + [(codec, True, True) for codec in codecs]
    for codec, raw_writes, checksums in [*variants, (codecs[0], True, False)]:
        tag = "" if checksums else "-unchecked"
        path = scratch / f"{codec}{'' if raw_writes else '-zarr-python'}{tag}.zarr"
        shutil.rmtree(path, ignore_errors=True)
        os.environ["MAXA_RAW_WRITES"] = "1" if raw_writes else "0"

        def write_store(path: Path = path, codec: str = codec, checksums: bool = checksums) -> None:
            store = st.create_or_resume(
                str(path),
                kind="features",
                provenance={"benchmark": codec},
                ids=[str(i) for i in range(args.size)],
                arrays={
                    "f": st.ArraySpec(spec_shape, "float16", ("image", "y", "x", "channel"), codec=codec)
                },
                shard_size=args.shard_size,
            )
            if not checksums:  # the array as maxa wrote it before chunk checksums
                filters, compressors = codec_factory(codec)(x.dtype)
                store.group.create_array(
                    "f", shape=x.shape, dtype=x.dtype, chunks=(1, *spec_shape),
                    shards=(args.shard_size, *spec_shape), dimension_names=("image", "y", "x", "channel"),
                    filters=filters or None, compressors=compressors or None, fill_value=0, overwrite=True,
                )  # fmt: skip
                store = st.open_store(str(path), writable=True, require_complete=False)
            writer = ShardWriter(store, threads=args.write_threads)
            for shard in range(store.num_shards):
                a, b = store.shard_range(shard)
                writer.put(shard, {"f": x[a:b]})
            writer.close()
            evict(path)

        write_s = timed(write_store, args.write_repeats, before=partial(shutil.rmtree, path, True))
        os.environ.pop("MAXA_RAW_WRITES", None)
        if not raw_writes:  # only the write differs: read the same bytes once, zarrs pipeline
            reads: tuple[bool, ...] = (True,) if st.fast_reads_available() else (False,)
        else:
            both = args.all_pipelines or codec == codecs[0]  # zarr-python's own reads: slow, once suffices
            reads = ((False, True) if both else (True,)) if st.fast_reads_available() else (False,)
        writes = "raw shards" if raw_writes else "zarr-python"
        if not checksums:
            reader = st.open_store(str(path))
            label = f"maxa {codec} (no checksums, r raw shards)"
            measure(label, path, write_s, partial(reader.read, "f"), partial(reader.read, "f"))
            continue
        os.environ["MAXA_RAW_READS"] = "0"  # the codec pipelines first
        for fast in reads:
            os.environ["MAXA_ZARRS"] = "1" if fast else "0"
            reader = st.open_store(str(path))
            label = f"maxa {codec} (w {writes}, r {'zarrs' if fast else 'zarr-python'})"
            measure(label, path, write_s, partial(reader.read, "f"), partial(reader.read, "f"))
        os.environ.pop("MAXA_ZARRS", None)
        os.environ.pop("MAXA_RAW_READS", None)
        if raw_writes:  # maxa's default bulk read: straight from the shard files where the layout is raw
            reader = st.open_store(str(path))
            label = f"maxa {codec} (w {writes}, r raw shards)"
            measure(label, path, write_s, partial(reader.read, "f"), partial(reader.read, "f"))

    plain_row, base = rows[0], rows[1]
    header = (
        f"{'format':50s} {'ratio':>6s} {'write MB/s':>10s} {'x file':>6s} {'warm MB/s':>9s} {'x mmap':>6s} "
        f"{'cold MB/s':>9s} {'x mmap':>6s} {'1-img/s':>8s}  check"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for row in rows:
        rand = f"{row.random:8.0f}" if row.random is not None else " " * 8
        print(
            f"{row.format:50s} {raw / row.stored:6.3f} {row.write:10.0f} {row.write / plain_row.write:6.2f} "
            f"{row.warm:9.0f} {row.warm / base.warm:6.2f} {row.cold:9.0f} {row.cold / base.cold:6.2f} "
            f"{rand}  {row.check}"
        )
    by_name = {row.format: row for row in rows}
    reader_name = "zarrs" if st.fast_reads_available() else "zarr-python"
    raw_name = f"maxa {codecs[0]} (w raw shards, r {reader_name})"
    read_name = f"maxa {codecs[0]} (w raw shards, r raw shards)"
    zarr_name = f"maxa {codecs[0]} (w zarr-python, r {reader_name})"
    print(
        f"\nwrite {codecs[0]} / plain file: raw shards {by_name[raw_name].write / plain_row.write:.2f}, "
        f"zarr-python {by_name[zarr_name].write / plain_row.write:.2f} (goal >= 0.8; "
        f"{args.write_threads} writer threads); "
        f"warm read / memmap: raw shards {by_name[read_name].warm / base.warm:.2f}, "
        f"{reader_name} {by_name[raw_name].warm / base.warm:.2f} (goal >= 0.8)"
    )
    unchecked = by_name[f"maxa {codecs[0]} (no checksums, r raw shards)"]
    checked = by_name[read_name]
    print(
        f"checksum read cost (time checked / unchecked, raw reads of {codecs[0]}): "
        f"warm {unchecked.warm / checked.warm:.2f}, cold {unchecked.cold / checked.cold:.2f} (goal <= 1.15); "
        f"write {unchecked.write / checked.write:.2f}"
    )
    print(f"\ntotal {time.perf_counter() - t0:.0f}s; scratch {scratch}")
    if args.dir is None:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
