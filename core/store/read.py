"""Reading per-image arrays: bulk reads at disk speed, every chunk's checksum checked, a shard marked
done but lost or damaged refused by name, NaN/inf refused before a probe learns from it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from maxa.core.errors import MaxaError
from maxa.core.store.base import StoreBase
from maxa.core.store.fetch import fetch_rows
from maxa.core.store.raw import DamagedShard, raw_reads_enabled, raw_shards, read_rows_raw

if TYPE_CHECKING:
    import dask.array


class ShardDamaged(MaxaError):
    """A shard marked done whose object is missing or fails its checksums."""

    def __init__(self, message: str, shard: int, reason: str) -> None:
        super().__init__(message)
        self.shard, self.reason = shard, reason


_EXPONENT: dict[int, tuple[Any, int]] = {
    2: (np.int16, 0x7C00),
    4: (np.int32, 0x7F800000),
    8: (np.int64, 0x7FF0000000000000),
}
_CHECK_CHUNK = 1 << 16


def nonfinite_rows(block: np.ndarray) -> np.ndarray:
    """Indices of the rows (images) of a float block holding NaN or inf.

    The common case (none) costs about one memory pass: an IEEE value is NaN or inf exactly when its
    exponent bits are all ones, so the largest masked exponent tells; np.isfinite (3x slower on float16)
    runs only on a block that fails.
    """
    block = np.ascontiguousarray(block)
    if block.dtype.kind != "f" or block.size == 0:
        return np.zeros(0, np.int64)
    view, mask = _EXPONENT[block.dtype.itemsize]
    flat, top = block.view(view).reshape(-1), view(mask)
    buffer = np.empty(min(flat.size, _CHECK_CHUNK), view)  # stays in cache: ~1 memory pass in all
    for start in range(0, flat.size, _CHECK_CHUNK):
        part = buffer[: min(_CHECK_CHUNK, flat.size - start)]
        np.bitwise_and(flat[start : start + len(part)], top, out=part)
        if part.max() == top:
            return np.flatnonzero(~np.isfinite(block.reshape(len(block), -1)).all(axis=1))
    return np.zeros(0, np.int64)


def _rows_of(selection: Any, n: int) -> tuple[int, int]:
    """The image rows [start, stop) a selection touches (all rows when it cannot tell)."""
    first = selection[0] if isinstance(selection, tuple) and selection else selection
    if isinstance(first, slice) and first.step in (None, 1):
        start, stop, _ = first.indices(n)
        return start, max(start, stop)
    if isinstance(first, (int, np.integer)):
        row = int(first) % n if n else 0
        return row, row + 1
    return 0, n


class StoreReader(StoreBase):
    """Reads of an open store's per-image and derived arrays."""

    def read(self, name: str, selection: Any = slice(None)) -> np.ndarray:
        """Read a per-image array (all of it by default) into memory: the fast path for bulk reads.

        Contiguous rows are read straight from the shard objects: uncompressed local arrays by
        `raw.read_rows_raw` (~memmap speed), object stores by `fetch.fetch_rows` (each shard object
        requested once, all at once, decoded here); everything else reads through the zarrs pipeline
        when it is installed, whose arrays are
        never handed out because it does not enforce read-only mode on writes. Every chunk's checksum is
        checked, and a shard marked done whose object is missing or damaged is refused (`DamagedShard`
        becomes a MaxaError naming the store, array, shard and the command that repairs it).
        """
        plain = self._plain_array(name)
        start, stop = _rows_of(selection, self.num_items)
        if (
            isinstance(selection, slice)
            and selection.step in (None, 1)
            and stop > start
            and raw_reads_enabled()
        ):
            if not self.remote:
                try:
                    block = read_rows_raw(plain, start, stop)
                except DamagedShard as exc:
                    block = self._settle(name, exc, start, stop)
            else:  # whole shards, one request each, all at once; decoded (and checked) here
                block = self._settle(name, fetch_rows([(plain, start, stop)])[0], start, stop)
            if block is not None:
                return block
        return self._read_through_zarr(name, plain, selection, start, stop)

    def _plain_array(self, name: str) -> zarr.Array:
        plain = self._plain.get(name)
        if plain is None:
            plain = self._plain[name] = self.array(name)  # validates the name, once
        return plain

    def _settle(
        self, name: str, got: np.ndarray | Exception | None, start: int, stop: int
    ) -> np.ndarray | None:
        """The rows of a direct read, or None to read through zarr (a layout left to zarr, or a shard not
        written yet, which zarr reads as its fill value); a damaged or lost done shard is refused by name."""
        if isinstance(got, DamagedShard):
            if got.missing and not self._done_flags()[got.shard]:
                return None
            raise self.damaged(name, got.shard, got.reason) from None
        if isinstance(got, Exception):  # zarr-python decoding a fetched shard of another layout
            raise self._locate_damage(name, start, stop, got) from got
        return got

    def _read_through_zarr(
        self, name: str, plain: zarr.Array, selection: Any, start: int, stop: int
    ) -> np.ndarray:
        self._require_objects(name, start, stop)
        if not (isinstance(selection, slice) and selection.step in (None, 1)):
            # zarr-python decodes (and checks) every chunk it touches
            return self._zarr_read(plain, name, selection, start, stop)
        node = self._readers.get(name)
        if node is None:
            node = self._readers[name] = self._node(name, fast=True)
        # zarrs checks chunk checksums only when it decodes a whole shard: read whole shards, then cut;
        # a partial last shard (fewer images than the shard holds) goes through zarr-python.
        size, n = self.shard_size, self.num_items
        first, last = start - start % size, min(n, -(-stop // size) * size)
        tail = n - n % size
        if stop <= start:
            return self._zarr_read(node, name, selection, start, stop)
        parts = []
        if first < min(last, tail):
            parts.append(self._zarr_read(node, name, slice(first, min(last, tail)), start, stop))
        if last > tail:
            parts.append(self._zarr_read(plain, name, slice(max(first, tail), last), start, stop))
        block = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if (first, last) == (start, stop):
            return block
        return block[start - first : stop - first].copy()

    def _zarr_read(self, node: zarr.Array, name: str, selection: Any, start: int, stop: int) -> np.ndarray:
        try:
            return np.asarray(node[selection])
        except (ValueError, RuntimeError) as exc:  # zarr's and zarrs' checksum and decoding errors
            raise self._locate_damage(name, start, stop, exc) from exc

    def _require_objects(self, name: str, start: int, stop: int) -> None:
        """Refuse a read that zarr would fill with zeros because a done shard's object is gone."""
        if stop <= start:
            return
        done = self._done_flags()
        first, last = start // self.shard_size, (stop - 1) // self.shard_size
        wanted = [s for s in range(first, last + 1) if s < len(done) and done[s]]
        if wanted:
            present = self.shard_objects(name)
            lost = [s for s in wanted if s not in present]
            if lost:
                raise self.damaged(name, lost[0], "its object is missing")

    def _locate_damage(self, name: str, start: int, stop: int, exc: Exception) -> Exception:
        """The shard of a failed zarr read that fails alone (named), or the original error."""
        node = self._plain.get(name) or self.array(name)
        done = self._done_flags()
        for shard in range(start // self.shard_size, (max(start, stop - 1)) // self.shard_size + 1):
            a, b = self.shard_range(shard)
            try:
                node[a:b]
            except (ValueError, RuntimeError) as inner:
                if shard < len(done) and done[shard]:
                    return self.damaged(name, shard, f"it cannot be decoded ({inner})")
        return exc

    def damaged(self, name: str, shard: int, reason: str) -> ShardDamaged:
        """The one-line refusal of a damaged shard: store, array, shard, images and the repair."""
        a, b = self.shard_range(shard)
        command = "maxa extract" if self.kind == "features" else "maxa prepare"
        return ShardDamaged(
            f"store {self.url}: {name} shard {shard} (images {a}-{b - 1}) is marked done but {reason}; "
            f"re-run the `{command}` that wrote it with the same inputs (it redoes damaged shards only) "
            "or fetch the store again",
            shard,
            reason,
        )

    def read_rows(
        self, name: str, rows: Sequence[int] | np.ndarray | slice, *, finite: bool = True
    ) -> np.ndarray:
        """Rows of a per-image array in the given order, read as whole contiguous runs (the fast path;
        never per sample). `finite`: refuse NaN/inf in a float array, naming the store and the images
        (also in a store that records `nonfinite: keep`: keeping them is for inspection, not training)."""
        if isinstance(rows, slice):
            start, stop, _ = rows.indices(self.num_items)
            rows = np.arange(start, stop)
        rows = np.asarray(rows, np.int64)
        if rows.size == 0:
            out = self.read(name, slice(0, 0))
        else:
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1
            runs = np.split(rows, breaks)
            shards = np.unique(rows // self.shard_size)
            if len(runs) > len(shards) and raw_shards(self._plain.get(name) or self.array(name)) is None:
                out = self._gather_by_shard(name, rows, shards)  # decoded shard by shard, each once
            else:
                parts = [self.read(name, slice(int(r[0]), int(r[-1]) + 1)) for r in runs]
                out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if finite:
            self._check_finite(name, out, rows)
        return out

    def _check_finite(self, name: str, block: np.ndarray, rows: np.ndarray) -> None:
        """Refuse NaN/inf read for training, even in a store that keeps them on purpose (for inspection)."""
        self._refuse_nonfinite(
            name, block, rows, f"run `maxa store verify {self.url}` and re-create the store"
        )

    def _gather_by_shard(self, name: str, rows: np.ndarray, shards: np.ndarray) -> np.ndarray:
        """`rows` of a compressed array, each shard they touch read whole once."""
        out: np.ndarray | None = None
        for shard in shards:
            a, b = self.shard_range(int(shard))
            where = np.flatnonzero((rows >= a) & (rows < b))
            block = self.read(name, slice(a, b))
            if out is None:
                out = np.empty((len(rows), *block.shape[1:]), block.dtype)
            out[where] = block[rows[where] - a]
        assert out is not None
        return out

    def _refuse_nonfinite(self, name: str, block: np.ndarray, rows: np.ndarray, hint: str) -> None:
        """One-line refusal of NaN/inf in a float block of the given store rows, naming its first images."""
        bad = nonfinite_rows(block)
        if len(bad):
            ids = self.ids()
            first = ", ".join(
                repr(ids[int(r)]) if int(r) < len(ids) else f"row {int(r)}" for r in rows[bad[:3]]
            )
            raise MaxaError(
                f"store {self.url}: {name} holds NaN or inf for {len(bad)} image(s) (first: {first}); {hint}"
            )

    def _contiguous(self, rows: np.ndarray) -> bool:
        """Whether `rows` is one ascending run that an object-store read fetches directly."""
        return (
            len(rows) > 0
            and self.remote
            and raw_reads_enabled()
            and int(rows[-1]) - int(rows[0]) + 1 == len(rows)
            and bool((np.diff(rows) == 1).all())
        )

    def dask_array(self, name: str) -> dask.array.Array:
        """The array as dask, one dask chunk per shard: out-of-core, whole-shard reads through `read`
        (so every chunk's checksum is checked)."""
        import dask
        import dask.array as da

        node = self.array(name)  # validates the name
        item = tuple(node.shape[1:])
        blocks = [
            da.from_delayed(
                dask.delayed(self.read, pure=True)(name, slice(a, b)), (b - a, *item), dtype=node.dtype
            )
            for a, b in (self.shard_range(s) for s in range(self.num_shards))
            if b > a
        ]
        if not blocks:
            return da.zeros((0, *item), dtype=node.dtype, chunks=(1, *item))
        return da.concatenate(blocks, axis=0)

    def read_aux(self, path: str) -> tuple[np.ndarray, dict[str, Any]]:
        if path not in self.aux_names():
            raise MaxaError(f"store {self.url} has no derived array {path!r}")
        node = self._node(path)
        return np.asarray(node[...]), dict(node.attrs)


def read_rows_together(
    reads: Sequence[tuple[StoreReader, str, Sequence[int] | np.ndarray | slice]], *, finite: bool = True
) -> list[np.ndarray]:
    """`[store.read_rows(name, rows, finite=finite) for store, name, rows in reads]`, with every contiguous
    read of an object store fetched in one round trip: a streaming loader's window of shards (features and
    targets) reaches the client's event loop as one batch of requests, not one call per shard and array
    from each reader thread, and the checksums and decoding run in the calling thread. Local stores read
    each as `read_rows` does."""
    rows_of: list[np.ndarray] = []
    direct: dict[int, int] = {}  # read -> its place among the fetched ones
    plans: list[tuple[zarr.Array, int, int]] = []
    for i, (store, name, rows) in enumerate(reads):
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(store.num_items))
        rows_of.append(np.asarray(rows, np.int64))
        if store._contiguous(rows_of[-1]):
            direct[i] = len(plans)
            plans.append((store._plain_array(name), int(rows_of[-1][0]), int(rows_of[-1][-1]) + 1))
    fetched = fetch_rows(plans) if plans else []
    out = []
    for i, (store, name, _) in enumerate(reads):
        if i not in direct:
            out.append(store.read_rows(name, rows_of[i], finite=finite))
            continue
        plain, start, stop = plans[direct[i]]
        block = store._settle(name, fetched[direct[i]], start, stop)
        if block is None:
            block = store._read_through_zarr(name, plain, slice(start, stop), start, stop)
        if finite:
            store._check_finite(name, block, rows_of[i])
        out.append(block)
    return out
