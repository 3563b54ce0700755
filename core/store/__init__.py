"""The store contract: every read and write of a maxa Zarr store goes through this package.

A store is a Zarr v3 group. Its attributes hold one JSON object under the key `maxa`:
`format_version`, `kind` ("features" or "targets"), `shard_size`, `provenance` (what produced it),
`fingerprint` (a hash of the provenance fields that determine the bytes, recomputed on every open) and
`extra` (later additions such as statistics). The attributes are written together with the group, before
any array, flagged `"creating": true` until every array exists, so a kill at any instant of creation
leaves a store that the next run recognises and re-creates. Per-image arrays are written one shard at a
time; a `done` array (one flag per shard, its own chunk each, so concurrent writers of different shards
never touch the same object) records which shards are complete. A store is complete only when every
flag is set; readers refuse incomplete stores. Derived data (statistics, PCA bases) is written beside a
store, never into it. The layout is documented in docs/store.md.

One module per job: layout (names, attribute record, fingerprint, ids), codecs, location (paths, URLs,
storage options), raw (shard bytes at disk speed), fetch (compressed shards from object stores), base (an
opened store), read, integrity, write, access (open_store, create_or_resume) and manifest (the file beside
a finished local store that the DVC stages track). Stages import this
package, not its modules.
"""

from maxa.core.store.access import create_or_resume, open_store
from maxa.core.store.base import FAST_PIPELINE, fast_reads_available
from maxa.core.store.codecs import (
    CHECKSUM,
    CODECS,
    DEFAULT_CODEC,
    FEATURE_CODEC,
    ArraySpec,
    CodecFactory,
    bitround_codec,
)
from maxa.core.store.layout import (
    ATTR_KEY,
    CREATING,
    DIGEST_SIZE,
    DIGESTS,
    DONE,
    FORMAT_VERSION,
    IDS,
    META_FIELDS,
    NONFINITE_KEEP,
    RESERVED,
    VOLATILE_PROVENANCE,
    decode_ids,
    encode_ids,
    fingerprint,
    layer_name,
    prefix_name,
    provenance_diff,
)
from maxa.core.store.location import STORAGE_ENV, check_location, fsspec_options
from maxa.core.store.manifest import manifest_path, manifest_while_writing, remove_manifest, write_manifest
from maxa.core.store.read import ShardDamaged, nonfinite_rows, read_rows_together
from maxa.core.store.write import Store

__all__ = [
    "ATTR_KEY",
    "CHECKSUM",
    "CODECS",
    "CREATING",
    "DEFAULT_CODEC",
    "DIGESTS",
    "DIGEST_SIZE",
    "DONE",
    "FAST_PIPELINE",
    "FEATURE_CODEC",
    "FORMAT_VERSION",
    "IDS",
    "META_FIELDS",
    "NONFINITE_KEEP",
    "RESERVED",
    "STORAGE_ENV",
    "VOLATILE_PROVENANCE",
    "ArraySpec",
    "CodecFactory",
    "ShardDamaged",
    "Store",
    "bitround_codec",
    "check_location",
    "create_or_resume",
    "decode_ids",
    "encode_ids",
    "fast_reads_available",
    "fingerprint",
    "fsspec_options",
    "layer_name",
    "manifest_path",
    "manifest_while_writing",
    "nonfinite_rows",
    "open_store",
    "prefix_name",
    "provenance_diff",
    "read_rows_together",
    "remove_manifest",
    "write_manifest",
]
