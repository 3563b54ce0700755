"""k-NN patch labelling, layer by layer: the few-shot segmentation test of Vanyan et al. (2024).

No parameters are fitted. The memory bank (maxa.probe.bank.PatchBank, the one the k-NN probe uses too)
holds the patches of n labelled training images, each labelled by the majority class of the label pixels
it covers; every patch of the held-out split takes the vote of its k most cosine-similar bank patches,
weighted by softmax(similarity / T) over the k. Scored as mIoU on the patch
grid and at label resolution (patch votes upsampled), for every stored layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from maxa.core import store as st
from maxa.core.device import resolve_device
from maxa.core.errors import MaxaError
from maxa.core.provenance import FeatureProvenance, TargetProvenance
from maxa.core.sample import IGNORE_INDEX
from maxa.evaluate.intervals import bootstrap
from maxa.evaluate.local import stores
from maxa.evaluate.local.config import KnnConfig
from maxa.evaluate.local.record import metrics_record
from maxa.evaluate.local.similarity import ChannelMoments, kept_dimensions
from maxa.evaluate.metrics import ConfusionMatrix
from maxa.probe.bank import ImagePatches, PatchBank, collect
from maxa.probe.data import StorePair, join_stores
from maxa.probe.patch_labels import patch_labels

__all__ = ["ImageMatrices", "build_bank", "evaluate_knn", "select_shots", "upsample_votes"]


def select_shots(total: int, shots: int | None, seed: int) -> np.ndarray:
    """Sorted indices of the `shots` labelled images (all of them when shots is None), seeded."""
    if shots is None:
        return np.arange(total)
    if shots > total:
        raise MaxaError(f"--shots {shots} exceeds the {total} training images")
    return np.sort(np.random.default_rng(seed).choice(total, size=shots, replace=False))


def build_bank(
    pair: StorePair, rows: np.ndarray, labels: np.ndarray, drop_dims: int, device: torch.device
) -> PatchBank:
    """The one k-NN bank (maxa.probe.bank) of every non-ignored patch of the labelled images `rows`.

    `labels` are their label maps, already read. Keys are the float32 unit features of the channels left
    after dropping the `drop_dims` highest-variance ones (measured on the bank itself); values are the
    patches' class ids. Read shard by shard, so memory peaks at the float16 valid patches plus the bank.
    """
    num_classes = pair.num_classes
    feats, values = collect(
        pair,
        ImagePatches(rows),
        lambda raw, grid: _class_ids(raw, grid, num_classes),
        targets=labels,
    )
    if not len(feats):
        raise MaxaError("the labelled training images have no patch with a valid label")
    moments = ChannelMoments(feats.shape[1])
    for start in range(0, len(feats), 65536):
        moments.update(feats[start : start + 65536])
    keep = kept_dimensions(moments.variance(), drop_dims).to(device)
    return PatchBank.from_features(feats, values, keep=keep, device=device, num_classes=num_classes)


def _class_ids(raw: np.ndarray, grid: tuple[int, int], num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = patch_labels(raw, grid, num_classes)
    return labels, labels != IGNORE_INDEX


def _layer_pair(features: st.Store, targets: st.Store, target_rows: np.ndarray, layer: str) -> StorePair:
    """One layer of the joined training stores, as the bank reads it."""
    h, w, c = (int(v) for v in features.array(layer).shape[1:4])
    label = targets.array("semantic").shape[1:3]
    return StorePair(
        features, targets, [layer], "semantic", target_rows, (h, w, c), (int(label[0]), int(label[1]))
    )


def upsample_votes(votes: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(h, w, C) patch scores -> (H, W) labels: argmax of the scores interpolated to label pixels."""
    x = votes.permute(2, 0, 1).unsqueeze(0)
    if mode == "nearest":
        x = F.interpolate(x, size=size, mode="nearest")
    else:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x[0].argmax(0)


def _scores(patch_cm: ConfusionMatrix, pixel_cm: ConfusionMatrix) -> dict[str, float]:
    return {
        "miou": pixel_cm.miou(),
        "pixel_accuracy": pixel_cm.pixel_accuracy(),
        "patch_miou": patch_cm.miou(),
        "patch_accuracy": patch_cm.pixel_accuracy(),
    }


def constant_baseline(train_labels: np.ndarray, val_labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """Scores of labelling every pixel with the labelled images' most frequent class (the floor)."""
    counts = np.bincount(train_labels[train_labels < num_classes].ravel(), minlength=num_classes)
    cm = ConfusionMatrix(num_classes)
    truth = torch.from_numpy(val_labels)
    cm.update(torch.full_like(truth, int(counts.argmax()), dtype=torch.int64), truth)
    return {"miou": cm.miou(), "pixel_accuracy": cm.pixel_accuracy()}


class ImageMatrices:
    """The label-resolution confusion matrix of each test image: mIoU and pixel accuracy of any multiset of
    the images (what the bootstrap resamples; pooled, like the reported numbers)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrices: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.matrices)

    def prepare(self) -> None:
        self.stack = np.stack(self.matrices).astype(np.float64)

    def compute(self, counts: np.ndarray) -> dict[str, float]:
        cm = ConfusionMatrix(self.num_classes)
        cm.matrix = torch.from_numpy(np.tensordot(counts.astype(np.float64), self.stack, axes=1))
        return {"miou": cm.miou(), "pixel_accuracy": cm.pixel_accuracy()}


def knn_layer(
    bank: PatchBank,
    queries: torch.Tensor,
    labels: np.ndarray,
    config: KnnConfig,
    num_classes: int,
    cms: dict[int, tuple[ConfusionMatrix, ConfusionMatrix]],
    images: ImageMatrices | None = None,
) -> None:
    """Label a batch of query images (N, h, w, C) and add them to the per-k confusion matrices (and, with
    `images`, keep each image's matrix at the smallest k for the bootstrap)."""
    n, h, w, channels = queries.shape
    patch_gt = patch_labels(labels, (h, w), num_classes)
    per_step = max(1, config.query_chunk // (h * w))
    for start in range(0, n, per_step):
        part = queries[start : start + per_step]
        votes = bank.query(
            part.reshape(-1, channels),
            config.k,
            temperature=config.temperature,
            query_chunk=config.query_chunk,
            bank_chunk=config.bank_chunk,
        )
        for k, v in votes.items():
            v = v.view(part.shape[0], h, w, num_classes)
            patch_cm, pixel_cm = cms[k]
            patch_cm.update(v.argmax(-1).cpu(), patch_gt[start : start + per_step])
            size = (labels.shape[1], labels.shape[2])
            for i in range(part.shape[0]):
                pred = upsample_votes(v[i], size, config.upsample).cpu()
                one = ConfusionMatrix(num_classes)
                one.update(pred, torch.from_numpy(labels[start + i]))
                pixel_cm.matrix += one.matrix
                if images is not None and k == config.k[0]:
                    images.matrices.append(one.matrix.numpy())


def evaluate_knn(
    config: KnnConfig,
    train_features_url: str,
    train_targets_url: str,
    features_url: str,
    targets_url: str,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """The per-layer k-NN table for a held-out split, as a metrics record."""
    train_f, train_t, train_rows = join_stores(train_features_url, train_targets_url)
    val_f, val_t, val_rows = join_stores(features_url, targets_url)
    for tstore in (train_t, val_t):
        stores.require_target(tstore, "semantic")
    stores.check_same_backbone(train_f, val_f)
    fprov, train_fprov = FeatureProvenance.of(val_f), FeatureProvenance.of(train_f)
    if train_fprov.dataset.fingerprint == fprov.dataset.fingerprint:
        raise MaxaError(
            f"{train_features_url} and {features_url} hold the same split: the memory bank would contain "
            "every query patch; label a training split and score a held-out one"
        )
    tprov, vprov = TargetProvenance.of(train_t), TargetProvenance.of(val_t)
    if tprov.class_names != vprov.class_names:
        raise MaxaError(
            f"target stores {train_targets_url} and {targets_url} have different classes "
            f"({tprov.class_names} vs {vprov.class_names})"
        )
    num_classes = tprov.num_classes
    layers = stores.select_layers([val_f, train_f], config.layers)
    shots = select_shots(len(train_f), config.shots, config.seed)
    train_labels = train_t.read_rows("semantic", train_rows[shots])
    val_labels = val_t.read_rows("semantic", val_rows)
    device = resolve_device(config.device)

    table: dict[str, dict[str, dict[str, float]]] = {}
    uncertainty: dict[str, Any] = {}
    bank_sizes: dict[str, int] = {}
    per_class: dict[str, Any] = {}
    for name in layers:
        pair = _layer_pair(train_f, train_t, train_rows, name)
        bank = build_bank(pair, shots, train_labels, config.drop_dims, device)
        bank_sizes[name] = len(bank)
        cms = {k: (ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)) for k in config.k}
        images = ImageMatrices(num_classes) if name == layers[-1] else None
        shards = stores.iter_shards(val_f, name)
        for start, stop, block in tqdm(
            shards, total=val_f.num_shards, desc=f"knn {name}", disable=not progress
        ):
            block_labels = val_labels[start:stop]
            knn_layer(bank, torch.from_numpy(block), block_labels, config, num_classes, cms, images)
        if images is not None:
            uncertainty = bootstrap(images)  # the primary layer and k, over test images
        table[name] = {f"k={k}": _scores(*cms[k]) for k in config.k}
        if name == layers[-1]:
            iou = cms[config.k[0]][1].iou()
            names = tprov.class_names
            per_class = {names[i]: (None if np.isnan(v) else float(v)) for i, v in enumerate(iou)}

    primary_layer, primary_k = layers[-1], config.k[0]
    baseline = constant_baseline(train_labels, val_labels, num_classes)
    train_ids = train_f.ids()
    grids = {n: fprov.feature_shapes[n][:2] for n in layers if n in fprov.feature_shapes}
    primary_scores = table[primary_layer][f"k={primary_k}"]
    return metrics_record(
        # the leaderboard reads the primary layer's scores, the floor and the protocol fields as a probe's
        {**stores.provenance_summary(val_f, val_t), "constant_baseline": baseline}
        | {"uncertainty": uncertainty},
        task="knn",
        scores={**primary_scores, "layers": table, "per_class_iou": per_class, "constant_baseline": baseline},
        primary=("miou", primary_scores["miou"], True),
        protocol={
            "method": "cosine k-NN patch labelling (Vanyan et al. 2024)",
            "layer": primary_layer,
            "feature_grid": grids.get(primary_layer),
            "train_samples": len(shots),
            "eval_samples": len(val_f),
            "primary_layer": primary_layer,
            "primary_k": primary_k,
            "k": config.k,
            "layers": layers,
            "shots": config.shots,
            "shot_ids": [train_ids[i] for i in shots] if config.shots is not None else None,
            "train_images": len(shots),
            "bank_patches": bank_sizes,
            "seed": config.seed,
            "drop_dims": config.drop_dims,
            "temperature": config.temperature,
            "upsample": config.upsample,
            "patch_label": "majority vote, ignore-dominated patches dropped",
            "input_size": fprov.to_dict()["input_size"],
            "feature_grids": grids,
            "label_size": list(vprov.label_size),
            "train_dataset": f"{tprov.dataset.name}/{tprov.dataset.split}",
            "eval_images": len(val_f),
        },
    )
