"""core/store/manifest.py: the file beside a finished local store that the generated DVC stages track."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from maxa.core import store as st
from maxa.core.errors import MaxaError
from tests.kit.stores import empty_store, fill

SPECS = {"x": st.ArraySpec((2, 3), "float16", ("image", "token", "channel"))}
N, SHARD = 6, 2


def _values(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N, 2, 3)).astype(np.float16)


def _store(path: Path, seed: int) -> st.Store:
    return fill(empty_store(str(path), SPECS, N, SHARD), {"x": _values(seed)})


def _walked(root: Path) -> tuple[str, int]:
    """The digest as docs/store.md defines it, by os.walk and struct: (hex, files). A shard of the feature
    array `x` counts by its index and the last 4 bytes of each chunk it lists; other files by their bytes."""
    index_bytes = SHARD * 16 + 4
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            data = path.read_bytes()
            rel = path.relative_to(root).as_posix()
            if rel.startswith("x/c/"):
                index = data[-index_bytes:]
                pairs = struct.unpack(f"<{2 * SHARD}Q", index[:-4])
                kept = [index]
                for offset, length in zip(pairs[::2], pairs[1::2], strict=True):
                    if offset != 2**64 - 1:
                        kept.append(data[offset + length - 4 : offset + length])
                data = b"".join(kept)
            found.append((rel, len(path.read_bytes()), data))
    digest = hashlib.blake2b(digest_size=16)
    for name, size, data in sorted(found):
        digest.update(name.encode() + b"\0" + str(size).encode() + b"\0" + data)
    return digest.hexdigest(), len(found)


def test_the_manifest_names_the_store_and_digests_every_file(tmp_path: Path) -> None:
    store = _store(tmp_path / "a.zarr", seed=0)
    path = st.write_manifest(store)
    assert path == tmp_path / "a.zarr.manifest.json" == st.manifest_path(store.url)
    body = json.loads(path.read_text())
    content, files = _walked(tmp_path / "a.zarr")
    assert body["content"] == content and body["files"] == files
    assert body["fingerprint"] == store.fingerprint and body["images"] == N and body["kind"] == "features"
    assert body["bytes"] == sum(p.stat().st_size for p in (tmp_path / "a.zarr").rglob("*") if p.is_file())


def test_the_same_content_gives_the_same_bytes_and_other_content_another_manifest(tmp_path: Path) -> None:
    """What DVC compares: a store written again from the same inputs leaves its dependants up to date; one
    with other bytes under the same fingerprint (a nondeterministic re-extraction) makes them stale."""
    first = st.write_manifest(_store(tmp_path / "one" / "s.zarr", seed=0))
    again = st.write_manifest(_store(tmp_path / "two" / "s.zarr", seed=0))
    other = st.write_manifest(_store(tmp_path / "three" / "s.zarr", seed=1))
    assert first is not None and again is not None and other is not None
    assert first.read_bytes() == again.read_bytes()
    changed = json.loads(other.read_text())
    assert changed["fingerprint"] == json.loads(first.read_text())["fingerprint"]
    assert changed["content"] != json.loads(first.read_text())["content"]


def test_an_unfinished_store_gets_no_manifest(tmp_path: Path) -> None:
    """A resumed or partial store does not count as finished: removed before writing, refused until done."""
    store = empty_store(str(tmp_path / "p.zarr"), SPECS, N, SHARD)
    store.write_shard(0, {"x": _values(0)[:SHARD]})
    stale = tmp_path / "p.zarr.manifest.json"
    stale.write_text("{}")
    st.remove_manifest(store.url)
    assert not stale.exists()
    st.remove_manifest(store.url)  # none there: nothing to do
    with pytest.raises(MaxaError, match=r"p\.zarr is incomplete"):
        st.write_manifest(store)
    assert not stale.exists()


def test_an_object_store_url_has_no_manifest() -> None:
    assert st.manifest_path("s3://bucket/x.zarr") is None
    assert st.manifest_path("file:///data/x.zarr/") == Path("/data/x.zarr.manifest.json")


def test_a_shard_counts_by_its_checksums_so_the_manifest_reads_no_image_bytes(tmp_path: Path) -> None:
    """Writing the manifest reads a shard's index and chunk CRC32Cs, not its data: a byte flipped inside a
    chunk's data leaves the digest as it was (the store's readers and `store verify` refuse that shard),
    while a changed CRC32C (what any rewrite of the chunk changes) gives another digest."""
    store = _store(tmp_path / "a.zarr", seed=0)
    before = json.loads(st.write_manifest(store).read_text())["content"]  # type: ignore[union-attr]
    shard = next(p for p in sorted((tmp_path / "a.zarr" / "x" / "c").rglob("*")) if p.is_file())
    data = bytearray(shard.read_bytes())
    data[0] ^= 0xFF  # the first chunk's first data byte
    shard.write_bytes(bytes(data))
    assert json.loads(st.write_manifest(store).read_text())["content"] == before  # type: ignore[union-attr]
    assert list(store.damaged_shards()) == [0]
    stride = 2 * 3 * 2 + 4  # one row of float16 (2, 3) and its CRC32C
    data[0] ^= 0xFF
    data[stride - 1] ^= 0x01  # the first chunk's CRC32C
    shard.write_bytes(bytes(data))
    after = json.loads(st.write_manifest(store).read_text())["content"]  # type: ignore[union-attr]
    assert after != before and after == _walked(tmp_path / "a.zarr")[0]


def test_a_refused_write_gives_the_complete_store_its_manifest_back(tmp_path: Path) -> None:
    """A run refused before it wrote (e.g. other inputs without --overwrite) leaves the finished store and
    its manifest as they were; a failure over an unfinished store leaves none."""
    store = _store(tmp_path / "a.zarr", seed=0)
    path = st.write_manifest(store)
    assert path is not None
    before = path.read_bytes()
    with pytest.raises(MaxaError, match="refused"), st.manifest_while_writing(store.url):
        assert not path.exists()  # removed while the store may be written
        raise MaxaError("refused")
    assert path.read_bytes() == before
    partial = empty_store(str(tmp_path / "p.zarr"), SPECS, N, SHARD)
    with pytest.raises(MaxaError, match="refused"), st.manifest_while_writing(partial.url):
        raise MaxaError("refused")
    assert st.manifest_path(partial.url) is not None and not st.manifest_path(partial.url).exists()  # type: ignore[union-attr]
