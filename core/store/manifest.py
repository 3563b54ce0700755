"""The manifest of a finished local store: one small file beside it that changes whenever its content does.

`maxa prepare` and `maxa extract` remove `<store>.manifest.json` before they write a store and write it
again once every shard is done, so the file exists only beside a complete store. It holds the store's
kind, fingerprint, image count and a digest of every file in the store, and nothing that depends on when
or where it was written: the same content gives the same bytes. A shard in maxa's frame is digested by
what already checks it, its index (offset and length of each chunk, with the index's own CRC32C) and the
CRC32C each chunk ends with, so writing the manifest reads a few bytes per image instead of the whole store
once more (a paper-scale store is hundreds of GB); any other file (metadata, a shard in another layout or
one whose frame does not parse) by all its bytes. The generated DVC
stages depend on these files rather than on the store folders (pipelines/dvcgen.py), so `dvc status`
hashes one small file per store instead of building a tree of every shard (docs/store.md, README).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import zarr

from maxa.core.errors import MaxaError
from maxa.core.paths import manifest_of
from maxa.core.store.access import open_store
from maxa.core.store.location import resolve
from maxa.core.store.raw import (
    CRC_BYTES,
    MISSING,
    DamagedShard,
    RawShards,
    has_checksums,
    index_size,
    row_sharding,
    shard_index_table,
)
from maxa.core.store.write import Store

BLOCK = 1 << 20


def manifest_path(url: str) -> Path | None:
    """Where the manifest of the store at `url` goes; None for an object-store URL (nothing to track)."""
    path = resolve(url)
    return None if "://" in path else Path(manifest_of(path))


def content_digest(root: Path) -> tuple[str, int, int]:
    """(blake2b-128 hex, files, bytes) over every file under `root` in path order: its relative path and
    size, then its checksums (a shard in maxa's frame: `shard_checksums`) or else all its bytes."""
    framed = _framed_arrays(root)
    digest = hashlib.blake2b(digest_size=16)
    files = sorted((path.relative_to(root).as_posix(), path) for path in root.rglob("*") if path.is_file())
    total = 0
    for name, path in files:
        size = path.stat().st_size
        digest.update(f"{name}\0{size}\0".encode())
        folder = next((f for f in framed if name.startswith(f)), None)
        checksums = shard_checksums(path, framed[folder]) if folder is not None else None
        if checksums is not None:
            digest.update(checksums)
        else:
            with path.open("rb") as fobj:
                while block := fobj.read(BLOCK):
                    digest.update(block)
        total += size
    return digest.hexdigest(), len(files), total


def _framed_arrays(root: Path) -> dict[str, int]:
    """Chunk folder (`<array>/c/`) -> rows per shard, of each array whose shards have maxa's frame and a
    CRC32C at the end of every chunk."""
    group = zarr.open_group(str(root), mode="r")
    found = {}
    for path, node in group.members(max_depth=None):
        if isinstance(node, zarr.Array) and row_sharding(node) is not None and has_checksums(node):
            found[f"{path}/c/"] = int((node.shards or node.chunks)[0])
    return found


def shard_checksums(path: Path, shard_rows: int) -> bytes | None:
    """A shard's encoded index and the CRC32C of each chunk it holds, in index order; None where the file
    does not parse as a shard of `shard_rows` chunks (it is then digested by its bytes)."""
    size = index_size(RawShards(shard_rows, 0, np.dtype("u1")))
    with path.open("rb") as fobj:
        end = os.fstat(fobj.fileno()).st_size - size
        if end < 0:
            return None
        fobj.seek(end)
        index = fobj.read(size)
        try:
            table = shard_index_table(index, shard_rows, 0)
        except DamagedShard:
            return None
        parts = [index]
        for offset, length in table.tolist():
            if offset == int(MISSING):
                continue
            if length < CRC_BYTES or offset + length > end:
                return None
            parts.append(os.pread(fobj.fileno(), CRC_BYTES, offset + length - CRC_BYTES))
    return b"".join(parts)


def remove_manifest(url: str) -> None:
    """Before a store is written: from now on until write_manifest, it does not count as finished."""
    path = manifest_path(url)
    if path is None:
        return
    try:
        path.unlink()
    except (FileNotFoundError, NotADirectoryError):
        return  # none there (an unwritable place is named by the store's own check)
    except OSError as exc:
        raise MaxaError(f"cannot remove {path} before writing {url}: {exc}") from exc


@contextmanager
def manifest_while_writing(url: str) -> Iterator[None]:
    """The manifest of `url` removed while its store is written (a crash leaves none: not finished); a run
    refused before it changed anything (other inputs without --overwrite, a bad option) that leaves a
    complete store there gets its manifest back, so a refusal costs the DVC stages nothing."""
    remove_manifest(url)
    try:
        yield
    except MaxaError:
        with suppress(MaxaError):  # nothing complete there: no manifest is right
            write_manifest(open_store(url))
        raise


def write_manifest(store: Store) -> Path | None:
    """Write the manifest of a complete local store (refuses an incomplete one); its path, or None for
    an object-store URL."""
    path = manifest_path(store.url)
    if path is None:
        return None
    store.require_complete()
    content, files, size = content_digest(Path(resolve(store.url)))
    body = {
        "store": Path(resolve(store.url)).name,
        "kind": store.kind,
        "fingerprint": store.fingerprint,
        "images": store.num_items,
        "files": files,
        "bytes": size,
        "content": content,
    }
    try:
        path.write_text(json.dumps(body, indent=1) + "\n")
    except OSError as exc:
        raise MaxaError(f"cannot write {path}: {exc}") from exc
    return path
