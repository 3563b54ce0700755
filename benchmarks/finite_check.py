"""Cost of the NaN/inf check on every stage-two read (Store.read_rows), as ratios within one run.

    python benchmarks/finite_check.py [--images 512] [--repeats 7]

Writes a float16 store of random ViT-S-sized features (16x16x384 per image) to a temporary folder, then
reads it shard by shard (best of `repeats`): unchecked, checked by exponent bits (nonfinite_rows, what
maxa does), and checked with np.isfinite (the obvious way), reporting each as a ratio to the unchecked
read.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import numpy as np

from maxa.core import store as st


def _best(run: Callable[[], None], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    shard = 32
    with tempfile.TemporaryDirectory() as folder:
        url = f"{folder}/f.zarr"
        spec = st.ArraySpec((16, 16, 384), "float16", ("image", "y", "x", "channel"))
        ids = [f"i{i}" for i in range(args.images)]
        store = st.create_or_resume(
            url, kind="features", provenance={"model": "m"}, ids=ids, arrays={"x": spec}, shard_size=shard
        )
        rng = np.random.default_rng(0)
        for k in range(store.num_shards):
            a, b = store.shard_range(k)
            store.write_shard(k, {"x": rng.standard_normal((b - a, 16, 16, 384)).astype(np.float16)})
        reader = st.open_store(url)
        ranges = [reader.shard_range(k) for k in range(reader.num_shards)]

        def plain() -> None:
            for a, b in ranges:
                reader.read_rows("x", slice(a, b), finite=False)

        def bits() -> None:
            for a, b in ranges:
                reader.read_rows("x", slice(a, b))

        def isfinite() -> None:
            for a, b in ranges:
                block = reader.read_rows("x", slice(a, b), finite=False)
                np.flatnonzero(~np.isfinite(block.reshape(len(block), -1)).all(axis=1))

        timings = {
            name: _best(f, args.repeats)
            for name, f in (("plain", plain), ("bits", bits), ("isfinite", isfinite))
        }
    mb = args.images * 16 * 16 * 384 * 2 / 1e6
    print(f"{mb:.0f} MB float16, {len(ranges)} shards, best of {args.repeats}")
    for name, seconds in timings.items():
        print(f"  {name:9s} {seconds:.3f} s  ratio {seconds / timings['plain']:.2f}")


if __name__ == "__main__":
    main()
