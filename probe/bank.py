"""The one k-NN memory bank of training patches: sampled from a store, normalized, queried in bounded memory.

Both k-NN users build it, each with its own settings:

- the k-NN baseline adapter (`maxa probe --adapter knn`, maxa.probe.knn) samples `UniformPatches` (up to
  N patches drawn uniformly with a seed), keeps float16 keys and per-patch value vectors (one-hot classes
  or depth) and answers with the plain mean of the k neighbours' values;
- the few-shot patch labelling test (`maxa local knn`, maxa.evaluate.local.knn) samples `ImagePatches`
  (every patch of the chosen images), keeps float32 keys restricted to the channels it keeps and class ids,
  and answers with class votes weighted by softmax(similarity / T).

Patches whose label is invalid (ignore-dominated, no valid depth) never enter a bank. Keys are unit rows, so
cosine similarity is a dot product; top-k search holds at most `query_chunk x bank_chunk` similarities.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from maxa.probe.data import StorePair
from maxa.probe.loader import rows_by_shard, sequential_blocks

SIMILARITY_BUDGET = 2**25
"""Query x bank similarities held at once when no query chunk is given (128 MiB of float32)."""
BANK_CHUNK = 65536
"""Bank rows per similarity block (and per normalization step) unless a caller says otherwise."""

PatchValues = Callable[[np.ndarray, tuple[int, int]], tuple[Tensor, Tensor]]
"""Raw target maps (n, H, W) and the feature grid (h, w) -> per-patch values (n, h, w, V) float or
(n, h, w) class ids, and the (n, h, w) mask of patches whose value is valid."""

Block = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(feature-store rows, their features (n, h, w, C), their raw target maps (n, H, W))."""


@dataclass(frozen=True)
class UniformPatches:
    """Up to `size` patches drawn uniformly without replacement (seeded) from every patch of the store.

    Draws whose label is invalid are then dropped, so the bank may hold fewer than `size`.
    """

    size: int
    seed: int

    def draw(self, num_items: int, cells: int) -> np.ndarray:
        """Sorted flat patch indices (row * cells + cell) of the drawn patches."""
        total = num_items * cells
        return np.sort(
            np.random.default_rng(self.seed).choice(total, size=min(self.size, total), replace=False)
        )


@dataclass(frozen=True)
class ImagePatches:
    """Every patch of the images `rows` (feature-store rows, in the order given)."""

    rows: np.ndarray = field(compare=False)


Sampling = UniformPatches | ImagePatches


def unit(x: Tensor, keep: Tensor | None = None) -> Tensor:
    """float32 unit rows along the last axis, restricted to the `keep` channels first."""
    x = x.float()
    if keep is not None:
        x = x.index_select(-1, keep.to(x.device))
    return F.normalize(x, dim=-1)


def topk_cosine(
    queries: Tensor, keys: Tensor, k: int, *, bank_chunk: int = BANK_CHUNK
) -> tuple[Tensor, Tensor]:
    """Top-k similarities and key indices per query row (unit rows in, best first).

    The similarity matrix is only ever held for `bank_chunk` key rows at a time (converted to float32
    chunk by chunk); the running top-k is merged chunk by chunk, so memory is O(queries x (bank_chunk + k)).
    """
    k = min(k, keys.shape[0])
    best_sim = torch.zeros((queries.shape[0], 0), device=queries.device)
    best_idx = torch.zeros((queries.shape[0], 0), dtype=torch.int64, device=queries.device)
    for start in range(0, keys.shape[0], bank_chunk):
        sims = queries @ keys[start : start + bank_chunk].float().T
        sim, idx = torch.topk(sims, min(k, sims.shape[1]), dim=1)
        if start == 0:
            best_sim, best_idx = sim, idx
            continue
        merged_sim = torch.cat([best_sim, sim], dim=1)
        merged_idx = torch.cat([best_idx, idx + start], dim=1)
        best_sim, order = torch.topk(merged_sim, min(k, merged_sim.shape[1]), dim=1)
        best_idx = torch.gather(merged_idx, 1, order)
    return best_sim, best_idx


def aggregate(
    values: Tensor,
    sim: Tensor,
    idx: Tensor,
    k: int,
    *,
    temperature: float | None = None,
    num_classes: int | None = None,
) -> Tensor:
    """(Q, V) answer of each query from its k nearest bank rows (`sim`, `idx`: best first, >= k columns).

    temperature None: the plain mean of their values; else their sum weighted by softmax(sim / T) over
    the k (DINO's k-NN classifier weighting, T = 0.07 there). Class-id values (N,) count as one-hot rows
    of `num_classes`, so the answer is the (weighted) vote fraction of each class, summing to 1.
    """
    kk = min(k, idx.shape[1])
    nearest = idx[:, :kk]
    weights = None if temperature is None else torch.softmax(sim[:, :kk] / temperature, dim=1)
    if values.is_floating_point():
        if weights is None:
            return values[nearest].mean(dim=1)
        return (weights.unsqueeze(-1) * values[nearest]).sum(dim=1)
    if num_classes is None:
        raise ValueError("class-id values need num_classes")
    if weights is None:
        weights = torch.full(nearest.shape, 1.0 / max(kk, 1), device=sim.device)
    votes = torch.zeros(sim.shape[0], num_classes, device=sim.device)
    return votes.scatter_add_(1, values[nearest], weights)


class PatchBank(nn.Module):
    """Unit-norm keys (N, C'), their values ((N, V) float or (N,) class ids) and the channels kept.

    `keys` and `values` are buffers (a checkpoint's state dict holds them; `.to(device)` moves them);
    `keep` (channel indices of the features the keys were made from, or None for all) is not saved.
    """

    keys: Tensor
    values: Tensor
    keep: Tensor | None

    def __init__(
        self, keys: Tensor, values: Tensor, *, keep: Tensor | None = None, num_classes: int | None = None
    ):
        super().__init__()
        self.register_buffer("keys", keys)
        self.register_buffer("values", values)
        self.register_buffer("keep", keep, persistent=False)
        self.num_classes = num_classes

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    @classmethod
    def from_features(
        cls,
        features: Tensor,
        values: Tensor,
        *,
        keep: Tensor | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        num_classes: int | None = None,
    ) -> PatchBank:
        """A bank of raw features (normalized here, `BANK_CHUNK` rows at a time) and their values."""
        bank = cls(torch.zeros(0, 0, dtype=dtype), torch.zeros(0), keep=keep, num_classes=num_classes)
        bank.fill(features, values.to(device), device=device)
        return bank

    def fill(self, features: Tensor, values: Tensor, *, device: torch.device | str | None = None) -> None:
        """Replace the contents: raw features (N, C) -> unit keys in the bank's key dtype; values as given."""
        device = self.keys.device if device is None else torch.device(device)
        width = features.shape[1] if self.keep is None else len(self.keep)
        keys = torch.empty(features.shape[0], width, dtype=self.keys.dtype, device=device)
        for start in range(0, features.shape[0], BANK_CHUNK):
            keys[start : start + BANK_CHUNK] = unit(
                features[start : start + BANK_CHUNK].to(device), self.keep
            )
        self.keys, self.values = keys, values
        if self.keep is not None:
            self.keep = self.keep.to(device)

    def topk(self, queries: Tensor, k: int, *, bank_chunk: int = BANK_CHUNK) -> tuple[Tensor, Tensor]:
        """Raw query features (Q, C) -> top-k (similarities, bank indices), best first, in one block."""
        q = unit(queries.to(self.keys.device), self.keep)
        return topk_cosine(q, self.keys, k, bank_chunk=bank_chunk)

    def query(
        self,
        queries: Tensor,
        ks: Sequence[int],
        *,
        temperature: float | None = None,
        query_chunk: int | None = None,
        bank_chunk: int = BANK_CHUNK,
    ) -> dict[int, Tensor]:
        """Raw query features (Q, C) -> {k: (Q, V) aggregate of the k nearest}, one search for all ks.

        `temperature` None: the mean of the neighbours' values; else softmax(sim / T)-weighted (see
        `aggregate`). Queries are searched `query_chunk` at a time (default: as many as SIMILARITY_BUDGET
        allows against one bank chunk), so at most query_chunk x bank_chunk similarities are held.
        """
        if query_chunk is None:
            query_chunk = max(1, SIMILARITY_BUDGET // max(1, min(len(self), bank_chunk)))
        parts: dict[int, list[Tensor]] = {k: [] for k in ks}
        for start in range(0, queries.shape[0], query_chunk):
            sim, idx = self.topk(queries[start : start + query_chunk], max(ks), bank_chunk=bank_chunk)
            for k in ks:
                parts[k].append(
                    aggregate(self.values, sim, idx, k, temperature=temperature, num_classes=self.num_classes)
                )
        width = (self.num_classes or 0,) if not self.values.is_floating_point() else self.values.shape[1:]
        empty = torch.zeros(0, *width, device=self.keys.device)
        return {k: torch.cat(p) if len(p) > 1 else (p[0] if p else empty) for k, p in parts.items()}


def pair_blocks(
    pair: StorePair, rows: np.ndarray | None = None, targets: np.ndarray | None = None
) -> Iterator[Block]:
    """The pair's rows as blocks: all of them in store order, shard by shard (the next read ahead), or only
    `rows`, grouped by feature shard (in the order given within a shard). `targets`: the raw target maps of
    `rows`, already read (they are then not read again)."""
    if rows is None:
        for (start, stop), (feats, raw) in zip(pair.shard_ranges(), sequential_blocks(pair), strict=True):
            assert feats is not None
            yield np.arange(start, stop), feats, raw
        return
    for picked, feats, raw in rows_by_shard(pair, rows, targets=targets):
        assert feats is not None
        yield picked, feats, raw


def collect(
    pair: StorePair,
    sampling: Sampling,
    patch_values: PatchValues,
    *,
    targets: np.ndarray | None = None,
    progress: bool = False,
    desc: str = "k-NN bank",
) -> tuple[Tensor, Tensor]:
    """Raw features (N, C) and values of the sampled patches whose value is valid, in reading order
    (values of shape (0,) when no block was read).

    One pass: `UniformPatches` reads every shard once, `ImagePatches` only its images' rows (with
    `targets`, their raw target maps already read). Memory: the kept patches plus one block.
    """
    h, w, c = pair.feature_shape
    cells = h * w
    if isinstance(sampling, UniformPatches):
        chosen = sampling.draw(len(pair), cells)
        blocks, total = pair_blocks(pair), len(pair.shard_ranges())
    else:
        rows = np.asarray(sampling.rows, np.int64)
        blocks = pair_blocks(pair, rows, targets)
        total = len(np.unique(rows // pair.features.shard_size))
    keys: list[Tensor] = []
    values: list[Tensor] = []
    for rows_read, feats, raw in tqdm(blocks, total=total, desc=desc, disable=not progress):
        block_values, valid = patch_values(raw, (h, w))
        flat_feats = np.asarray(feats).reshape(-1, c)
        flat_values = block_values.reshape(len(rows_read) * cells, *block_values.shape[3:])
        flat_valid = valid.reshape(-1)
        if isinstance(sampling, UniformPatches):
            lo, hi = int(rows_read[0]) * cells, (int(rows_read[-1]) + 1) * cells
            picked = chosen[(chosen >= lo) & (chosen < hi)] - lo
            flat_feats, flat_values, flat_valid = flat_feats[picked], flat_values[picked], flat_valid[picked]
        keys.append(torch.from_numpy(flat_feats)[flat_valid])
        values.append(flat_values[flat_valid])
    if not keys:  # nothing was read
        return torch.zeros(0, c, dtype=torch.float16), torch.zeros(0)
    return torch.cat(keys), torch.cat(values)
