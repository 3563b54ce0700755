"""Qualitative panels: image | ground truth | each backbone's prediction, for the first held-out images.

Predictions come from the trained adapters run on the cached features (no backbone runs): the checkpoint
is rebuilt with `load_checkpoint`, fed the stored patch features of the first few held-out samples, and
decoded with the task's own `predict`. Only those few rows are read from the stores. Dense predictions
are drawn as maps (classes, instance ids, boundary probability, depth); box predictions (object centres)
are drawn on the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maxa.core import store as st
from maxa.core.checkpoint_meta import CheckpointMeta
from maxa.core.errors import MaxaError
from maxa.core.labels import instance_boxes
from maxa.core.provenance import TargetProvenance
from maxa.core.sample import IGNORE_INDEX
from maxa.evaluate.plots import new_figure, save, slug

MAX_BOXES = 20
Boxes = list[tuple[np.ndarray, np.ndarray]]  # per image: (k, 4) xyxy boxes in label pixels, (k,) scores


@dataclass
class Source:
    """One trained adapter and the held-out feature store it reads."""

    label: str
    checkpoint: Path
    features_url: str


@dataclass
class Panel:
    """What a panel shows: previews, ground truth and one prediction (or a note why not) per source."""

    task: str
    target: str
    ids: list[str]
    images: np.ndarray | None
    truth: np.ndarray
    class_names: list[str]
    predictions: dict[str, np.ndarray | Boxes | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def boxes(self) -> bool:
        return any(isinstance(p, list) for p in self.predictions.values())


def rows_of(store: st.Store, ids: list[str]) -> np.ndarray:
    position = {sid: i for i, sid in enumerate(store.ids())}
    missing = [sid for sid in ids if sid not in position]
    if missing:
        raise MaxaError(f"store {store.url} has no sample {missing[0]!r}")
    return np.asarray([position[sid] for sid in ids], np.int64)


def read_rows(store: st.Store, name: str, ids: list[str]) -> np.ndarray:
    """Rows of one array for the given sample ids, through the store's one row reader (Store.read_rows)."""
    return store.read_rows(name, rows_of(store, ids))


def read_features(store: st.Store, layers: Any, ids: list[str]) -> tuple[list[str], np.ndarray]:
    """(layer names, float32 (n, h, w, C)) of `ids`; several layers concatenated as probes read them."""
    from maxa.probe.data import resolve_layers

    names = resolve_layers(store, layers)
    blocks = [read_rows(store, name, ids) for name in names]
    return names, np.concatenate(blocks, axis=-1).astype(np.float32)


def task_of(meta: CheckpointMeta) -> Any:
    from maxa.probe.tasks import get_task

    return get_task(meta.task, **(meta.task_options or {}))


def decode(prediction: Any) -> np.ndarray | Boxes:
    """A task's `predict` output -> (n, H, W) map, or per-image boxes for detection tasks."""
    import torch

    if isinstance(prediction, list | tuple) and all(isinstance(p, tuple | list) for p in prediction):
        boxes: Boxes = []
        for item in prediction:
            found, scores = (np.asarray(t.cpu() if isinstance(t, torch.Tensor) else t) for t in item[:2])
            keep = np.argsort(-scores.ravel(), kind="stable")[:MAX_BOXES]  # best first
            boxes.append((found.reshape(-1, 4)[keep], scores.ravel()[keep]))
        return boxes
    if not isinstance(prediction, torch.Tensor):
        raise MaxaError(f"prediction of type {type(prediction).__name__} is not a map or boxes")
    if prediction.ndim == 4:
        # One channel: squeeze; several (e.g. instance-id probabilities): the most likely channel.
        prediction = prediction[:, 0] if prediction.shape[1] == 1 else prediction.argmax(dim=1)
    if prediction.ndim != 3:
        raise MaxaError(f"prediction of shape {tuple(prediction.shape)} is not (N, H, W)")
    return prediction.float().cpu().numpy() if prediction.is_floating_point() else prediction.cpu().numpy()


def predict(source: Source, ids: list[str], output_size: tuple[int, int]) -> np.ndarray | Boxes:
    """Decoded predictions of one checkpoint on the stored features of `ids`."""
    import torch

    from maxa.probe.checkpoint import load_checkpoint

    model, meta = load_checkpoint(str(source.checkpoint), "cpu")
    task = task_of(meta)
    fstore = st.open_store(source.features_url, "features")
    _, features = read_features(fstore, meta.layers, ids)
    with torch.inference_mode():
        return decode(task.predict(model(torch.from_numpy(features), output_size=output_size)))


def build_panel(task: str, sources: list[Source], targets_url: str, count: int) -> Panel:
    """Read previews and ground truth, and run every source; a source that fails gets a note instead."""
    from maxa.probe.tasks import get_task

    target = get_task(task).target
    tstore = st.open_store(targets_url, "targets")
    if target not in tstore.array_names():
        raise MaxaError(f"target store {targets_url} has no {target!r} target for task {task!r}")
    ids = tstore.ids()[:count]
    truth = read_rows(tstore, target, ids)
    panel = Panel(
        task=task,
        target=target,
        ids=ids,
        images=read_rows(tstore, "image", ids) if "image" in tstore.array_names() else None,
        truth=truth,
        class_names=TargetProvenance.of(tstore).class_names,
    )
    size = (int(truth.shape[1]), int(truth.shape[2]))
    for source in sources:
        try:
            panel.predictions[source.label] = predict(source, ids, size)
        except MaxaError as exc:
            panel.predictions[source.label] = None
            panel.notes[source.label] = str(exc)
    return panel


# ------------------------------------------------------------------ rendering


@dataclass
class Style:
    """How a map is drawn: a categorical palette (with legend names) or a continuous colour map."""

    kind: str  # classes | ids | binary | continuous
    cmap: Any
    vmin: float
    vmax: float
    legend: dict[int, str] = field(default_factory=dict)
    colorbar: str | None = None
    mask_nonpositive: bool = False  # depth: 0 marks invalid ground truth


def class_palette(num_classes: int) -> Any:
    """tab20 with its dark shades first, so the first ten classes differ most; more classes cycle."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    base = [colormaps["tab20"](i) for i in range(20)]
    ordered = list(base[0::2]) + list(base[1::2])
    return ListedColormap([ordered[i % len(ordered)] for i in range(max(num_classes, 1))]).with_extremes(
        bad="black"
    )


def style_for(panel: Panel) -> Style:
    """Colour scheme by target kind: classes (tab20), instance ids, boundaries, depth (magma), other."""
    from matplotlib import colormaps

    maps = [panel.truth] + [p for p in panel.predictions.values() if isinstance(p, np.ndarray)]
    if panel.target == "semantic":
        n = max(len(panel.class_names), 1)
        present = sorted({int(v) for m in maps for v in np.unique(m) if 0 <= int(v) < n})
        legend = {i: panel.class_names[i] if i < len(panel.class_names) else str(i) for i in present}
        return Style("classes", class_palette(n), -0.5, n - 0.5, legend=legend)
    if panel.target == "depth":
        valid = panel.truth[panel.truth > 0]
        low, high = np.percentile(valid, [2, 98]) if valid.size else (0.0, 1.0)
        cmap = colormaps["magma_r"].with_extremes(bad="0.6")
        high = max(float(high), float(low) + 1e-6)
        return Style(
            "continuous", cmap, float(low), high, colorbar="depth (m); grey: invalid", mask_nonpositive=True
        )
    if panel.target == "boundary":
        return Style("binary", colormaps["gray_r"], 0.0, 1.0, colorbar="boundary probability")
    if panel.target == "instances" or np.issubdtype(panel.truth.dtype, np.integer):
        return Style("ids", class_palette(20), -0.5, 19.5)
    low, high = float(np.nanmin(panel.truth)), float(np.nanmax(panel.truth))
    return Style("continuous", colormaps["viridis"], low, max(high, low + 1e-6), colorbar="value")


def prepare(array: np.ndarray, style: Style) -> np.ndarray:
    """Mask what is not drawn (ignore labels, invalid depth, no instance) and fold ids into the palette."""
    data = np.asarray(array)
    if style.kind == "classes":
        return np.ma.masked_where(data == IGNORE_INDEX, data)
    if style.kind == "ids":
        # Instance ids are arbitrary labels: id k gets palette entry (k - 1) mod 20; 0 (none) is black.
        ids = data.astype(np.int64)
        return np.ma.masked_where(ids <= 0, (ids - 1) % 20)
    if style.mask_nonpositive:
        return np.ma.masked_where(~(data > 0), data.astype(np.float32))
    return data


def _draw_boxes(
    ax: Any,
    image: np.ndarray | None,
    boxes: np.ndarray,
    shape: tuple[int, int],
    color: str,
    scores: np.ndarray | None = None,
) -> None:
    from matplotlib.patches import Rectangle

    ax.imshow(image if image is not None else np.full((*shape, 3), 255, np.uint8), interpolation="bilinear")
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        ax.add_patch(
            Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color=color, linewidth=1.2)
        )
        if scores is not None:
            style = {"facecolor": color, "pad": 0.8, "linewidth": 0, "alpha": 0.8}
            ax.text(x0, y0, f"{scores[k]:.2f}", color="white", fontsize=5, va="bottom", bbox=style)
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(shape[0] - 0.5, -0.5)


def render_panel(panel: Panel, path: Path) -> Path:
    from matplotlib.patches import Patch

    style = style_for(panel)
    columns = ["image", "ground truth", *panel.predictions]
    n = len(panel.ids)
    fig = new_figure(1.9 * len(columns) + (0.9 if style.colorbar and not panel.boxes else 0.0), 1.9 * n + 0.9)
    axes = fig.subplots(n, len(columns), squeeze=False)
    shown = None
    shape = (int(panel.truth.shape[1]), int(panel.truth.shape[2]))
    for i in range(n):
        image = panel.images[i] if panel.images is not None else None
        for j, name in enumerate(columns):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
            if j == 0:
                ax.set_ylabel(panel.ids[i], fontsize=7)
                if image is not None:
                    ax.imshow(image, interpolation="bilinear")
                continue
            prediction = None if j == 1 else panel.predictions[name]
            if j > 1 and prediction is None:
                ax.text(
                    0.5, 0.5, "no prediction", ha="center", va="center", fontsize=8, transform=ax.transAxes
                )
            elif panel.boxes:
                truth = instance_boxes(panel.truth[i])
                if isinstance(prediction, list):
                    # As many boxes as there are objects: the detections AP would rank first.
                    found, scores = prediction[i]
                    top = max(len(truth), 1)
                    _draw_boxes(ax, image, found[:top], shape, "red", scores[:top])
                else:
                    _draw_boxes(ax, image, truth, shape, "lime")
            else:
                array = prediction[i] if isinstance(prediction, np.ndarray) else panel.truth[i]
                shown = ax.imshow(
                    prepare(array, style),
                    cmap=style.cmap,
                    vmin=style.vmin,
                    vmax=style.vmax,
                    interpolation="nearest",
                )
    title = f"{panel.task}: held-out images, ground truth and predictions"
    if panel.boxes:
        title = f"{panel.task}: ground truth and top-scoring boxes (as many as objects)"
    fig.suptitle(title, fontsize=10)
    if style.legend and not panel.boxes:
        handles = [Patch(color=style.cmap(k), label=name) for k, name in style.legend.items()]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8)
    if style.colorbar and shown is not None:
        fig.colorbar(shown, ax=axes[:, 1:], label=style.colorbar, shrink=0.8)
    if panel.notes:
        note = "; ".join(f"{k}: {v}" for k, v in panel.notes.items())
        fig.text(0.01, 0.0, note[:200], fontsize=6, color="0.4")
    return save(fig, path)


def qualitative_panel(
    task: str, sources: list[Source], targets_url: str, out_dir: Path, count: int = 4
) -> Path:
    """Write `qualitative_<task>.png` for the first `count` samples of the held-out target store."""
    panel = build_panel(task, sources, targets_url, count)
    return render_panel(panel, out_dir / f"qualitative_{slug(task)}.png")
