"""Out-of-core statistics of a feature store, computed with dask one shard at a time.

Per layer: per-channel mean and std, the per-channel variance spectrum (the "few high-variance
dimensions" diagnostic: sorted channel variances and the share of total variance held by the top-k
channels), the entropy-based effective rank of the channel covariance, and a PCA basis (e.g. the
first three components map patch features to RGB). Only the small results are held in memory; the
C x C covariance is accumulated chunk by chunk in float64. Results go to `<store>.stats.zarr` (or a
given path), never into the store. Inside a DVC project they go under its `stats/` folder instead of
beside the store: the generated layout keeps stores inside folder outputs (data/features/<ds>/<backbone>/),
where a new file would make `dvc status` report the output modified and `dvc repro` redo the stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.errors

from maxa.core import store as st
from maxa.core.errors import MaxaError
from maxa.core.records import check_writable, now_iso

TOP_K = (1, 2, 4, 8, 16, 32)
MAX_ROWS_PER_TASK = 16384
"""Feature vectors per dask task: bounds each thread's float64 working set (rows x C x 8 bytes)."""
STATS_ATTR = "maxa_stats"


@dataclass
class LayerStats:
    """Everything `maxa store stats` reports and saves for one layer."""

    layer: str
    count: int  # feature vectors (images x grid cells)
    mean: np.ndarray  # (C,)
    std: np.ndarray  # (C,)
    eigenvalues: np.ndarray  # (C,) covariance eigenvalues, descending
    components: np.ndarray  # (k, C) principal axes, rows, descending variance

    @property
    def channel_variance(self) -> np.ndarray:
        return self.std**2

    @property
    def sorted_channel_variance(self) -> np.ndarray:
        return np.sort(self.channel_variance)[::-1]

    def top_k_fraction(self) -> dict[int, float]:
        """Share of the total variance held by the k highest-variance channels."""
        spectrum = self.sorted_channel_variance
        total = float(spectrum.sum())
        return {
            k: float(spectrum[:k].sum() / total) if total > 0 else 0.0 for k in TOP_K if k <= len(spectrum)
        }

    @property
    def effective_rank(self) -> float:
        """exp(entropy) of the normalized covariance eigenvalues (Roy & Vetterli, 2007)."""
        lam = np.clip(self.eigenvalues, 0.0, None)
        total = lam.sum()
        if total <= 0:
            return 0.0
        p = lam[lam > 0] / total
        return float(np.exp(-(p * np.log(p)).sum()))

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        lam = np.clip(self.eigenvalues, 0.0, None)
        return lam[: len(self.components)] / lam.sum() if lam.sum() > 0 else np.zeros(len(self.components))

    def summary(self) -> dict[str, Any]:
        spectrum = self.sorted_channel_variance
        return {
            "count": self.count,
            "channels": len(self.mean),
            "effective_rank": self.effective_rank,
            "top_k_variance_fraction": {str(k): v for k, v in self.top_k_fraction().items()},
            "max_to_median_channel_variance": float(spectrum[0] / max(np.median(spectrum), 1e-30)),
            "pca_components": len(self.components),
            "pca_explained_variance_ratio": [float(v) for v in self.explained_variance_ratio],
        }


def _sign_fixed(vectors: np.ndarray) -> np.ndarray:
    """Eigenvectors are defined up to sign: make each row's largest-magnitude entry positive."""
    picks = vectors[np.arange(len(vectors)), np.abs(vectors).argmax(axis=1)]
    return vectors * np.where(picks < 0, -1.0, 1.0)[:, None]


def from_moments(
    layer: str, count: int, total: np.ndarray, gram: np.ndarray, shift: np.ndarray, n_components: int
) -> LayerStats:
    """Stats from the sums of (x - shift) and (x - shift)(x - shift)^T over `count` vectors."""
    if count < 2:
        raise MaxaError(f"layer {layer}: statistics need at least 2 feature vectors, got {count}")
    centred_mean = total / count
    cov = (gram - count * np.outer(centred_mean, centred_mean)) / (count - 1)
    cov = (cov + cov.T) / 2
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    k = max(0, min(n_components, len(eigenvalues)))
    return LayerStats(
        layer=layer,
        count=count,
        mean=centred_mean + shift,
        std=np.sqrt(np.clip(np.diag(cov), 0.0, None)),
        eigenvalues=np.clip(eigenvalues, 0.0, None),
        components=_sign_fixed(eigenvectors[:, :k].T) if k else np.zeros((0, len(eigenvalues))),
    )


def layer_stats(store: st.Store, layer: str, n_components: int = 16) -> LayerStats:
    """One pass over the layer with dask (chunks = shards), never the whole array in memory."""
    import dask
    import dask.array as da

    x = store.dask_array(layer)
    if x.ndim < 2:
        raise MaxaError(f"store {store.url}: {layer!r} has no channel axis")
    channels = x.shape[-1]
    count = int(np.prod(x.shape[:-1]))
    # Shifting by the first image's mean keeps the one-pass covariance exact enough in float64
    # even for channels whose mean dwarfs their spread.
    shift = np.asarray(x[:1].reshape(-1, channels).astype(np.float64).mean(axis=0).compute())
    flat = x.reshape(-1, channels)  # shard chunks stay whole: (shard * h * w, C)
    rows = max(1, min(int(flat.chunks[0][0]), MAX_ROWS_PER_TASK))
    flat = flat.rechunk({0: rows, 1: channels}).astype(np.float64) - shift
    total, gram = dask.compute(flat.sum(axis=0), da.matmul(flat.T, flat))
    return from_moments(layer, count, np.asarray(total), np.asarray(gram), shift, n_components)


STATS_FOLDER = "stats"
"""Where a DVC project keeps statistics: `<project>/stats/<the store's path in the project>`."""


def _dvc_project(path: Path) -> Path | None:
    """The nearest folder above `path` that holds a `.dvc` folder (a DVC project's root)."""
    return next((p for p in path.parents if (p / ".dvc").is_dir()), None)


def stats_path(url: str) -> str:
    """Default place of a store's statistics, `<name>.stats.zarr`: beside the store, or inside a DVC
    project mirrored under its `stats/` folder (never inside a DVC output, which would then count as
    modified)."""
    base = url.rstrip("/")
    name = (base[: -len(".zarr")] if base.endswith(".zarr") else base) + ".stats.zarr"
    if "://" in url:
        return name
    project = _dvc_project(Path(base).resolve())
    if project is None:
        return name
    return str(project / STATS_FOLDER / Path(name).resolve().relative_to(project))


def _stats_group(store: st.Store, out: str | None, mode: str) -> zarr.Group:
    path = out or stats_path(store.url)
    if path.rstrip("/") == store.url.rstrip("/") or path.startswith(store.url.rstrip("/") + "/"):
        raise MaxaError(f"statistics path {path} lies inside the store {store.url}; give a path beside it")
    if mode != "r" and "://" not in path:
        check_writable(Path(path) / "zarr.json", "statistics path")
    try:
        return zarr.open_group(path, mode=mode, storage_options=st.fsspec_options(path))  # type: ignore[arg-type]
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise MaxaError(
            f"no statistics for {store.url} at {path}; run `maxa store stats {store.url}`"
        ) from None
    except OSError as exc:
        raise MaxaError(f"statistics path {path} cannot be written ({exc.strerror or exc})") from exc


def _stats_attr(group: zarr.Group) -> dict[str, Any]:
    value: Any = group.attrs.asdict().get(STATS_ATTR)
    return dict(value) if isinstance(value, dict) else {}


def save_stats(store: st.Store, stats: LayerStats, out: str | None = None) -> str:
    """Write one layer's statistics beside the store (or to `out`), a plain Zarr v3 group:
    `<layer>/{mean,std,covariance_eigenvalues,pca_components}` and a summary in its attributes,
    tagged with the store's fingerprint so stale statistics are refused on read."""
    group = _stats_group(store, out, "a")
    meta = _stats_attr(group)
    if meta.get("fingerprint") not in (None, store.fingerprint):
        meta = {}  # statistics of an earlier store at this path: replaced as a whole
        for name in list(group.group_keys()):
            del group[name]
    layer = group.require_group(stats.layer)
    arrays: dict[str, np.ndarray] = {
        "mean": stats.mean.astype(np.float32),
        "std": stats.std.astype(np.float32),
        "covariance_eigenvalues": stats.eigenvalues.astype(np.float64),
        "pca_components": stats.components.astype(np.float32),
    }
    for name, data in arrays.items():
        node = layer.create_array(name, shape=data.shape, dtype=data.dtype, chunks=data.shape, overwrite=True)
        node[...] = data
        if name == "pca_components":
            node.attrs.update({"dims": ["component", "channel"], "apply": "(x - mean) @ pca_components.T"})
    layers: dict[str, Any] = dict(meta.get("layers") or {})
    layers[stats.layer] = {**stats.summary(), "computed": now_iso()}
    group.attrs[STATS_ATTR] = {"store": store.url, "fingerprint": store.fingerprint, "layers": layers}
    return str(out or stats_path(store.url))


def compute_stats(
    url: str,
    layers: Sequence[str] = (),
    n_components: int = 16,
    *,
    save: bool = True,
    out: str | None = None,
) -> list[LayerStats]:
    """Statistics of the named layers (all per-image float arrays when empty) of a complete store,
    saved beside it (or at `out`) unless `save` is False; the store itself is only read."""
    store = st.open_store(url)
    names = list(layers) or [n for n in store.array_names() if np.dtype(store.array(n).dtype).kind == "f"]
    if not names:
        raise MaxaError(f"store {url} has no float arrays to summarize")
    for name in names:
        store.array(name)  # unknown names fail before any work
    if save:
        _stats_group(store, out, "a")  # the output is writable before the pass over the store
    results = [layer_stats(store, name, n_components) for name in names]
    if save:
        for result in results:
            save_stats(store, result, out)
    return results


def read_stats(store: st.Store, out: str | None = None) -> dict[str, Any]:
    """The summaries saved for this store (refused when they belong to another store version)."""
    group = _stats_group(store, out, "r")
    meta = _stats_attr(group)
    if meta.get("fingerprint") != store.fingerprint:
        raise MaxaError(
            f"statistics at {out or stats_path(store.url)} were computed for store fingerprint "
            f"{meta.get('fingerprint')}, not {store.fingerprint}; run `maxa store stats {store.url}` again"
        )
    return dict(meta.get("layers") or {})


def load_pca(store: st.Store, layer: str, out: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The saved (mean, components) of a layer, for projecting features, e.g. to RGB."""
    if layer not in read_stats(store, out):
        raise MaxaError(f"store {store.url} has no PCA basis for {layer}; run `maxa store stats {store.url}`")
    group = _stats_group(store, out, "r")
    mean, components = group[f"{layer}/mean"], group[f"{layer}/pca_components"]
    if not isinstance(mean, zarr.Array) or not isinstance(components, zarr.Array):
        raise MaxaError(f"statistics of {store.url}: {layer} has no mean/pca_components arrays")
    return np.asarray(mean[...]), np.asarray(components[...])


def project(features: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """(..., C) features -> (..., k) principal-component scores."""
    return (features.astype(np.float32) - mean) @ components.T
