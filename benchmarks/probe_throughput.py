"""Stage-two throughput: training from stores vs with the backbone in the loop, and loaders vs training.

Two measurements, each printed as ratios from one run (the machine may be shared: compare rows of a run):

1. `epoch`: one MAXA training epoch from a feature store (store read included) vs the same adapter,
   images and batch size with the frozen backbone run on every batch (images pre-rendered in memory,
   so the backbone path is not charged for decoding). Goal: >= 10x on CPU.
2. `loader`: samples/s the in-memory and the streaming loader deliver (no training) vs samples/s the
   training loop consumes, on a feature store of a chosen grid/width. Goal: >= 3x for both paths.

    python benchmarks/probe_throughput.py                    # both, a few minutes on 2 CPU cores
    python benchmarks/probe_throughput.py --only loader --grid 14 --channels 384 --images 1024
    # GPU, ViT-B/14-sized store (448 px -> 32x32x768) and ViT-B/14 in the loop:
    python benchmarks/probe_throughput.py --device cuda --backbone vit_base_patch14_dinov2 \\
        --input-size 448 --grid 32 --channels 768 --images 2048 --epoch-images 512 --batch-size 32
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from maxa.core import store as st
from maxa.core.device import resolve_device
from maxa.core.provenance import TargetProvenance
from maxa.extract.config import ExtractConfig
from maxa.extract.features import extract
from maxa.extract.handwritten import write_feature_store
from maxa.extract.targets import PrepareConfig, dataset_from_targets, prepare
from maxa.extract.transforms import normalize, resize_image
from maxa.probe.adapters import build_adapter, set_output_bias
from maxa.probe.data import open_pair
from maxa.probe.loader import BatchOrder, InMemoryLoader, StreamingLoader
from maxa.probe.tasks import fit_stats, get_task
from maxa.probe.train import ProbeConfig, train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _targets(root: Path, images: int, label: int, image_size: int, shard: int) -> str:
    url = str(root / f"targets_{images}.zarr")
    options = {"num_images": images, "image_size": image_size, "num_classes": 4}
    prepare(PrepareConfig(label_size=label, shard_size=shard, options=options), url, progress=False)
    return url


def epoch_benchmark(args: argparse.Namespace, root: Path, device: torch.device) -> None:
    n, b = args.epoch_images, args.batch_size
    steps = n // b
    targets = _targets(root, n, args.label_size, args.input_size, args.shard_size)
    features = str(root / "features_backbone.zarr")
    config = ExtractConfig(
        model=args.backbone, input_size=args.input_size, layers=[-1], batch_size=b, shard_size=args.shard_size
    )
    config.device = str(device)
    started = time.perf_counter()
    extract(config, targets, features, progress=False)
    extract_s = time.perf_counter() - started

    probe = ProbeConfig(
        iterations=steps,
        batch_size=b,
        query_grid=args.query_grid,
        checkpoint_every=0,
        loader="memory",
        device=str(device),
        threads=args.threads,
    )
    started = time.perf_counter()
    meta = train(probe, features, targets, str(root / "store.pt"), progress=False)
    _sync(device)
    store_s = time.perf_counter() - started  # opening, statistics, reading the store and training

    # The same adapter, images and batches with the backbone in the loop.
    from maxa.extract.backbones import load_backbone

    tstore = st.open_store(targets, "targets")
    dataset = dataset_from_targets(tstore)
    backbone = load_backbone(config.spec, device)
    size = backbone.input_size
    images = torch.from_numpy(np.stack([resize_image(dataset[i].image, size) for i in range(n)]))
    labels = torch.from_numpy(np.asarray(tstore.read("semantic")))
    task = get_task("semantic")
    stats = fit_stats(task, [labels.numpy()], TargetProvenance.of(tstore).num_classes)
    torch.manual_seed(0)
    adapter = build_adapter("maxa", meta.in_channels, meta.out_channels, probe.adapter_options())
    set_output_bias(adapter, task.output_bias(stats))
    adapter.to(device).train()
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=probe.lr, weight_decay=probe.weight_decay)
    order = np.random.default_rng(0).permutation(n)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    for step in range(steps):
        index = torch.from_numpy(order[step * b : (step + 1) * b])
        x = normalize(images[index].to(device), backbone.mean, backbone.std)
        y = labels[index].to(device).long()
        with torch.no_grad(), amp:
            (feats,) = backbone.features(x).values()
        with amp:
            out = adapter(feats, output_size=tuple(labels.shape[1:]))
        loss = task.loss(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    backbone_s = time.perf_counter() - started
    torch.set_num_threads(threads)

    print(
        f"\n[epoch] {args.backbone} at {args.input_size} px, {n} images, batch {b}, "
        f"query grid {args.query_grid}"
    )
    print(f"  feature grid {meta['feature_shape']}, label {args.label_size} px, device {device}")
    print(f"  one-off extraction:        {extract_s:8.2f} s  ({n / extract_s:7.1f} img/s)")
    print(
        f"  epoch from the store:      {store_s:8.2f} s  ({n / store_s:7.1f} samples/s, store read included)"
    )
    print(f"  epoch, backbone in loop:   {backbone_s:8.2f} s  ({n / backbone_s:7.1f} samples/s)")
    print(f"  ratio backbone / store:    {backbone_s / store_s:8.1f} x   (goal >= 10x)")


def _fake_features(targets: str, out: str, grid: int, channels: int, shard: int) -> str:
    """A feature store in the real format with random fp16 features (the loader does not care)."""
    n = len(st.open_store(targets, "targets").ids())
    values = (
        np.random.default_rng(0).standard_normal((n, grid, grid, channels), np.float32).astype(np.float16)
    )
    provenance = {
        "model": "random-features",
        "weights": "none",
        "input_size": [grid * 14, grid * 14],
        "backbone_params": 86_000_000,
    }
    write_feature_store(targets, out, {"layer_11": values}, provenance, shard_size=shard)
    return out


def _rate(batches: object, count: int, batch_size: int, device: torch.device) -> float:
    it = iter(batches)  # type: ignore[call-overload]
    started = time.perf_counter()
    for x, _ in itertools.islice(it, count):
        if device.type == "cuda":
            x.sum()  # the copy must have happened
    _sync(device)
    elapsed = time.perf_counter() - started
    it.close()
    return count * batch_size / elapsed


def loader_benchmark(args: argparse.Namespace, root: Path, device: torch.device) -> None:
    n, b = args.images, args.batch_size
    targets = _targets(root, n, args.label_size, 64, args.shard_size)
    features = _fake_features(
        targets, str(root / "features_random.zarr"), args.grid, args.channels, args.shard_size
    )
    task = get_task("semantic")
    pair = open_pair(features, targets, "-1", task.target)
    order = BatchOrder(pair.shard_ranges(), args.shuffle_shards, 0)
    epoch_batches = n // b

    started = time.perf_counter()
    memory = InMemoryLoader(pair, task, order, b, device)
    _sync(device)
    load_s = time.perf_counter() - started
    memory_rate = _rate(memory.batches(0), 2 * epoch_batches, b, device)
    del memory
    stream = StreamingLoader(pair, task, order, b, device, prefetch=args.prefetch, threads=args.read_threads)
    stream_rate = _rate(stream.batches(0), 2 * epoch_batches, b, device)

    probe = ProbeConfig(
        iterations=args.train_steps,
        batch_size=b,
        query_grid=args.query_grid,
        checkpoint_every=0,
        loader="memory",
        device=str(device),
        threads=args.threads,
    )
    meta = train(probe, features, targets, str(root / "loader.pt"), progress=False)
    train_rate = meta.samples_per_second
    mb = pair.feature_bytes_per_item() / 1e6
    print(
        f"\n[loader] {n} samples of {args.grid}x{args.grid}x{args.channels} fp16 "
        f"({mb:.2f} MB each), batch {b}"
    )
    print(f"  shards of {args.shard_size}, shuffled in windows of {args.shuffle_shards}, device {device}")
    print(f"  store -> memory, once:     {n / load_s:9.0f} samples/s ({n * mb / load_s:7.0f} MB/s)")
    print(f"  in-memory batches:         {memory_rate:9.0f} samples/s")
    print(f"  streaming batches:         {stream_rate:9.0f} samples/s ({stream_rate * mb:7.0f} MB/s)")
    print(f"  training (query grid {args.query_grid}):  {train_rate:9.0f} samples/s")
    print(f"  ratio in-memory / train:   {memory_rate / train_rate:9.1f} x   (goal >= 3x)")
    print(f"  ratio load-once / train:   {n / load_s / train_rate:9.1f} x")
    print(f"  ratio streaming / train:   {stream_rate / train_rate:9.1f} x   (goal >= 3x)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["epoch", "loader"], default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--query-grid", type=int, default=14)
    parser.add_argument("--label-size", type=int, default=112)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--backbone", default="vit_small_patch16_224")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--epoch-images", type=int, default=192)
    parser.add_argument("--images", type=int, default=1024, help="loader benchmark store size")
    parser.add_argument("--grid", type=int, default=14)
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--shuffle-shards", type=int, default=8)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--read-threads", type=int, default=4)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--workdir", default=None, help="keep the stores here (default: a temp dir)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # its first use imports torch._dynamo (~3 s)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        if args.only in (None, "epoch"):
            epoch_benchmark(args, root, device)
        if args.only in (None, "loader"):
            loader_benchmark(args, root, device)


if __name__ == "__main__":
    main()
