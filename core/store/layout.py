"""The on-disk layout of a maxa store: reserved array names, the attribute record, the fingerprint and
the encoding of sample ids (docs/store.md describes each)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from maxa.core.errors import MaxaError
from maxa.core.provenance import NONFINITE_KEY
from maxa.core.records import digest

FORMAT_VERSION = 2
"""2: `ids` as UTF-8 bytes in uint8 (N, width) (a Zarr v3 core type), canonical-JSON fingerprint.
1: `ids` in zarr-python's `string` extension type; still read."""
ATTR_KEY = "maxa"
IDS = "ids"
DONE = "done"
DIGESTS = "digests"
"""Target stores: blake2b-128 content digest of each sample as prepare read it (uint8 (N, 16))."""
DIGEST_SIZE = 16
RESERVED = (IDS, DONE, DIGESTS)
CREATING = "creating"
"""Flag in the attributes while a store's arrays are being created."""
META_FIELDS = ("format_version", "kind", "fingerprint", "shard_size", "provenance")
NONFINITE_KEEP = NONFINITE_KEY
"""Provenance field: "keep" records that NaN/inf values were allowed into a store on purpose."""
VOLATILE_PROVENANCE = frozenset({"created", "maxa_version", "root"})
"""Provenance fields that describe the run or where the inputs were, not the bytes: left out of the
fingerprint (format 1 left out only `created` and `maxa_version`)."""


def layer_name(index: int) -> str:
    """Name of the store array holding feature level `index` (non-negative, as timm counts)."""
    return f"layer_{index}"


def prefix_name(index: int) -> str:
    """Name of the store array holding the prefix (cls/register) tokens of feature level `index`."""
    return f"prefix_{layer_name(index)}"


def fingerprint(provenance: Mapping[str, Any], format_version: int = FORMAT_VERSION) -> str:
    """Hash of the provenance fields that determine the stored bytes (run-specific fields excluded).

    Format 2 (docs/store.md): first 16 hex of sha256 of the canonical JSON (sorted keys, separators
    "," and ":", UTF-8) of the provenance without `created`, `maxa_version` and `root`.
    """
    legacy = format_version < 2
    volatile = {"created", "maxa_version"} if legacy else VOLATILE_PROVENANCE
    stable = {k: v for k, v in provenance.items() if k not in volatile}
    if not legacy:
        return digest(stable)
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode_ids(ids: Sequence[str]) -> np.ndarray:
    """Sample ids -> uint8 (N, width): UTF-8 bytes, zero-padded (a core type every Zarr v3 reader opens)."""
    raw = [str(i).encode("utf-8") for i in ids]
    for sid, b in zip(ids, raw, strict=True):
        if not b or b"\x00" in b:
            raise MaxaError(f"sample id {sid!r} must be non-empty and hold no NUL character")
    width = max((len(b) for b in raw), default=1)
    out = np.zeros((len(raw), width), np.uint8)
    for row, b in enumerate(raw):
        out[row, : len(b)] = np.frombuffer(b, np.uint8)
    return out


def decode_ids(codes: np.ndarray) -> list[str]:
    """The inverse of encode_ids; also accepts format-1 string arrays."""
    codes = np.asarray(codes)
    if codes.dtype.kind in "OUT":
        return [str(x) for x in codes]
    return [bytes(row).rstrip(b"\x00").decode("utf-8") for row in codes]


def provenance_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable list of the fingerprinted fields that differ between two provenances."""
    keys = sorted((set(old) | set(new)) - VOLATILE_PROVENANCE)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def check_meta(meta: Any, url: str) -> dict[str, Any]:
    """The `maxa` attribute record of the store at `url`, refused (one line) unless this maxa can read it
    as a finished store whose fingerprint matches its provenance."""
    if not isinstance(meta, dict):
        raise MaxaError(f"{url} is not a maxa store (no '{ATTR_KEY}' attributes)")
    try:
        version = int(meta.get("format_version", -1))
    except (TypeError, ValueError):
        raise MaxaError(f"{url}: format_version {meta.get('format_version')!r} is no integer") from None
    if version > FORMAT_VERSION:
        raise MaxaError(
            f"{url} was written by a newer maxa (store format {version}, this maxa reads up to "
            f"{FORMAT_VERSION}); upgrade maxa"
        )
    if meta.get(CREATING):
        raise MaxaError(
            f"store {url} was interrupted while being created; re-run the command that writes it "
            "(it starts the store afresh: no shard was written yet)"
        )
    missing = [k for k in META_FIELDS if k not in meta]
    if missing:
        raise MaxaError(f"store {url}: attrs['{ATTR_KEY}'] lack {', '.join(missing)} (docs/store.md)")
    if not isinstance(meta["provenance"], dict):
        raise MaxaError(f"store {url}: provenance must be a JSON object")
    expected = fingerprint(meta["provenance"], version)
    if meta["fingerprint"] != expected:
        raise MaxaError(
            f"store {url}: fingerprint {meta['fingerprint']} does not match its provenance ({expected}); "
            "the attributes were edited or damaged: re-create the store"
        )
    return meta


def half_created(group: zarr.Group, arrays: Sequence[str]) -> bool:
    """A store killed during creation: flagged `creating`, or (format 1 wrote the attributes last) a
    group without attributes holding only arrays this call would create and no done shard."""
    attrs = dict(group.attrs)
    meta = attrs.get(ATTR_KEY)
    if isinstance(meta, dict):
        return bool(meta.get(CREATING))
    if attrs or any(True for _ in group.group_keys()):
        return False
    names = set(group.array_keys())
    if not names or not names <= {*arrays, *RESERVED}:
        return False  # an empty or foreign group is not ours to replace
    if DONE in names:
        return not bool(np.asarray(group[DONE][:]).any())  # type: ignore[index]
    return True
