"""The manifest of a finished local store: one small file beside it that changes whenever its content does.

`maxa prepare` and `maxa extract` remove `<store>.manifest.json` before they write a store and write it
again once every shard is done, so the file exists only beside a complete store. It holds the store's
kind, fingerprint, image count and a digest of every file in the store (path, size, bytes), and nothing
that depends on when or where it was written: the same content gives the same bytes. The generated DVC
stages depend on these files rather than on the store folders (pipelines/dvcgen.py), so `dvc status`
hashes one small file per store instead of building a tree of every shard (docs/store.md, README).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from maxa.core.errors import MaxaError
from maxa.core.paths import manifest_of
from maxa.core.store.location import resolve
from maxa.core.store.write import Store

BLOCK = 1 << 20


def manifest_path(url: str) -> Path | None:
    """Where the manifest of the store at `url` goes; None for an object-store URL (nothing to track)."""
    path = resolve(url)
    return None if "://" in path else Path(manifest_of(path))


def content_digest(root: Path) -> tuple[str, int, int]:
    """(blake2b-128 hex, files, bytes) over every file under `root`: relative path, size and bytes, in
    path order."""
    digest = hashlib.blake2b(digest_size=16)
    files = sorted((path.relative_to(root).as_posix(), path) for path in root.rglob("*") if path.is_file())
    total = 0
    for name, path in files:
        size = path.stat().st_size
        digest.update(f"{name}\0{size}\0".encode())
        with path.open("rb") as fobj:
            while block := fobj.read(BLOCK):
                digest.update(block)
        total += size
    return digest.hexdigest(), len(files), total


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
