"""`maxa local ...` (pipelines/local_commands.py) through the real CLI: metrics files and user errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.kit.cli import invoke, ok
from tests.kit.records import METRICS_CONTRACT


def read(path: Path) -> dict:
    metrics = json.loads(path.read_text())
    assert set(metrics) >= METRICS_CONTRACT
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

    bad = invoke("local", "knn", "--train-features", train[0], "--train-targets", train[1],
                 "--features", val[0], "--targets", val[1], "--shots", "99",
                 "--out", str(tmp_path / "x.json"))  # fmt: skip
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
    square = ok(
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
    assert metrics["protocol"]["scored_at_native_resolution"] is False
    assert "prepare the targets with --label-size native" in square.output


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


def write_davis(root: Path, frames: int = 5, size: tuple[int, int] = (40, 72)) -> list[int]:
    """A one-sequence DAVIS 2017 tree (JPEG frames, palette annotations) with a moving object and a
    void strip; returns the annotation palette."""
    from PIL import Image

    palette = [(i * 37 + 11) % 256 for i in range(768)]  # not VOC's: the copy must come from the file
    rng = np.random.default_rng(0)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("walk\n")
    for t in range(frames):
        ids = np.zeros(size, dtype=np.uint8)
        ids[8:30, 6 + 3 * t : 30 + 3 * t] = 1
        ids[20:36, 44:66] = 2
        ids[0] = 255
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        image[ids == 1], image[ids == 2] = (250, 20, 20), (20, 20, 250)
        for folder in ("JPEGImages", "Annotations"):
            (root / folder / "480p" / "walk").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "JPEGImages" / "480p" / "walk" / f"{t:05d}.jpg", quality=95)
        label = Image.fromarray(ids)
        label.putpalette(palette)
        label.save(root / "Annotations" / "480p" / "walk" / f"{t:05d}.png")
    return palette


@pytest.mark.heavy
def test_davis_native_resolution_propagation_writes_davis_pngs(tmp_path: Path) -> None:
    """prepare --label-size native -> extract --input-size HxW -> local propagate --masks-dir."""
    from PIL import Image

    from maxa.core.store import open_store
    from maxa.evaluate.local.jf import score_sequence, summarize

    palette = write_davis(tmp_path / "DAVIS")
    targets, features = str(tmp_path / "t.zarr"), str(tmp_path / "f.zarr")
    ok("prepare", "--dataset", "davis", "--split", "val", "--root", str(tmp_path / "DAVIS"),
       "--label-size", "native", "--out", targets)  # fmt: skip
    tprov = open_store(targets, "targets").provenance
    assert tprov["label_size"] == [40, 72] and tprov["label_resolution"] == "native"
    ok("extract", "--targets", targets, "--out", features, "--model", "vit_tiny_patch16_224",
       "--weights", "random-init", "--input-size", "32x64", "--device", "cpu")  # fmt: skip
    fprov = open_store(features, "features").provenance
    assert fprov["input_size"] == [32, 64] and fprov["feature_shapes"]["layer_11"][:2] == [2, 4]
    out, masks = tmp_path / "prop.json", tmp_path / "results"
    # not DINO's frame size (40x72 frames -> 480x832) nor its final norm: refused, naming the commands
    refused = invoke("local", "propagate", "--features", features, "--targets", targets, "--device", "cpu",
                     "--out", str(out))  # fmt: skip
    assert refused.exit_code == 1 and "Traceback" not in refused.output and not out.exists()
    assert "input size 32x64 (DINO: 480x832 for 40x72 frames)" in refused.output
    assert "--model vit_tiny_patch16_224 --input-size 480x832 --norm" in refused.output
    done = ok("local", "propagate", "--features", features, "--targets", targets, "--masks-dir", str(masks),
              "--davis-protocol", "any", "--device", "cpu", "--out", str(out))  # fmt: skip
    assert "masks: " in done.output and "--label-size native" not in done.output
    metrics = read(out)
    protocol = metrics["protocol"]
    assert protocol["upsampled_to"] == [32, 64] and protocol["scored_at_native_resolution"] is True
    assert protocol["davis_protocol"] == "differs" and protocol["norm"] is False
    written = sorted((masks / "walk").glob("*.png"))
    assert [p.name for p in written] == [f"{t:05d}.png" for t in range(5)]
    images = [Image.open(p) for p in written]
    assert {(im.mode, im.size) for im in images} == {("P", (72, 40))}
    assert images[0].getpalette() == palette
    pred = np.stack([np.asarray(im) for im in images]).astype(np.int64)
    truth = np.stack(
        [np.asarray(Image.open(tmp_path / f"DAVIS/Annotations/480p/walk/{t:05d}.png")) for t in range(5)]
    )
    truth = np.where(truth == 255, 0, truth).astype(np.int64)
    assert (pred[0] == truth[0]).all()
    rescored = summarize([score_sequence("walk", truth, pred)]).scores  # J&F of the files as written
    assert metrics["scores"]["J&F-Mean"] == pytest.approx(rescored["J&F-Mean"])
    again = invoke("local", "propagate", "--features", features, "--targets", targets,
                   "--masks-dir", str(masks), "--davis-protocol", "any", "--device", "cpu",
                   "--out", str(tmp_path / "a.json"))  # fmt: skip
    assert again.exit_code == 1 and "already holds masks" in again.output
