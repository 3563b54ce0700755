"""Video label propagation with cached features: DINO's DAVIS 2017 protocol, scored by J&F.

Facts from DINO's eval_video_segmentation.py (facebookresearch/dino), which this follows:
- the first frame's annotation is resized to the feature grid by nearest neighbour and one-hot
  encoded over the object ids (0 = background);
- frame t is labelled from a context of the first frame and the `n_last_frames` = 7 previous frames,
  whose labels are the *soft* propagated maps (the ground truth only for frame 0);
- affinity = exp(cosine(query patch, context patch) / 0.1), restricted to a square neighbourhood
  of `size_mask_neighborhood` = 12 patches around the query's position (|dy| <= r and |dx| <= r);
- per query patch only the `topk` = 5 largest affinities over all context frames are kept and
  renormalized to sum 1; the label map is their weighted sum of context labels;
- the map is upsampled bilinearly by the patch size (to the network input, line 74), each channel
  min-max normalized (when its max is > 0), argmax, and the id map resized to the annotation's own
  size with PIL's nearest rule (line 80), where davis2017-evaluation scores it.
Frames are fed keeping their aspect ratio (read_frame, lines 197-214: 480x854 -> 480x832): extract the
features with `--input-size 480x832 --norm` and prepare the targets with `--label-size native`, and the
masks scored here (and written with `--masks-dir`) are the reference's, pixel for pixel. DAVIS stores made
otherwise are refused unless `--davis-protocol any` (evaluate/local/dino_protocol.py).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from maxa.core import store as st
from maxa.core.device import resolve_device
from maxa.core.errors import MaxaError
from maxa.core.provenance import NATIVE, FeatureProvenance, TargetProvenance
from maxa.core.sample import Sample
from maxa.evaluate.intervals import GroupedMeans, clipped_bootstrap
from maxa.evaluate.local import dino_protocol, stores
from maxa.evaluate.local.config import PropagationConfig
from maxa.evaluate.local.jf import SequenceScores, score_sequence, statistics, summarize
from maxa.evaluate.local.masks import check_free, read_palette, voc_palette, write_sequence
from maxa.evaluate.local.record import metrics_record
from maxa.probe.bank import unit
from maxa.probe.data import join_stores

VOID = 255
_VIDEO_ID = re.compile(r"^([^-]+)-(.+)-(\d+)$")


def resize_nearest_pil(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) integer ids -> (h, w) with Pillow's nearest-neighbour rule.

    DINO's DAVIS evaluation (eval_video_segmentation.py, lines 80 and 239) resizes label maps with
    PIL's NEAREST, which breaks exact ties between source pixels differently from the targets'
    `resize_nearest` (extract/transforms.py); following it keeps propagated masks pixel-identical to
    the reference.
    """
    h, w = size
    if label.shape == (h, w):
        return label
    if label.min(initial=0) < np.iinfo(np.int32).min or label.max(initial=0) > np.iinfo(np.int32).max:
        raise ValueError(
            f"label ids outside int32 cannot be resized with Pillow: {label.min()}..{label.max()}"
        )
    resized = Image.fromarray(label.astype(np.int32)).resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(resized).astype(label.dtype)


def neighbourhood(h: int, w: int, radius: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(h*w, h*w) bool: key position within `radius` patches of the query position (both axes)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    return ((ys[:, None] - ys[None, :]).abs() <= radius) & ((xs[:, None] - xs[None, :]).abs() <= radius)


def seed_labels(mask: np.ndarray, grid: tuple[int, int], num_labels: int) -> torch.Tensor:
    """(num_labels, h, w) one-hot of the first frame's ids at the feature grid (void counts as background)."""
    small = resize_nearest_pil(mask, grid).astype(np.int64)
    small[(small == VOID) | (small >= num_labels)] = 0
    return F.one_hot(torch.from_numpy(small), num_labels).permute(2, 0, 1).float()


def norm_channels(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalize each (h, w) channel whose maximum is positive (as DINO does before argmax)."""
    flat = maps.reshape(maps.shape[0], -1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    scaled = (flat - low) / (high - low).clamp(min=1e-12)
    return torch.where(high > 0, scaled, flat).reshape(maps.shape)


@torch.no_grad()
def propagate(
    features: torch.Tensor,
    first_mask: np.ndarray,
    *,
    output_size: tuple[int, int] | None = None,
    upsample_size: tuple[int, int] | None = None,
    n_last_frames: int = 7,
    radius: int = 12,
    topk: int = 5,
    temperature: float = 0.1,
) -> np.ndarray:
    """(T, h, w, C) features of one sequence + frame 0's (H, W) id map -> (T, H, W) predicted id maps.

    Soft label maps are upsampled bilinearly to `upsample_size` (DINO: the network input, i.e. the
    grid times the patch size; default `output_size`) and their argmax resized to `output_size`
    (default: the annotation's size) by nearest neighbour. Frame 0 of the result is the given
    annotation; `radius` 0 means no neighbourhood restriction.
    """
    frames, h, w, channels = features.shape
    size = output_size or (int(first_mask.shape[0]), int(first_mask.shape[1]))
    up_size = upsample_size or size
    valid = first_mask[first_mask != VOID]
    num_labels = int(valid.max(initial=0)) + 1
    device = features.device
    feats = unit(features.reshape(frames, h * w, channels))
    mask = neighbourhood(h, w, radius, device) if radius > 0 else None
    context_labels = [seed_labels(first_mask, (h, w), num_labels).reshape(num_labels, -1).to(device)]
    context_feats = [feats[0]]
    out = np.zeros((frames, *size), dtype=np.int64)
    out[0] = resize_nearest_pil(np.where(first_mask == VOID, 0, first_mask), size)
    recent: list[tuple[torch.Tensor, torch.Tensor]] = []
    for t in range(1, frames):
        keys = torch.stack(context_feats + [f for f, _ in recent])  # (n, hw, C)
        labels = torch.cat(context_labels + [lab for _, lab in recent], dim=1)  # (L, n*hw)
        logits = torch.einsum("qc,nkc->qnk", feats[t], keys) / temperature  # (hw queries, n, hw keys)
        if mask is not None:
            logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
        logits = logits.reshape(h * w, -1)
        top, index = torch.topk(logits, min(topk, logits.shape[1]), dim=1)
        weights = torch.softmax(top, dim=1)  # exp(sim/T) renormalized over the kept top-k
        soft = (labels[:, index] * weights[None]).sum(-1)  # (L, hw)
        recent.append((feats[t], soft))
        if len(recent) > n_last_frames:
            recent.pop(0)
        up = F.interpolate(
            soft.reshape(1, num_labels, h, w), size=up_size, mode="bilinear", align_corners=False
        )
        out[t] = resize_nearest_pil(norm_channels(up[0]).argmax(0).cpu().numpy(), size)
    return out


def sequences_from_ids(ids: Sequence[str]) -> dict[str, list[int]]:
    """Rows of each sequence in frame order, from ids `<dataset>-<sequence>-<frame number>`."""
    frames: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for row, sid in enumerate(ids):
        match = _VIDEO_ID.match(sid)
        if match is None:
            raise MaxaError(f"sample id {sid!r} does not name a video frame (<dataset>-<sequence>-<frame>)")
        frames[match.group(2)].append((int(match.group(3)), row))
    return {seq: [row for _, row in sorted(items)] for seq, items in frames.items()}


class FrameReader(Protocol):
    """What propagation asks of the dataset reader behind a target store: its samples in row order (with
    sequence and frame); a DAVIS reader also has `annotation_path(sequence)` (the palettes)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


ReaderOf = Callable[[st.Store], "FrameReader | None"]
"""Rebuilds the reader behind a target store (None when it cannot be rebuilt here). The CLI passes
extract's (maxa.extract.targets.reader_of), so evaluation imports no dataset reader."""


def no_reader(_tstore: st.Store) -> FrameReader | None:
    """The reader of a caller that offers none: frame order then comes from the ids alone."""
    return None


def sequences_from_reader(dataset: FrameReader, rows: np.ndarray, where: str) -> dict[str, list[int]]:
    """Rows of each sequence in frame order, from the Sample.sequence/.frame the reader reports."""
    target_to_feature = {int(t): f for f, t in enumerate(rows)}
    frames: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for index in tqdm(range(len(dataset)), desc="read frame order", disable=len(dataset) < 100):
        sample = dataset[index]
        if sample.sequence is None or sample.frame is None:
            raise MaxaError(f"sample {sample.id!r} of {where} has no sequence/frame: not a video dataset")
        if index in target_to_feature:
            frames[sample.sequence].append((sample.frame, target_to_feature[index]))
    return {seq: [row for _, row in sorted(items)] for seq, items in frames.items()}


def video_sequences(
    fstore: st.Store, tstore: st.Store, rows: np.ndarray, source: str, reader: ReaderOf = no_reader
) -> dict[str, list[int]]:
    """Sequence grouping of the feature rows.

    `ids` parses `<dataset>-<sequence>-<frame>` ids; `reader` asks the dataset reader (decodes every
    sample); `auto` parses the ids and checks the first against the reader when it can be rebuilt
    (an image dataset's ids look like video ids too), falling back to the reader if they disagree.
    """
    if source == "reader":
        dataset = reader(tstore)
        if dataset is None:
            raise MaxaError(f"cannot rebuild the dataset reader of {tstore.url}; use --sequences ids")
        return sequences_from_reader(dataset, rows, tstore.url)
    ids = fstore.ids()
    try:
        groups = sequences_from_ids(ids)
    except MaxaError:
        dataset = reader(tstore) if source == "auto" else None
        if dataset is None:
            raise
        return sequences_from_reader(dataset, rows, tstore.url)
    dataset = reader(tstore) if source == "auto" else None
    if dataset is not None and len(ids):
        sample = dataset[int(rows[0])]
        match = _VIDEO_ID.match(ids[0])
        assert match is not None
        if sample.sequence is None:
            raise MaxaError(
                f"sample {sample.id!r} of {tstore.url} has no sequence/frame: not a video dataset"
            )
        if (sample.sequence, sample.frame) != (match.group(2), int(match.group(3))):
            return sequences_from_reader(dataset, rows, tstore.url)
    return groups


def upsample_size(grid: tuple[int, int], input_size: Sequence[int]) -> tuple[int, int]:
    """The grid times the feature stride: DINO's `scale_factor=patch_size` (the network input for a ViT)."""
    return grid[0] * max(1, int(input_size[0]) // grid[0]), grid[1] * max(1, int(input_size[1]) // grid[1])


def frame_names(ids: Sequence[str]) -> list[str]:
    """PNG names of a sequence's frames: the frame number of `<dataset>-<sequence>-<frame>` ids as
    written (DAVIS: `00000`), else the 0-based position, zero-padded to five digits."""
    names = []
    for position, sid in enumerate(ids):
        match = _VIDEO_ID.match(sid)
        names.append(match.group(3) if match else f"{position:05d}")
    return names


def _palette_source(dataset: FrameReader | None) -> Callable[[str], list[int]]:
    """Palette per sequence: its first annotation's when the reader has annotation files, else VOC's."""
    if dataset is None or not hasattr(dataset, "annotation_path"):
        return lambda _sequence: voc_palette()
    return lambda sequence: read_palette(dataset.annotation_path(sequence))


def video_bootstrap(scored: Sequence[SequenceScores]) -> dict[str, Any]:
    """Intervals of J-Mean, F-Mean and J&F-Mean: a percentile bootstrap over videos (each drawn video
    brings all its objects), each resample's numbers the mean over the drawn objects, as summarize()'s."""
    per_object = [
        (i, statistics(s.j[o])[0], statistics(s.f[o])[0])
        for i, s in enumerate(scored)
        for o in range(len(s.j))
    ]
    units, j, f = (np.asarray(column, np.float64) for column in zip(*per_object, strict=True))
    values = {"J-Mean": j, "F-Mean": f, "J&F-Mean": (j + f) / 2}
    return clipped_bootstrap(GroupedMeans(values, units))


def evaluate_propagation(
    config: PropagationConfig,
    features_url: str,
    targets_url: str,
    *,
    reader: ReaderOf = no_reader,
    progress: bool = True,
) -> dict[str, Any]:
    """Propagate frame 0's instance annotation through every sequence and score it with J&F.

    With `config.masks_dir`, every sequence's masks are also written there as DAVIS-format PNGs.
    `reader` rebuilds the dataset reader behind the target store (frame order, palettes).
    """
    fstore, tstore, rows = join_stores(features_url, targets_url)
    stores.require_target(tstore, "instances")
    followed = dino_protocol.record(fstore, tstore)
    if followed["davis_protocol"] == "differs" and config.davis_protocol == "dino":
        raise MaxaError(
            f"{features_url} + {targets_url} are not made as DINO evaluates DAVIS: "
            f"{'; '.join(followed['davis_protocol_differences'])}; make them with "
            f"{dino_protocol.commands(fstore, tstore)}, or pass --davis-protocol any to score these"
        )
    layer = stores.select_layers([fstore], [config.layer])[0]
    groups = video_sequences(fstore, tstore, rows, config.sequences, reader)
    device = resolve_device(config.device)
    fprov, tprov = FeatureProvenance.of(fstore), TargetProvenance.of(tstore)
    masks_dir = Path(config.masks_dir) if config.masks_dir else None
    palette = _palette_source(reader(tstore) if masks_dir is not None else None)
    ids = fstore.ids()
    if masks_dir is not None:
        for name in groups:
            check_free(masks_dir / name)
    grid = tuple(fstore.array(layer).shape[1:3])
    up_size = upsample_size(
        (int(grid[0]), int(grid[1])), fprov.need("input_size", f"feature store {fstore.url}")
    )
    scored, static = [], []
    for name, seq_rows in tqdm(sorted(groups.items()), desc="propagate", disable=not progress):
        if len(seq_rows) < 3:
            raise MaxaError(f"sequence {name!r} has {len(seq_rows)} frames; J&F needs at least 3")
        feats = torch.from_numpy(fstore.read_rows(layer, seq_rows)).to(device)
        gt = tstore.read_rows("instances", rows[seq_rows]).astype(np.int64)
        pred = propagate(
            feats,
            gt[0],
            output_size=(gt.shape[1], gt.shape[2]),
            upsample_size=up_size,
            n_last_frames=config.n_last_frames,
            radius=config.radius,
            topk=config.topk,
            temperature=config.temperature,
        )
        if masks_dir is not None:
            write_sequence(masks_dir / name, frame_names([ids[r] for r in seq_rows]), pred, palette(name))
        truth = np.where(gt == VOID, 0, gt)
        scored.append(score_sequence(name, truth, pred, bound_th=config.bound_th))
        # The floor a tracker must beat: frame 0's annotation copied to every frame.
        static.append(
            score_sequence(name, truth, np.repeat(truth[:1], len(truth), 0), bound_th=config.bound_th)
        )
    summary = summarize(scored)
    if not summary.per_object:
        raise MaxaError(
            f"no object in the first frame of any sequence of {targets_url}: is it a video split?"
        )
    return metrics_record(
        {**stores.provenance_summary(fstore, tstore), "uncertainty": video_bootstrap(scored)},
        task="propagation",
        scores={
            **summary.scores,
            "static_baseline": summarize(static).scores,
            "per_object": summary.per_object,
        },
        primary=("J&F-Mean", summary.scores["J&F-Mean"], True),
        protocol={
            "method": "DINO label propagation (eval_video_segmentation.py), DAVIS 2017 J&F",
            "layer": layer,
            "n_last_frames": config.n_last_frames,
            "size_mask_neighborhood": config.radius,
            "topk": config.topk,
            "temperature": config.temperature,
            "bound_th": config.bound_th,
            "sequence_order": config.sequences,
            "frames_scored": "all but the first and last of each sequence (davis2017-evaluation)",
            "sequences": len(groups),
            "objects": len(summary.per_object),
            "input_size": fprov.to_dict()["input_size"],
            "feature_grid": list(grid),
            "upsampled_to": list(up_size),
            "label_size": list(tprov.label_size),
            "scored_at_native_resolution": tprov.label_resolution == NATIVE,
            "norm": bool(fprov.norm),
            **followed,
            "masks_dir": str(masks_dir) if masks_dir is not None else None,
        },
    )
