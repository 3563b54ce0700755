"""Tests for evaluate/qualitative.py (image | truth | prediction panels) and evaluate/pca.py's figure,
on tiny real stores: a synthetic split, a random-init ViT's features and a briefly trained adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maxa.core.errors import MaxaError
from maxa.core.sample import IGNORE_INDEX
from maxa.evaluate.pca import FeatureSource, pca_figure
from maxa.evaluate.qualitative import (
    Panel,
    Source,
    build_panel,
    decode,
    prepare,
    qualitative_panel,
    render_panel,
    style_for,
)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from maxa.extract.config import ExtractConfig
    from maxa.extract.features import extract
    from maxa.extract.targets import PrepareConfig
    from maxa.extract.targets import prepare as prepare_targets
    from maxa.probe.train import ProbeConfig, train

    root = tmp_path_factory.mktemp("qualitative")
    # One held-out split; the adapter is fitted on it too (a panel only needs some trained adapter).
    options = {"num_images": 8, "image_size": 64, "num_classes": 3}
    prepare_targets(
        PrepareConfig(split="val", label_size=16, shard_size=8, options=options),
        str(root / "targets/val.zarr"),
    )
    backbone = ExtractConfig(model="vit_tiny_patch16_224", input_size=64, batch_size=8, shard_size=8)
    extract(backbone, str(root / "targets/val.zarr"), str(root / "features/val.zarr"), progress=False)
    probe = ProbeConfig(task="semantic", iterations=3, batch_size=8, query_grid=4, device="cpu")
    train(
        probe,
        str(root / "features/val.zarr"),
        str(root / "targets/val.zarr"),
        str(root / "m.pt"),
        progress=False,
    )
    return root


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.heavy
def test_panel_predictions_match_the_probe_reader(stores: Path) -> None:
    from maxa.probe.data import open_pair
    from maxa.probe.tasks import get_task
    from maxa.probe.train import load_checkpoint

    source = Source("vit", stores / "m.pt", str(stores / "features/val.zarr"))
    panel = build_panel("semantic", [source], str(stores / "targets/val.zarr"), count=3)
    assert panel.ids == ["synthetic-val-000000", "synthetic-val-000001", "synthetic-val-000002"]
    assert (
        panel.truth.shape == (3, 16, 16) and panel.images is not None and panel.images.shape == (3, 16, 16, 3)
    )
    assert panel.class_names[0] == "background" and not panel.notes

    model, meta = load_checkpoint(str(stores / "m.pt"))
    pair = open_pair(
        str(stores / "features/val.zarr"), str(stores / "targets/val.zarr"), meta.layers, "semantic"
    )
    with torch.inference_mode():
        logits = model(torch.from_numpy(pair.read_features(0, 3)).float(), output_size=(16, 16))
    expected = get_task("semantic").predict(logits).numpy()
    np.testing.assert_array_equal(panel.predictions["vit"], expected)
    np.testing.assert_array_equal(panel.truth, pair.read_targets(0, 3))


def test_panel_png_and_failed_source_noted(stores: Path, tmp_path: Path) -> None:
    sources = [
        Source("vit", stores / "m.pt", str(stores / "features/val.zarr")),
        Source("missing", tmp_path / "absent.pt", str(stores / "features/val.zarr")),
    ]
    path = qualitative_panel("semantic", sources, str(stores / "targets/val.zarr"), tmp_path, count=2)
    assert path.name == "qualitative_semantic.png"
    pixels = _png(path)
    assert pixels.shape[1] > pixels.shape[0] * 1.2  # four columns, two rows
    panel = build_panel("semantic", sources, str(stores / "targets/val.zarr"), count=2)
    assert panel.predictions["missing"] is None and "absent.pt" in panel.notes["missing"]


def test_panel_refuses_target_store_without_the_target(stores: Path, tmp_path: Path) -> None:
    with pytest.raises(MaxaError, match="unknown task"):
        build_panel("semantics", [], str(stores / "targets/val.zarr"), 2)


@pytest.mark.heavy
def test_pca_figure_rows_per_backbone(stores: Path, tmp_path: Path) -> None:
    one = pca_figure(
        [FeatureSource("vit", str(stores / "features/val.zarr"))],
        str(stores / "targets/val.zarr"),
        tmp_path / "a.png",
        3,
    )
    two = pca_figure(
        [FeatureSource("vit", str(stores / "features/val.zarr"), "-1")] * 2, None, tmp_path / "b.png", 3
    )
    # Image row + one PCA row, versus two PCA rows and no image row: same height, same width.
    assert _png(one).shape == _png(two).shape
    three = pca_figure(
        [FeatureSource("vit", str(stores / "features/val.zarr"))] * 2,
        str(stores / "targets/val.zarr"),
        tmp_path / "c.png",
        3,
    )
    assert _png(three).shape[0] > _png(one).shape[0]


# ------------------------------------------------------------------ decoding and drawing (no stores)


def test_decode_maps_and_boxes() -> None:
    probs = torch.zeros(2, 3, 4, 4)
    probs[:, 2, :2] = 1.0
    ids = decode(probs)
    assert isinstance(ids, np.ndarray) and ids.shape == (2, 4, 4)
    assert (ids[:, :2] == 2).all() and (ids[:, 2:] == 0).all()
    depth = decode(torch.full((2, 1, 4, 4), 3.0))
    assert isinstance(depth, np.ndarray) and depth.shape == (2, 4, 4) and depth.dtype == np.float32
    boxes = decode(
        [(torch.tensor([[0, 0, 2, 2], [1, 1, 3, 3], [0, 0, 1, 1]]), torch.tensor([0.2, 0.9, 0.5]))]
    )
    assert isinstance(boxes, list) and len(boxes) == 1
    np.testing.assert_array_equal(boxes[0][0], [[1, 1, 3, 3], [0, 0, 1, 1], [0, 0, 2, 2]])  # best first
    np.testing.assert_allclose(boxes[0][1], [0.9, 0.5, 0.2])
    with pytest.raises(MaxaError, match="not"):
        decode(torch.zeros(4))
    with pytest.raises(MaxaError, match="not a map or boxes"):
        decode({"a": 1})


def _panel(target: str, truth: np.ndarray, prediction: object) -> Panel:
    n = truth.shape[0]
    images = np.zeros((n, *truth.shape[1:], 3), np.uint8)
    return Panel(
        target, target, [f"s{i}" for i in range(n)], images, truth, ["bg", "a", "b"], {"vit": prediction}
    )


def test_styles_by_target_kind() -> None:
    semantic = np.array([[[0, 2], [2, IGNORE_INDEX]]], np.uint8)
    style = style_for(_panel("semantic", semantic, np.zeros((1, 2, 2), np.int64)))
    assert style.kind == "classes" and style.legend == {0: "bg", 2: "b"}
    assert prepare(semantic[0], style).mask.tolist() == [[False, False], [False, True]]

    depth = np.array([[[0.0, 1.0], [2.0, 3.0]]], np.float32)
    style = style_for(_panel("depth", depth, depth))
    assert style.kind == "continuous" and style.mask_nonpositive
    assert 1.0 <= style.vmin < style.vmax <= 3.0  # percentiles of the valid depths only
    assert prepare(depth[0], style).mask.tolist() == [[True, False], [False, False]]

    instances = np.array([[[0, 1], [21, 5]]], np.int32)
    style = style_for(_panel("instances", instances, instances))
    folded = prepare(instances[0], style)
    assert folded.mask.tolist() == [[True, False], [False, False]] and folded[1, 0] == 0 and folded[1, 1] == 4

    assert style_for(_panel("boundary", np.zeros((1, 2, 2), np.uint8), np.zeros((1, 2, 2)))).kind == "binary"


@pytest.mark.parametrize(
    ("target", "truth", "prediction"),
    [
        ("depth", np.linspace(0, 4, 2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16), "same"),
        ("boundary", (np.arange(2 * 16 * 16).reshape(2, 16, 16) % 5 == 0).astype(np.uint8), "float"),
        ("instances", np.arange(2 * 16 * 16).reshape(2, 16, 16) // 40, "same"),
        ("instances", np.arange(2 * 16 * 16).reshape(2, 16, 16) // 40, "boxes"),
    ],
)
def test_render_every_kind(tmp_path: Path, target: str, truth: np.ndarray, prediction: str) -> None:
    value: object = truth
    if prediction == "float":
        value = truth.astype(np.float32) * 0.5
    elif prediction == "boxes":
        value = [(np.array([[1, 1, 8, 8]], np.float32), np.array([0.7])), (np.zeros((0, 4)), np.zeros(0))]
    panel = _panel(target, truth, value)
    panel.predictions["failed"] = None
    assert panel.boxes == (prediction == "boxes")
    pixels = _png(render_panel(panel, tmp_path / "p.png"))
    assert pixels.std() > 10
