"""PCA-RGB maps: the first three principal components of a store's patch features shown as colours.

One PCA is fitted per backbone over all patches of the shown images, so colours are comparable across
those images (not across backbones). Each component is scaled by its 1st-99th percentiles to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maxa.core import store as st
from maxa.evaluate.plots import new_figure, save
from maxa.evaluate.qualitative import read_features, read_rows


@dataclass
class FeatureSource:
    """A feature store to map, with its row label and the layer(s) to read ('-1' = the last stored)."""

    label: str
    features_url: str
    layers: Any = "-1"  # as `maxa probe --layer` takes it: '-1', '2,5' or a list of names


def pca_rgb(features: np.ndarray) -> np.ndarray:
    """(n, h, w, C) features -> (n, h, w, 3) colours in [0, 1] from the first three components."""
    from sklearn.decomposition import PCA

    n, h, w, c = features.shape
    flat = features.reshape(-1, c).astype(np.float32)
    components = min(3, c, flat.shape[0])
    projected = PCA(n_components=components, random_state=0).fit_transform(flat)
    if components < 3:
        projected = np.pad(projected, ((0, 0), (0, 3 - components)))
    low, high = np.percentile(projected, [1, 99], axis=0)
    scaled = (projected - low) / np.maximum(high - low, 1e-8)
    return np.clip(scaled, 0.0, 1.0).reshape(n, h, w, 3)


def pca_figure(sources: list[FeatureSource], targets_url: str | None, out: Path, count: int = 4) -> Path:
    """Rows: the images (when a target store with previews is given), then one PCA row per backbone."""
    first = st.open_store(sources[0].features_url, "features")
    ids = first.ids()[:count]
    images = None
    if targets_url is not None:
        tstore = st.open_store(targets_url, "targets")
        if "image" in tstore.array_names():
            images = read_rows(tstore, "image", ids)
    maps: list[tuple[str, np.ndarray]] = []
    for source in sources:
        fstore = (
            first
            if source.features_url == sources[0].features_url
            else st.open_store(source.features_url, "features")
        )
        names, feats = read_features(fstore, source.layers, ids)
        maps.append((f"{source.label}\n{'+'.join(names)} {feats.shape[1]}x{feats.shape[2]}", pca_rgb(feats)))
    rows = ([("image", images)] if images is not None else []) + maps
    fig = new_figure(1.8 * len(ids) + 0.6, 1.8 * len(rows) + 0.5)
    axes = fig.subplots(len(rows), len(ids), squeeze=False)
    for i, (label, data) in enumerate(rows):
        for j, sid in enumerate(ids):
            ax = axes[i, j]
            ax.imshow(data[j], interpolation="bilinear" if i == 0 and images is not None else "nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
            if i == 0:
                ax.set_title(sid, fontsize=7)
    fig.suptitle("patch features: first 3 principal components as RGB", fontsize=10)
    return save(fig, out)
