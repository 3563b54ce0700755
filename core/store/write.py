"""Writing an open store: whole shards (the done flag last), extra attributes and derived arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from zarr.codecs import ZstdCodec

from maxa.core.errors import MaxaError
from maxa.core.store.codecs import CHECKSUM
from maxa.core.store.integrity import CheckedStore
from maxa.core.store.layout import ATTR_KEY, DONE, NONFINITE_KEEP
from maxa.core.store.raw import write_rows


class Store(CheckedStore):
    """An open maxa store (features or targets): read, checked and, when opened writable, written."""

    def _require_writable(self) -> None:
        if self.read_only:
            raise MaxaError(f"store {self.url} is open read-only")

    def check_finite(self, start: int, stop: int, name: str, block: np.ndarray) -> None:
        """Refuse NaN/inf in a float block, naming the images, unless the store records `nonfinite: keep`."""
        if self.provenance.get(NONFINITE_KEEP) != "keep":
            self._refuse_nonfinite(name, block, np.arange(start, stop), "the shard was not marked done")

    def write_shard(self, shard: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write one whole shard of every array, then mark it done (the mark comes last).

        NaN/inf in a float array is refused before anything is written (see check_finite).
        """
        self._require_writable()
        start, stop = self.shard_range(shard)
        for name, block in arrays.items():
            self.check_finite(start, stop, name, np.asarray(block))
        for name, block in arrays.items():
            if block.shape[0] != stop - start:
                raise ValueError(
                    f"shard {shard} of {name!r}: {block.shape[0]} items, expected {stop - start}"
                )
            write_rows(self._node(name), start, block)
            if name in self._objects:
                self._objects[name].add(shard)
        self._node(DONE)[shard] = True
        if self._done is not None:
            self._done[shard] = True

    def set_attr(self, key: str, value: Any) -> None:
        """Store an extra JSON attribute next to the provenance (e.g. statistics, skipped ids)."""
        self._require_writable()
        record: dict[str, Any] = dict(self.meta)
        record["extra"] = {**record.get("extra", {}), key: value}
        self.group.attrs[ATTR_KEY] = record
        self.meta.update(extra=record["extra"])

    def write_aux(self, path: str, data: np.ndarray, attrs: Mapping[str, Any] | None = None) -> None:
        """Write (or replace) a small derived array in a subgroup; never one of the per-image arrays."""
        self._require_writable()
        parent, _, leaf = path.rpartition("/")
        if not parent or not leaf:
            raise MaxaError(f"derived array path {path!r} must name a subgroup, e.g. 'stats/layer_11/mean'")
        group = self.group
        for part in parent.split("/"):
            group = group.require_group(part)
        data = np.ascontiguousarray(data)
        array = group.create_array(
            leaf,
            shape=data.shape,
            dtype=data.dtype,
            chunks=data.shape if data.ndim else (),
            overwrite=True,
            fill_value=0,
            compressors=[ZstdCodec(level=0), CHECKSUM()],
        )
        array[...] = data
        if attrs:
            array.attrs.update(dict(attrs))

    def unflag(self, shards: Sequence[int]) -> None:
        """Clear the done flags of shards that must be written again."""
        self._require_writable()
        node = self._node(DONE)
        for shard in shards:
            node[int(shard)] = False
        self._done = None
        self._objects.clear()
