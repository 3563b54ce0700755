"""`maxa estimate` (pipelines/estimate.py): counted FLOPs and grids, and the formula applied to them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from maxa.core.errors import MaxaError
from maxa.extract.config import ExtractConfig
from maxa.pipelines.estimate import Rates, backbone_cost, dataset_images, estimate, members
from maxa.pipelines.params import load_params


def vit_flops(tokens: int, dim: int, depth: int, patch: int, mlp: int = 4) -> float:
    """Matmul FLOPs (2 per multiply-add) of a ViT forward, written from its definition: the patch
    projection, then per block qkv, attention scores and weighted sum, output projection and the MLP."""
    patches = tokens - 1
    embed = 2 * patches * (3 * patch * patch) * dim
    per_block = 2 * tokens * dim * (3 * dim + dim + 2 * mlp * dim) + 2 * 2 * tokens * tokens * dim
    return embed + depth * per_block


def test_backbone_flops_and_grid_are_counted() -> None:
    cost = backbone_cost(ExtractConfig(model="vit_tiny_patch16_224", weights="random-init", input_size=128))
    assert cost.grid == (8, 8, 192) and cost.layers == 1
    assert cost.gflops * 1e9 == pytest.approx(vit_flops(tokens=65, dim=192, depth=12, patch=16), rel=1e-6)
    # an earlier stored block stops the count there (extraction stops early too)
    early = backbone_cost(
        ExtractConfig(model="vit_tiny_patch16_224", weights="random-init", input_size=128, layers=[5])
    )
    assert early.gflops * 1e9 == pytest.approx(vit_flops(tokens=65, dim=192, depth=6, patch=16), rel=1e-6)


def _params(tmp_path: Path) -> Path:
    raw = {
        "datasets": {
            "syn": {"dataset": "synthetic", "train_images": 40, "test_images": 10, "label_size": 32},
            "voc": {"dataset": "voc", "root": "/nowhere", "test_start": 449, "label_size": 64},
        },
        "backbones": {"vit": {"model": "vit_tiny_patch16_224", "weights": "random-init", "input_size": 128}},
        "probe": {"iterations": 10, "batch_size": 4, "query_grid": 4},
        "tasks": {
            "seg": {"task": "semantic", "dataset": "syn"},
            "sweep": {
                "task": "depth",
                "dataset": "syn",
                "sweep_lrs": "0.001,0.01",
                "sweep_seeds": "0,1,2",
                "val_fraction": 0.2,
            },
        },
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_formula_is_applied_to_counted_costs(tmp_path: Path) -> None:
    params = load_params(_params(tmp_path))
    assert dataset_images("voc", params.datasets["voc"]) == {"train": 1464, "test": 1000}  # 1449 - 449
    assert members(params, "sweep") == 6 and members(params, "seg") == 1
    rates = {"device": Rates(backbone_flops=1e12, adapter_flops=1e10, decode=100.0)}
    lines = {(line.backbone, line.what): line for line in estimate(params, rates)}
    syn = lines[("vit", "syn")]
    assert syn.count == 50 and syn.store_gb == pytest.approx(50 * 8 * 8 * 192 * 2 / 1e9)
    # 50 images at 0.42 GFLOP each is 0.02 s of compute: the decoding floor (50 / 100 per s) decides
    assert syn.seconds["device"] == pytest.approx(0.5)
    voc = lines[("vit", "voc")]
    assert voc.seconds["device"] == pytest.approx(max(2464 * voc.gflops * 1e9 / 1e12, 2464 / 100.0))
    sweep = lines[("vit", "sweep")]
    assert sweep.count == 10 * 4 * 6 and sweep.store_gb == 0
    assert sweep.seconds["device"] == pytest.approx(sweep.count * sweep.gflops * 1e9 / 1e10)
    assert lines[("vit", "seg")].gflops > 0  # counted on the adapter the run builds


def test_unknown_split_sizes_are_refused_in_one_line(tmp_path: Path) -> None:
    raw = yaml.safe_load(_params(tmp_path).read_text())
    raw["datasets"]["syn"].pop("train_images")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(MaxaError, match=r"datasets\.syn: the size of synthetic split 'train' is not known"):
        list(estimate(load_params(tmp_path / "params.yaml"), {}))


def test_the_command_prints_the_table_and_the_formula(tmp_path: Path) -> None:
    from maxa.pipelines.cli import cli

    result = CliRunner().invoke(cli, ["estimate", str(_params(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "| vit | syn | 50 |" in result.output
    assert "Formula: store = images x h x w x C x 2 B" in result.output
    assert "this CPU (measured rates)" in result.output
