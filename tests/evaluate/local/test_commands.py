"""`maxa local ...` (pipelines/local_commands.py) through the real CLI: metrics files and user errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from maxa.pipelines.cli import cli

CONTRACT = {
    "backbone",
    "model",
    "weights",
    "task",
    "adapter",
    "dataset",
    "split",
    "scores",
    "primary",
    "protocol",
}


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def read(path: Path) -> dict:
    metrics = json.loads(path.read_text())
    assert set(metrics) >= CONTRACT
    assert set(metrics["primary"]) == {"name", "value", "higher_is_better"}
    return metrics


def test_knn_command_writes_the_metrics_contract(make_stores, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    proto = rng.normal(size=(2, 6))
    labels = rng.integers(0, 2, size=(10, 2, 2))
    feats = proto[labels] + rng.normal(0, 0.05, size=(10, 2, 2, 6))
    maps = np.kron(labels, np.ones((4, 4), dtype=np.int64)).astype(np.uint8)
    train = make_stores("train", {"layer_2": feats[:6]}, {"semantic": maps[:6]}, split="train", num_classes=2)
    val = make_stores("val", {"layer_2": feats[6:]}, {"semantic": maps[6:]}, num_classes=2)
    out = tmp_path / "m" / "knn.json"
    result = ok(
        "local", "knn", "--train-features", train[0], "--train-targets", train[1], "--features", val[0],
        "--targets", val[1], "--shots", "3", "--k", "1,3", "--device", "cpu", "--out", str(out),
    )  # fmt: skip
    metrics = read(out)
    assert metrics["task"] == "knn" and metrics["protocol"]["shots"] == 3
    assert metrics["primary"]["value"] == metrics["scores"]["layers"]["layer_2"]["k=1"]["miou"] > 0.9
    assert "layer_2" in result.output and "knn: miou" in result.output

    bad = run("local", "knn", "--train-features", train[0], "--train-targets", train[1], "--features", val[0],
              "--targets", val[1], "--shots", "99", "--out", str(tmp_path / "x.json"))  # fmt: skip
    assert bad.exit_code == 1 and "Error: --shots 99 exceeds the 6 training images" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "x.json").exists()


def test_retrieval_and_propagate_commands(make_stores, tmp_path: Path) -> None:
    gallery = np.random.default_rng(1).normal(size=(5, 3, 3, 8))
    g_url, _ = make_stores("gallery", {"layer_0": gallery, "layer_1": gallery * 2})
    ids = [f"aug-blur-fakeset-val-{i:04d}" for i in range(5)]
    q_url, _ = make_stores(
        "queries", {"layer_0": gallery, "layer_1": gallery * 2}, ids=ids, dataset="augmented"
    )
    out = tmp_path / "retrieval.json"
    ok(
        "local",
        "retrieval",
        "--gallery",
        g_url,
        "--queries",
        q_url,
        "--layers",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
    )
    metrics = read(out)
    assert list(metrics["scores"]["layers"]) == ["layer_1"] and metrics["primary"]["value"] == 1.0

    frames = np.zeros((4, 8, 8), dtype=np.int32)
    frames[:, 2:6, 2:6] = 1
    feats = np.eye(2)[(frames[:, ::2, ::2] > 0).astype(int)]
    vid = make_stores(
        "video", {"layer_0": feats}, {"instances": frames}, ids=[f"davis-a-{t}" for t in range(4)]
    )
    out = tmp_path / "prop.json"
    ok(
        "local",
        "propagate",
        "--features",
        vid[0],
        "--targets",
        vid[1],
        "--radius",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
    )
    metrics = read(out)
    assert metrics["task"] == "propagation" and metrics["primary"]["value"] == pytest.approx(1.0)
    assert metrics["protocol"]["size_mask_neighborhood"] == 1


@pytest.mark.slow
def test_retrieval_end_to_end_on_an_augmented_split(tmp_path: Path) -> None:
    """prepare -> prepare augmented copies -> extract both with a random-init ViT -> retrieval."""
    options = ["-o", "num_images=8", "-o", "image_size=64"]
    ok("prepare", "--split", "val", *options, "--label-size", "16", "--out", str(tmp_path / "g.zarr"))
    ok(
        "prepare", "--dataset", "augmented", "--split", "val", "-o", "base=synthetic",
        "-o", "base_options={num_images: 8, image_size: 64}", "-o", "kind=noise", "-o", "strength=4",
        "--label-size", "16", "--out", str(tmp_path / "q.zarr"),
    )  # fmt: skip
    model = ["--model", "vit_tiny_patch16_224", "--input-size", "64", "--layers=5,11", "--device", "cpu"]
    for name in ("g", "q"):
        ok(
            "extract",
            "--targets",
            str(tmp_path / f"{name}.zarr"),
            *model,
            "--out",
            str(tmp_path / f"{name}-f.zarr"),
        )
    out = tmp_path / "r.json"
    ok("local", "retrieval", "--gallery", str(tmp_path / "g-f.zarr"), "--queries", str(tmp_path / "q-f.zarr"),
       "--device", "cpu", "--out", str(out))  # fmt: skip
    metrics = read(out)
    assert metrics["protocol"]["queries"] == 8 and metrics["protocol"]["augmentations"] == ["noise"]
    assert list(metrics["scores"]["layers"]) == ["layer_5", "layer_11"]
    for scores in metrics["scores"]["layers"].values():
        assert (
            scores["recall@1"] <= scores["recall@5"] <= scores["recall@10"] == 1.0
        )  # 8 images: all within 10
        assert scores["recall@1"] > 1 / 8  # better than chance even without training
