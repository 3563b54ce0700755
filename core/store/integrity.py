"""Integrity of an open store: what makes it unfit to read (missing or damaged shards, wrong shapes,
NaN/inf), found by whole-shard reads that check every chunk's checksum."""

from __future__ import annotations

import math

import numpy as np

from maxa.core.store.layout import DIGEST_SIZE
from maxa.core.store.raw import has_checksums
from maxa.core.store.read import ShardDamaged, StoreReader, nonfinite_rows


class CheckedStore(StoreReader):
    """Checks of an open store against the layout and its own checksums."""

    def unchecked_arrays(self) -> list[str]:
        """Per-image arrays whose chunks carry no checksum (written before maxa stored them)."""
        return [name for name in self.array_names() if not has_checksums(self.array(name))]

    def damaged_shards(self) -> dict[int, str]:
        """Done shards of any per-image array whose object is missing or fails a checksum (full read)."""
        found: dict[int, str] = {}
        done = [int(s) for s in np.flatnonzero(self.done_shards())]
        for name in self.array_names():
            for shard in done:
                if shard in found:
                    continue
                try:
                    self.read(name, slice(*self.shard_range(shard)))
                except ShardDamaged as exc:
                    found[shard] = f"{name} {exc.reason}"
        return found

    def repair_note(self) -> str | None:
        """What a resume found damaged and writes again (None when nothing was)."""
        if not self.repaired:
            return None
        shards = sorted(self.repaired)
        return (
            f"{self.url}: {len(shards)} done shard(s) were missing or damaged and are written again: "
            f"{shards[:10]} (first: {self.repaired[shards[0]]})"
        )

    def missing_shard_objects(self, name: str) -> list[int]:
        """Shards flagged done whose object is absent from storage (lost in a copy or a pull)."""
        present = self.shard_objects(name)
        return [int(s) for s in np.flatnonzero(self.done_shards()) if int(s) not in present]

    def problems(self, check_values: bool = True) -> list[str]:
        """Everything that makes this store unfit to read: missing or damaged shards, wrong shapes, NaN/inf.

        `check_values` reads every done shard once, whole (never per sample), checking each chunk's
        checksum and every float for NaN/inf.
        """
        found: list[str] = []
        n, num_shards = self.num_items, self.num_shards
        if num_shards != max(1, math.ceil(n / self.shard_size)):
            found.append(
                f"done has {num_shards} flags, expected {math.ceil(n / self.shard_size)} for {n} images"
            )
        pending = self.pending_shards()
        if pending:
            found.append(f"{len(pending)} of {num_shards} shards not written (first: {pending[0]})")
        ids = self.ids()
        digests = self.digests()
        if digests is not None and digests.shape != (n, DIGEST_SIZE):
            found.append(f"digests: shape {list(digests.shape)}, expected {[n, DIGEST_SIZE]}")
        if len(set(ids)) != len(ids):
            found.append(f"sample ids are not unique ({len(ids) - len(set(ids))} duplicates)")
        expected_shapes = self.provenance.get("feature_shapes", {}) if self.kind == "features" else {}
        for name in self.array_names():
            node = self.array(name)
            item = tuple(node.shape[1:])
            if node.shape[0] != n:
                found.append(f"{name}: {node.shape[0]} images, ids has {n}")
            if name in expected_shapes and list(item) != list(expected_shapes[name]):
                found.append(f"{name}: item shape {list(item)}, provenance says {expected_shapes[name]}")
            if tuple(node.chunks) != (1, *item) or (
                node.shards and tuple(node.shards) != (self.shard_size, *item)
            ):
                found.append(f"{name}: chunks {node.chunks} / shards {node.shards} do not follow the layout")
            lost = self.missing_shard_objects(name)
            if lost:
                found.append(f"{name}: shards {lost[:5]} are marked done but their data is missing")
            if check_values:
                found.extend(self._read_problems(name, set(lost), ids))
        return found

    def _read_problems(self, name: str, lost: set[int], ids: list[str]) -> list[str]:
        """Read every done shard of `name` once: checksum failures by shard, NaN/inf by image."""
        damaged: list[str] = []
        bad: list[int] = []
        float_array = np.dtype(self.array(name).dtype).kind == "f"
        for shard in np.flatnonzero(self.done_shards()):
            if int(shard) in lost:
                continue
            a, b = self.shard_range(int(shard))
            try:
                block = self.read(name, slice(a, b))
            except ShardDamaged as exc:
                damaged.append(f"{int(shard)} ({exc.reason})")
                continue
            if float_array:
                bad.extend(a + int(i) for i in nonfinite_rows(block))
        found = []
        if damaged:
            found.append(f"{name}: shards {', '.join(damaged[:5])} are marked done but damaged")
        if bad:
            found.append(
                f"{name}: {len(bad)} images hold NaN or inf (first: {', '.join(ids[i] for i in bad[:3])})"
            )
        return found
