"""What an experiment's matrix costs before it runs: feature-store disk and device time (`maxa estimate`).

Counted, not guessed, per backbone: the forward FLOPs per image up to the stored level and the stored
grid (h, w, C), by torch's FlopCounterMode on the meta device (no weights, no memory; the same
`forward_intermediates` call extraction makes); per task run: the adapter's training FLOPs per sample
(forward + backward of maxa's own adapter at that backbone's grid, run once on a single sample).
Assumed, and printed with the result: the device's sustained rates. The formulas:

    store bytes(b, d)    = N_d x h_b x w_b x C_b x 2                  (float16 features, one layer)
    extract seconds(b, d) = max(N_d x F_b / R_backbone, N_d / R_decode)
    probe seconds(b, t)   = iterations_t x batch_t x members_t x P_bt / R_adapter

N_d: the dataset entry's train + test images; F_b: backbone FLOPs per image; P_bt: adapter training
FLOPs per sample; members_t: sweep learning rates x seeds (1 without a sweep). The rates are options
(the CPU column: the backbone rate measured on this project's 2-core machine and the adapter rate timed
when the estimate runs; the GPU column: an assumed sustained bf16 rate of one H100 for a ViT forward and a
tenth of it for the adapter's small kernels, never measured here: no GPU was available when this was
written, so the GPU column is a scaling of counted FLOPs, not a measurement).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from maxa.core.errors import MaxaError
from maxa.extract import backbones
from maxa.extract.config import ExtractConfig, input_hw
from maxa.pipelines.params import ROLES, DatasetEntry, Params
from maxa.probe.adapters import build_adapter
from maxa.probe.tasks import get_task

SPLIT_SIZES: dict[tuple[str, str], int] = {
    ("voc", "train"): 1464,
    ("voc", "val"): 1449,
    ("voc", "trainval"): 2913,
    ("coco", "train"): 118287,
    ("coco", "val"): 5000,
    ("coco_stuff", "train"): 118287,
    ("coco_stuff", "val"): 5000,
    ("ade20k", "train"): 20210,
    ("ade20k", "val"): 2000,
    ("nyu", "train"): 795,
    ("nyu", "test"): 654,
    ("nyu", "all"): 1449,
    ("nyu_frames", "train"): 47584,
    ("nyu_frames", "validation"): 654,
}
"""Images per split of the public datasets (for entries that read a whole split)."""

CLASSES = {"voc": 21, "coco_stuff": 171, "ade20k": 150, "coco": 81, "synthetic": 5}
"""Classes per reader (semantic heads' widths); others: as the reader's options say, 1 when unknown."""

CPU_GFLOPS = 34.0
"""Measured on this project's 2-core machine: a ViT-S/16 (4.6 GFLOPs at 224) runs ~7.5 img/s in fp32
(/work/shared/DESIGN.md, facts measured on these machines): 4.6 x 7.5 ~ 34 GFLOP/s."""
GPU_TFLOPS = 300.0
"""Assumed sustained bf16 rate of one H100 on a ViT forward (~30% of its 989 TFLOP/s dense peak)."""
ADAPTER_TFLOPS = 30.0
"""Assumed rate of the adapter's small kernels on that GPU (a tenth of the backbone's)."""
DECODE_PER_S = 1000.0
"""Assumed input pipeline: JPEG decoding and resizing with 16 workers."""


@dataclass(frozen=True)
class Rates:
    backbone_flops: float  # FLOP/s
    adapter_flops: float  # FLOP/s
    decode: float  # images/s


@dataclass(frozen=True)
class BackboneCost:
    gflops: float  # per image, up to the stored level
    grid: tuple[int, int, int]  # stored (h, w, C) of the last listed layer
    layers: int


def dataset_images(name: str, entry: DatasetEntry) -> dict[str, int]:
    """Images per role (train, test) of a dataset entry: its counts, or the whole split's known size."""
    counts = {}
    for role in ROLES:
        count = getattr(entry, f"{role}_images")
        if count is None:
            split = getattr(entry, f"{role}_split")
            whole = SPLIT_SIZES.get((entry.dataset, split))
            if whole is None:
                raise MaxaError(
                    f"datasets.{name}: the size of {entry.dataset} split {split!r} is not known to the "
                    f"estimate; set {role}_images"
                )
            count = whole - getattr(entry, f"{role}_start")
        counts[role] = count
    return counts


def backbone_cost(config: ExtractConfig) -> BackboneCost:
    """Forward GFLOPs per image and the stored grid, counted on the meta device."""
    resolved = backbones.resolve(config.spec)
    side = config.input_size
    with torch.device("meta"):
        try:
            model = backbones._timm_create(resolved.model, num_classes=0, weight_init="skip")
        except (TypeError, AssertionError):
            model = backbones._timm_create(resolved.model, num_classes=0)
        model.eval()
        if side is None:
            side = int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
        levels = len(model.feature_info)
        indices = sorted({i + levels if i < 0 else i for i in config.layers})
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            outs = model.forward_intermediates(
                torch.empty(1, 3, *input_hw(side)),
                indices=indices,
                stop_early=True,
                intermediates_only=True,
                output_fmt="NCHW",
            )
    c, h, w = (int(n) for n in outs[-1].shape[1:])
    return BackboneCost(counter.get_total_flops() / 1e9, (h, w, c), len(indices))


def _adapter_step(params: Params, run: str, grid: tuple[int, int, int], batch: int) -> Any:
    """One training step (forward + backward) of the run's adapter on zero features of `grid`."""
    task_run = params.tasks[run]
    config = task_run.config
    dataset = params.datasets[task_run.dataset]
    task = get_task(config.task, **config.task_options())
    classes = CLASSES.get(dataset.dataset, int(dataset.options.get("num_classes", 1)))
    h, w, c = grid
    adapter = build_adapter(config.adapter, c, task.out_channels(classes), config.adapter_options())
    features = torch.zeros(batch, h, w, c)
    label = dataset.label_size
    size = (480, 640) if label == "native" else input_hw(label)

    def step() -> None:
        adapter.zero_grad()
        adapter(features, output_size=size).float().sum().backward()

    return step


def adapter_gflops(params: Params, run: str, grid: tuple[int, int, int]) -> float:
    """Training GFLOPs per sample (forward + backward) of the run's adapter on features of `grid`."""
    counter = FlopCounterMode(display=False)
    with torch.device("meta"), counter:  # shapes only: no memory, no time
        _adapter_step(params, run, grid, 1)()
    return counter.get_total_flops() / 1e9


def measure_adapter_rate(params: Params, run: str, grid: tuple[int, int, int], batch: int = 8) -> float:
    """The FLOP/s this machine's CPU achieves training the run's adapter (the fastest of 5 timed steps:
    on a shared machine the others measure the neighbours' load)."""
    step = _adapter_step(params, run, grid, batch)
    step()  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return adapter_gflops(params, run, grid) * 1e9 * batch / min(times)


def members(params: Params, run: str) -> int:
    """Adapters trained by the run: learning rates x seeds x layers of its sweep (1 without one)."""
    config = params.tasks[run].config
    return len(config.grid_lrs()) * len(config.grid_seeds()) * len(config.grid_layers())


@dataclass(frozen=True)
class Line:
    backbone: str
    what: str  # a dataset (extraction) or a task run (probe)
    count: int  # images (extraction) or samples seen (probe)
    gflops: float  # per image / per sample
    store_gb: float  # feature store (extraction); 0 for a probe
    seconds: dict[str, float]  # per device column


def estimate(params: Params, rates: dict[str, Rates]) -> Iterator[Line]:
    """Every extraction (backbone x dataset) and every probe (backbone x task run) with its cost."""
    sizes = {name: dataset_images(name, entry) for name, entry in params.datasets.items()}
    for backbone, config in params.backbones.items():
        cost = backbone_cost(config)
        h, w, c = cost.grid
        for dataset, counts in sizes.items():
            images = sum(counts.values())
            seconds = {
                k: max(images * cost.gflops * 1e9 / r.backbone_flops, images / r.decode)
                for k, r in rates.items()
            }
            store = images * h * w * c * 2 * cost.layers / 1e9
            yield Line(backbone, dataset, images, cost.gflops, store, seconds)
        for run, task_run in params.tasks.items():
            per_sample = adapter_gflops(params, run, cost.grid)
            config_ = task_run.config
            samples = config_.iterations * config_.batch_size * members(params, run)
            seconds = {k: samples * per_sample * 1e9 / r.adapter_flops for k, r in rates.items()}
            yield Line(backbone, run, samples, per_sample, 0.0, seconds)


def default_rates(
    params: Params, gpu_tflops: float, adapter_tflops: float, cpu_gflops: float, decode: float
) -> dict[str, Rates]:
    """The GPU column at the assumed rates; the CPU column at the measured backbone rate and the adapter
    rate measured now on this machine (the first task run, on the first backbone's grid)."""
    backbone = next(iter(params.backbones.values()))
    run = next(iter(params.tasks))
    cpu_adapter = measure_adapter_rate(params, run, backbone_cost(backbone).grid)
    return {
        "H100 (assumed rates)": Rates(gpu_tflops * 1e12, adapter_tflops * 1e12, decode),
        "this CPU (measured rates)": Rates(cpu_gflops * 1e9, cpu_adapter, float("inf")),
    }


def render(lines: list[Line], rates: dict[str, Rates]) -> str:
    """Markdown: one row per extraction and probe, then totals per backbone and for the matrix."""
    columns = list(rates)
    head = ["backbone", "dataset / run", "images or samples", "GFLOP each", "store GB"] + [
        f"hours, {c}" for c in columns
    ]
    rows = [head, ["---"] * len(head)]
    for line in lines:
        rows.append(
            [
                line.backbone,
                line.what,
                f"{line.count:,}",
                f"{line.gflops:.2f}",
                f"{line.store_gb:.1f}" if line.store_gb else "",
                *(f"{line.seconds[c] / 3600:.3g}" for c in columns),
            ]
        )
    store = sum(line.store_gb for line in lines)
    totals = {c: sum(line.seconds[c] for line in lines) / 3600 for c in columns}
    rows.append(["**total**", "", "", "", f"{store:,.1f}", *(f"{totals[c]:,.3g}" for c in columns)])
    table = "\n".join("| " + " | ".join(r) + " |" for r in rows)
    assumed = "; ".join(
        f"{c}: backbone {r.backbone_flops / 1e12:.3g} TFLOP/s, adapter {r.adapter_flops / 1e12:.3g} TFLOP/s, "
        f"decode {r.decode:g} img/s"
        for c, r in rates.items()
    )
    formula = (
        "store = images x h x w x C x 2 B; extract = max(images x GFLOP / backbone rate, images / decode); "
        "probe = iterations x batch x sweep members x adapter training GFLOP / adapter rate"
    )
    return f"{table}\n\nFormula: {formula}.\nRates: {assumed}.\n"


def as_dict(line: Line) -> dict[str, Any]:
    return {
        "backbone": line.backbone,
        "what": line.what,
        "count": line.count,
        "gflops": line.gflops,
        "store_gb": line.store_gb,
        "seconds": line.seconds,
    }
