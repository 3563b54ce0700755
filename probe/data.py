"""Feature and target stores joined on sample ids, held in memory for training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from maxa.extract import store as st
from maxa.extract.config import layer_name
from maxa.extract.errors import MaxaError


@dataclass
class PairedData:
    """Features (N, h, w, C) float16 and one target array (N, H, W), row i of both = one sample."""

    features: torch.Tensor
    targets: torch.Tensor
    ids: list[str]
    layer: str
    feature_store: st.Store
    target_store: st.Store

    def __len__(self) -> int:
        return len(self.ids)


def resolve_layer(store: st.Store, layer: str | int) -> str:
    """Accept 'layer_11', '11' or -1 (the last stored layer)."""
    names = [n for n in store.array_names() if n.startswith("layer_")]
    if isinstance(layer, int) or str(layer).lstrip("-").isdigit():
        index = int(layer)
        if index < 0:
            ordered = sorted(names, key=lambda n: int(n.split("_", 1)[1]))
            if -index > len(ordered):
                raise MaxaError(
                    f"store {store.url} has {len(ordered)} layers; --layer {layer} is out of range"
                )
            return ordered[index]
        candidate = layer_name(index)
    else:
        candidate = str(layer)
    if candidate not in names:
        raise MaxaError(f"store {store.url} has no layer {layer!r}; stored layers: {', '.join(names)}")
    return candidate


def load_pair(features_url: str, targets_url: str, layer: str | int, target: str) -> PairedData:
    """Read one layer and one target fully into memory (whole-shard reads, not per sample)."""
    fstore = st.open_store(features_url, "features")
    tstore = st.open_store(targets_url, "targets")
    if target not in tstore.array_names():
        raise MaxaError(
            f"target store {targets_url} has no {target!r} target (it has {tstore.array_names()})"
        )
    fprov, tprov = fstore.provenance, tstore.provenance
    if fprov["dataset"]["fingerprint"] != tprov["dataset_fingerprint"]:
        raise MaxaError(
            f"feature store {features_url} was extracted from dataset {fprov['dataset']} but target store "
            f"{targets_url} holds {tprov['dataset']}/{tprov['split']} ({tprov['dataset_fingerprint']})"
        )
    fids, tids = fstore.ids(), tstore.ids()
    position = {sid: i for i, sid in enumerate(tids)}
    missing = [sid for sid in fids if sid not in position]
    if missing:
        raise MaxaError(f"{len(missing)} feature ids are not in {targets_url} (first: {missing[0]!r})")
    order = np.asarray([position[sid] for sid in fids])
    name = resolve_layer(fstore, layer)
    feats = torch.from_numpy(np.ascontiguousarray(fstore.array(name)[:]))
    tgt = np.asarray(tstore.array(target)[:])
    if not np.array_equal(order, np.arange(len(order))):
        tgt = tgt[order]
    return PairedData(feats, torch.from_numpy(tgt), fids, name, fstore, tstore)
