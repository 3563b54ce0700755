"""Instance retrieval: find each augmented query's source image in the gallery, from pooled patch features.

The test of Vanyan et al. (2024): queries are blurred / noisy / cropped copies of gallery images
(the `augmented` dataset reader makes them a split of their own, extracted like any other), image
descriptors are pooled patch features, and a query's relevant items are its source image (and
exact duplicates of it). Scored by recall@k and mAP; with `tiles` > 1 every tile of the feature
grid is an item of its own, and a query tile must find the same tile of its source. The interval of
the primary layer's numbers is a percentile bootstrap over source images (all queries made from a drawn
image come with it).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from maxa.core import store as st
from maxa.core.dataset_facts import parse_augmented_id
from maxa.core.device import resolve_device
from maxa.core.errors import MaxaError
from maxa.core.provenance import FeatureProvenance
from maxa.evaluate.intervals import GroupedMeans, clipped_bootstrap
from maxa.evaluate.local import stores
from maxa.evaluate.local.config import RetrievalConfig
from maxa.evaluate.local.record import metrics_record
from maxa.evaluate.local.similarity import ChannelMoments, kept_dimensions
from maxa.probe.bank import unit


def _bounds(size: int, parts: int) -> list[tuple[int, int]]:
    edges = [round(i * size / parts) for i in range(parts + 1)]
    return list(itertools.pairwise(edges))


def pool(features: torch.Tensor, pooling: str = "mean", p: float = 3.0, tiles: int = 1) -> torch.Tensor:
    """(N, h, w, C) patch features -> (N, tiles * tiles, C) descriptors (not yet normalized).

    GeM (generalized mean, Radenović et al.) is defined on non-negative activations; transformer
    features are signed, so they are clamped at 1e-6 first, as GeM implementations do.
    """
    n, h, w, _ = features.shape
    if tiles > min(h, w):
        raise MaxaError(f"--tiles {tiles} exceeds the {h}x{w} feature grid")
    x = features.float()
    out = []
    for top, bottom in _bounds(h, tiles):
        for left, right in _bounds(w, tiles):
            region = x[:, top:bottom, left:right].reshape(n, -1, x.shape[-1])
            if pooling == "gem":
                out.append(region.clamp(min=1e-6).pow(p).mean(1).pow(1.0 / p))
            else:
                out.append(region.mean(1))
    return torch.stack(out, dim=1)


def ranking_items(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    relevant: Sequence[Sequence[int]],
    recall_at: Sequence[int],
    *,
    chunk: int = 256,
) -> dict[str, np.ndarray]:
    """Per query: recall@k (0/1), AP and the rank of its first relevant item, of cosine rankings (unit
    vectors in; row i of `relevant` lists query i's items).

    Ties count against the query: an irrelevant item as similar as a relevant one ranks before it,
    so constant features score at chance, not perfectly. recall@k = a relevant item in the top k;
    AP = mean over relevant items of the precision at their rank.
    """
    hits: dict[int, list[np.ndarray]] = {k: [] for k in recall_at}
    aps, first_ranks = [], []
    for start in range(0, queries.shape[0], chunk):
        sims = queries[start : start + chunk] @ gallery.T
        rel = torch.zeros_like(sims, dtype=torch.bool)
        for row, items in enumerate(relevant[start : start + chunk]):
            if not len(items):
                raise MaxaError(f"query {start + row} has no relevant gallery item")
            rel[row, torch.as_tensor(list(items), device=sims.device)] = True
        # Irrelevant before relevant among equal similarities: stable sorts, the tie-break first.
        first = torch.sort(rel.to(torch.uint8), dim=1, stable=True).indices
        second = torch.sort(torch.gather(sims, 1, first), dim=1, descending=True, stable=True).indices
        ranked_rel = torch.gather(rel, 1, torch.gather(first, 1, second)).double()
        positions = torch.arange(1, sims.shape[1] + 1, device=sims.device, dtype=torch.float64)
        precision = ranked_rel.cumsum(1) / positions
        aps.append(((precision * ranked_rel).sum(1) / ranked_rel.sum(1)).cpu().numpy())
        first_rank = (ranked_rel.argmax(1) + 1).cpu().numpy()
        first_ranks.append(first_rank.astype(np.float64))
        for k in recall_at:
            hits[k].append((first_rank <= k).astype(np.float64))
    out = {f"recall@{k}": np.concatenate(hits[k]) for k in recall_at}
    out["map"] = np.concatenate(aps)
    out["mean_first_rank"] = np.concatenate(first_ranks)
    return out


def ranking_scores(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    relevant: Sequence[Sequence[int]],
    recall_at: Sequence[int],
    *,
    chunk: int = 256,
) -> dict[str, float]:
    """recall@k, mAP and the mean first rank over the queries (ranking_items' means)."""
    items = ranking_items(queries, gallery, relevant, recall_at, chunk=chunk)
    return {name: float(values.mean()) for name, values in items.items()}


def duplicate_groups(keys: Sequence[bytes]) -> list[list[int]]:
    """For each gallery image, every gallery image with byte-identical features (itself included)."""
    groups: dict[bytes, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [groups[key] for key in keys]


def relevant_items(sources: Sequence[int], groups: Sequence[Sequence[int]], tiles: int) -> list[list[int]]:
    """Relevant gallery items of each query item: the same tile of the source image and its duplicates."""
    per_image = tiles * tiles
    return [[g * per_image + t for g in groups[s]] for s in sources for t in range(per_image)]


def match_sources(
    query_ids: Sequence[str], gallery_ids: Sequence[str], queries_url: str
) -> tuple[list[int], list[str]]:
    """Gallery index of each query's source (`aug-<kind>-<id>` -> `<id>`; other ids match themselves)."""
    position = {sid: i for i, sid in enumerate(gallery_ids)}
    sources, kinds = [], []
    for qid in query_ids:
        parsed = parse_augmented_id(qid)
        kind, source = parsed if parsed else ("none", qid)
        if source not in position:
            raise MaxaError(
                f"query {qid!r} of {queries_url}: its source {source!r} is not in the gallery store"
            )
        sources.append(position[source])
        kinds.append(kind)
    return sources, kinds


def _descriptors(
    store: st.Store, layer: str, config: RetrievalConfig, progress: bool
) -> tuple[torch.Tensor, list[bytes], ChannelMoments]:
    """Pooled descriptors of every image, an identity key per image, and the patch channel moments."""
    parts: list[torch.Tensor] = []
    keys: list[bytes] = []
    moments = ChannelMoments(store.array(layer).shape[-1])
    shards = stores.iter_shards(store, layer)
    for _, _, block in tqdm(shards, total=store.num_shards, desc=f"pool {layer}", disable=not progress):
        x = torch.from_numpy(block)
        moments.update(x)
        parts.append(pool(x, config.pooling, config.gem_p, config.tiles))
        keys.extend(m.numpy().tobytes() for m in x.float().mean((1, 2)))
    return torch.cat(parts), keys, moments


def evaluate_retrieval(
    config: RetrievalConfig, gallery_url: str, queries_url: str, *, progress: bool = True
) -> dict[str, Any]:
    """recall@k and mAP per layer for augmented queries against their gallery, as a metrics record."""
    gallery = st.open_store(gallery_url, "features")
    queries = st.open_store(queries_url, "features")
    stores.check_same_backbone(gallery, queries)
    sources, kinds = match_sources(queries.ids(), gallery.ids(), queries_url)
    if config.tiles > 1 and "crop" in kinds:
        raise MaxaError(
            "--tiles > 1 needs queries aligned with their sources; crops are not (use blur or noise)"
        )
    layers = stores.select_layers([queries, gallery], config.layers)
    device = resolve_device(config.device)

    table: dict[str, dict[str, float]] = {}
    relevant_count = 0.0
    for name in layers:
        g_desc, g_keys, moments = _descriptors(gallery, name, config, progress)
        q_desc, _, _ = _descriptors(queries, name, config, progress)
        keep = kept_dimensions(moments.variance(), config.drop_dims)
        g = unit(g_desc.reshape(-1, g_desc.shape[-1]).to(device), keep)
        q = unit(q_desc.reshape(-1, q_desc.shape[-1]).to(device), keep)
        relevant = relevant_items(sources, duplicate_groups(g_keys), config.tiles)
        relevant_count = float(np.mean([len(r) for r in relevant]))
        items = ranking_items(q, g, relevant, config.recall_at, chunk=config.chunk)
        table[name] = {metric: float(values.mean()) for metric, values in items.items()}
    # the primary layer's interval: queries made from one source image are drawn together
    units = np.repeat(np.asarray(sources), config.tiles * config.tiles)
    uncertainty = clipped_bootstrap(GroupedMeans(items, units))

    primary_layer = layers[-1]
    qprov, gprov = FeatureProvenance.of(queries).to_dict(), FeatureProvenance.of(gallery).to_dict()
    return metrics_record(
        {**stores.provenance_summary(gallery), "uncertainty": uncertainty},
        task="retrieval",
        scores={"layers": table},
        primary=("map", table[primary_layer]["map"], True),
        protocol={
            "method": "instance retrieval of augmented copies (Vanyan et al. 2024)",
            "primary_layer": primary_layer,
            "layers": layers,
            "pooling": config.pooling,
            "gem_p": config.gem_p if config.pooling == "gem" else None,
            "tiles": config.tiles,
            "drop_dims": config.drop_dims,
            "recall_at": config.recall_at,
            "augmentations": sorted(set(kinds)),
            "queries": len(sources),
            "gallery_images": len(gallery),
            "mean_relevant_per_query": relevant_count,
            "queries_dataset": qprov["dataset"],
            "input_size": gprov["input_size"],
        },
    )
