"""pipelines/paper/params.yaml runs what the MAXA paper's code runs, setting by setting.

The tables below are deap's values (constantinpape/deap at cf3103d), each with the line it was read
from: `experiments.py`, `deap/models/backbones.py` (bb), `deap/datasets/*`. They are written here by
hand from the reference, not from maxa's files, so a change to the params file that leaves the paper's
protocol fails here. params.equal-grid.yaml is maxa's own protocol: the same runs at one token grid.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from maxa.extract.config import input_hw
from maxa.pipelines.params import load_params

PAPER = Path(__file__).resolve().parents[2] / "pipelines" / "paper"

# name: (timm model, weights, input side, stride of the stored grid, final norm, deap's line)
DEAP_BACKBONES = {
    "dinov2_b": ("vit_base_patch14_reg4_dinov2.lvd142m", "pretrained", 518, 14, True, "bb:849"),
    "dino_b8": ("vit_base_patch8_224.dino", "pretrained", 224, 8, True, "bb:847, bb:352"),
    "mae_b": ("vit_base_patch16_224.mae", "pretrained", 224, 16, True, "bb:869"),
    "clip_b32": ("vit_base_patch32_clip_224.openai", "pretrained", 224, 32, True, "bb:858"),
    "clip_b16": ("vit_base_patch16_clip_224.openai", "pretrained", 224, 16, True, "bb:859"),
    "siglip_b": ("vit_base_patch16_siglip_384.webli", "pretrained", 384, 16, True, "bb:865"),
    "supervised_b": ("vit_base_patch16_224.orig_in21k", "pretrained", 224, 16, True, "bb:862"),
    "hiera_bplus": ("hiera_base_plus_224.mae", "pretrained", 224, 32, False, "bb:873"),
    "convnext_l_clip": (
        "convnext_large_mlp.clip_laion2b_ft_soup_320",
        "pretrained",
        320,
        32,
        False,
        "bb:883",
    ),
    "random_b": ("vit_base_patch16_224.mae", "random-init", 224, 16, True, "bb:874"),
}
"""deap's TimmBackbone/DinoBackbone call the whole timm model with global_pool='' (bb:70, bb:352): the
last block after the final norm. Hiera: timm cannot norm its intermediates (the norm is in the head).
Not in this table: resnet50 (bb:895 builds it untrained; maxa keeps ImageNet weights, at deap's layer4)
and SAM (not in deap's backbone dict)."""

LAST_LEVEL = {"resnet50": (224, 32, "bb:457 output_layer=4")}

# name: (reader, train split, train start, train images, test split, test start, test images, label size,
#        reader options, deap's lines)
DEAP_DATASETS = {
    "voc": (
        "voc", "train", 0, None, "val", 0, 500, 224, {}, "experiments.py:43,50,52; pascal_simple.py:34-35"
    ),
    "coco_stuff": (
        "coco_stuff", "train", 0, 100000, "val", 0, None, 224, {},
        "experiments.py:63,73,75; coco_simple.py:123,125",
    ),
    "coco_boundary": (
        "coco", "train", 0, 5000, "train", 100000, 500, 448, {"overlap": "first", "crowd": "instance"},
        "experiments.py:109,117-118; coco_simple.py:49-50,65,99-103",
    ),
    "coco_centers": (
        "coco", "train", 0, 100000, "val", 0, 500, 448, {"overlap": "first", "crowd": "instance"},
        "experiments.py:129,140,142; coco_simple.py:49,51",
    ),
    "nyu": (
        "nyu_frames", "train", 0, 42000, "validation", 0, None, "native", {},
        "experiments.py:95,97; nyu_depth_simple.py:21-22,27-28",
    ),
}  # fmt: skip

# run: (task, dataset, iterations, query grid, upsampler width or None, deap's lines)
DEAP_TASKS = {
    "semantic_coco_stuff": ("semantic", "coco_stuff", 20000, 28, 32, "experiments.py:67,76"),
    "depth": ("depth", "nyu", 3000, 28, None, "experiments.py:91,98"),
    "boundary": ("boundary", "coco_boundary", 10000, 56, None, "experiments.py:114,119"),
    "centers": ("centers", "coco_centers", 20000, 56, None, "experiments.py:136,143"),
}
NOT_PUBLIC = {"semantic_voc": "experiments.py:7 leaves n_iterations at 60", "instance": "no config"}

# experiments.py:6,12,13 (default) and 22-27 (model_cfg)
DEAP_PROBE = {"lr": 0.001, "batch_size": 32, "weight_decay": 0.01, "width": 16, "heads": 8, "adapter": "maxa"}


@pytest.fixture(scope="module")
def paper() -> object:
    return load_params(PAPER / "params.yaml")


@pytest.fixture(scope="module")
def equal_grid() -> object:
    return load_params(PAPER / "params.equal-grid.yaml")


@pytest.mark.parametrize("name", sorted(DEAP_BACKBONES))
def test_backbones_are_built_as_deap_builds_them(paper: object, name: str) -> None:
    model, weights, side, _, norm, line = DEAP_BACKBONES[name]
    entry = paper.backbones[name]  # type: ignore[attr-defined]
    assert (entry.model, entry.weights, entry.input_size, entry.layers, entry.norm) == (
        model,
        weights,
        side,
        [-1],
        norm,
    ), line
    # every params comment cites the line it follows
    assert line.split(",")[0] in (PAPER / "params.yaml").read_text()


def test_cnns_read_deaps_last_level(paper: object) -> None:
    for name, (side, _, line) in LAST_LEVEL.items():
        entry = paper.backbones[name]  # type: ignore[attr-defined]
        assert (entry.input_size, entry.layers) == (side, [-1]), line


@pytest.mark.parametrize("name", sorted(DEAP_DATASETS))
def test_datasets_read_deaps_images(paper: object, name: str) -> None:
    reader, train, train_start, train_n, test, test_start, test_n, label, options, line = DEAP_DATASETS[name]
    entry = paper.datasets[name]  # type: ignore[attr-defined]
    got = (
        entry.dataset,
        entry.train_split,
        entry.train_start,
        entry.train_images,
        entry.test_split,
        entry.test_start,
        entry.test_images,
        entry.label_size,
        entry.options,
    )
    assert got == (reader, train, train_start, train_n, test, test_start, test_n, label, options), line


def test_task_runs_follow_experiments_py(paper: object) -> None:
    runs = paper.tasks  # type: ignore[attr-defined]
    for run, (task, dataset, iterations, grid, width, line) in DEAP_TASKS.items():
        config = runs[run].config
        assert (config.task, runs[run].dataset, config.iterations, config.query_grid) == (
            task,
            dataset,
            iterations,
            grid,
        ), line
        assert config.upsampler_width == (width or 0), line
    assert set(runs) == {*DEAP_TASKS, *NOT_PUBLIC}
    for run in runs.values():
        assert {k: getattr(run.config, k) for k in DEAP_PROBE} == DEAP_PROBE


def test_the_protocol_name_is_recorded(paper: object, equal_grid: object) -> None:
    assert paper.evaluate.protocol == "deap"  # type: ignore[attr-defined]
    assert equal_grid.evaluate.protocol == "equal-grid"  # type: ignore[attr-defined]


def test_equal_grid_runs_the_same_runs_at_one_token_grid(paper: object, equal_grid: object) -> None:
    raw_paper = yaml.safe_load((PAPER / "params.yaml").read_text())
    raw_equal = yaml.safe_load((PAPER / "params.equal-grid.yaml").read_text())
    for section in ("datasets", "extract", "probe", "tasks", "plots"):
        assert raw_equal[section] == raw_paper[section], section
    strides = {name: spec[3] for name, spec in DEAP_BACKBONES.items()}
    strides.update(resnet50=32, sam_b=16)
    grids = set()
    for name, entry in equal_grid.backbones.items():  # type: ignore[attr-defined]
        paper_entry = paper.backbones[name]  # type: ignore[attr-defined]
        assert (entry.model, entry.weights, entry.layers, entry.norm) == (
            paper_entry.model,
            paper_entry.weights,
            paper_entry.layers,
            paper_entry.norm,
        )
        height, width = input_hw(entry.input_size)
        grids.add((height // strides[name], width // strides[name]))
        assert height % strides[name] == 0
    assert grids == {(16, 16)}
    # every backbone of the paper's protocol but Hiera (timm's has a fixed 224 px input); controls: the switch
    assert set(equal_grid.backbones) == {*DEAP_BACKBONES, *LAST_LEVEL, "sam_b"} - {"hiera_bplus"}  # type: ignore[attr-defined]
    assert paper.controls and equal_grid.controls  # type: ignore[attr-defined]
    paper_grids = {
        name: input_hw(paper.backbones[name].input_size)[0] // stride  # type: ignore[attr-defined]
        for name, stride in strides.items()
    }
    assert paper_grids["dinov2_b"] == 37 and paper_grids["clip_b32"] == 7  # why the second protocol exists
