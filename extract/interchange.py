"""HDF5 export and import of maxa stores, for tools that read HDF5 but not Zarr.

The HDF5 file mirrors the store: one chunked dataset per array (chunks of one image, like the
store), `ids` as UTF-8 strings, `done` as bool, derived arrays (e.g. `stats/<layer>/...`) at the same
paths, and the store's whole `maxa` attribute object as a JSON string in the root attribute `maxa`.
Per-array dimension names and codec settings are dataset attributes. Import rebuilds a store with
the same layout, done flags, attributes and therefore the same fingerprint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from maxa.core import store as st
from maxa.core.errors import MaxaError
from maxa.core.records import check_writable

HDF5_LAYOUT_VERSION = 1
COMPRESSIONS = ("none", "gzip", "lzf")


def export_hdf5(url: str, path: str | Path, *, compression: str = "none", progress: bool = True) -> Path:
    """Write the store at `url` (complete or not: done flags travel along) to an HDF5 file."""

    if compression not in COMPRESSIONS:
        raise MaxaError(f"--compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    path = Path(path)
    if path.exists():
        raise MaxaError(f"{path} exists; remove it or choose another file")
    check_writable(path, "HDF5 file")
    store = st.open_store(url, require_complete=False)
    done = store.done_shards()
    h5_compression = None if compression == "none" else compression
    tmp = path.with_name(path.name + ".partial")
    try:
        _write_hdf5(store, tmp, done, h5_compression, progress)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave a half-written export behind
        raise
    tmp.replace(path)
    return path


def _write_hdf5(
    store: st.Store, tmp: Path, done: np.ndarray, h5_compression: str | None, progress: bool
) -> None:
    import h5py

    with h5py.File(tmp, "w") as f:
        f.attrs["maxa"] = json.dumps(store.meta)
        f.attrs["maxa_hdf5_layout"] = HDF5_LAYOUT_VERSION
        f.create_dataset("ids", data=np.asarray(store.ids(), dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("done", data=done)
        names = store.array_names()
        for name in names:
            node = store.array(name)
            spec = store.spec(name)
            dset = f.create_dataset(
                name,
                shape=node.shape,
                dtype=node.dtype,
                chunks=(1, *node.shape[1:]) if node.shape[0] else None,
                compression=h5_compression,
            )
            dset.attrs["dimension_names"] = json.dumps(list(spec.dims))
            dset.attrs["codec"] = spec.codec or ""
            for shard in tqdm(
                range(store.num_shards), desc=f"export {name}", unit="shard", disable=not progress
            ):
                start, stop = store.shard_range(shard)
                if stop > start:
                    dset[start:stop] = store.read(name, slice(start, stop))  # whole-shard reads
        digests = store.digests()
        if digests is not None:  # per-sample content digests of a target store travel along
            dset = f.create_dataset(st.DIGESTS, data=digests)
            dset.attrs["dimension_names"] = json.dumps(["image", "byte"])
            dset.attrs["codec"] = "none"
        for aux in store.aux_names():
            data, attrs = store.read_aux(aux)
            dset = f.create_dataset(aux, data=data)
            dset.attrs["attrs"] = json.dumps(attrs)


def _read_meta(f: Any, path: Path) -> dict[str, Any]:
    if "maxa" not in f.attrs:
        raise MaxaError(f"{path} is not a maxa HDF5 export (no 'maxa' attribute)")
    if int(f.attrs.get("maxa_hdf5_layout", 0)) > HDF5_LAYOUT_VERSION:
        raise MaxaError(f"{path} was exported by a newer maxa; upgrade maxa")
    try:
        meta: dict[str, Any] = json.loads(f.attrs["maxa"])
    except ValueError as exc:
        raise MaxaError(f"{path}: the 'maxa' attribute is not valid JSON ({exc})") from exc
    missing = [k for k in st.META_FIELDS if k not in meta]
    if missing:
        raise MaxaError(f"{path}: the 'maxa' attribute lacks {', '.join(missing)}")
    if int(meta.get("format_version", -1)) > st.FORMAT_VERSION:
        raise MaxaError(
            f"{path} holds a store of format {meta['format_version']}; this maxa reads up to "
            f"{st.FORMAT_VERSION}; upgrade maxa"
        )
    return meta


def _aux_paths(f: Any) -> list[str]:
    import h5py

    found: list[str] = []
    f.visititems(
        lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and "/" in name else None
    )
    return sorted(found)


def import_hdf5(path: str | Path, url: str, *, overwrite: bool = False, progress: bool = True) -> st.Store:
    """Rebuild a store from an export; the result has the exported store's fingerprint."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise MaxaError(f"HDF5 file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise MaxaError(f"HDF5 file {path} cannot be read (truncated or not HDF5: {exc})") from exc
    try:
        return _import(f, path, url, overwrite, progress)
    except (OSError, KeyError) as exc:
        raise MaxaError(f"HDF5 file {path} is damaged or incomplete ({type(exc).__name__}: {exc})") from exc
    finally:
        f.close()


def _import(f: Any, path: Path, url: str, overwrite: bool, progress: bool) -> st.Store:
    import h5py

    meta = _read_meta(f, path)
    provenance = meta["provenance"]
    if st.fingerprint(provenance, int(meta["format_version"])) != meta["fingerprint"]:
        raise MaxaError(
            f"{path}: provenance does not match its fingerprint {meta['fingerprint']}; file altered?"
        )
    ids = [str(s) for s in f["ids"].asstr()[:]]
    done = np.asarray(f["done"][:], dtype=bool)
    names = sorted(k for k, v in f.items() if isinstance(v, h5py.Dataset) and k not in (st.IDS, st.DONE))
    specs = {}
    for name in names:
        dset = f[name]
        codec = str(dset.attrs.get("codec", "")) or None
        specs[name] = st.ArraySpec(
            tuple(dset.shape[1:]),
            str(dset.dtype),
            tuple(json.loads(dset.attrs["dimension_names"])),
            codec=codec if codec in st.CODECS else None,
        )
    store = st.create_or_resume(
        url,
        kind=meta["kind"],
        provenance=provenance,
        ids=ids,
        arrays=specs,
        shard_size=int(meta["shard_size"]),
        overwrite=overwrite,
    )
    if store.num_shards != len(done):
        raise MaxaError(f"{path}: {len(done)} done flags, but the layout needs {store.num_shards}")
    todo = [int(s) for s in np.flatnonzero(done) if s in set(store.pending_shards())]
    for shard in tqdm(todo, desc="import", unit="shard", disable=not progress):
        start, stop = store.shard_range(shard)
        store.write_shard(shard, {name: np.asarray(f[name][start:stop]) for name in names})
    for key, value in meta.get("extra", {}).items():
        store.set_attr(key, value)
    for aux in _aux_paths(f):
        store.write_aux(aux, np.asarray(f[aux][...]), json.loads(f[aux].attrs.get("attrs", "{}")))
    return store
