"""The README's promise, proved: a task, a dataset reader and a metric written outside maxa (a temporary
module named by MAXA_PLUGINS) run prepare -> extract -> probe -> evaluate -> report and `maxa params`
and `maxa pipeline` without touching any file of maxa.

The plugin is two files, as a user writes them: the specs (torch-free, imported by `--help`) and the
implementation (imported when a stage uses it). Everything runs in one fresh interpreter, because the
plugins are read once per process, before ProbeConfig gets its fields.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from maxa.core import protocols
from maxa.pipelines.params import protocol_versions

SPECS = '''
"""A toy plugin: the 'stripes' reader, the 'bright' task and its 'bright_acc' metric."""
from dataclasses import dataclass, field

from maxa.core.errors import MaxaError
from maxa.evaluate.metric_specs import METRICS, MetricSpec
from maxa.extract.reader_specs import READERS, ReaderSpec
from maxa.probe.task_specs import TASKS, TaskSpec


@dataclass(frozen=True)
class BrightOptions:
    bright_threshold: float = field(default=0.5, metadata={"help": "probability above which it is bright."})

    def __post_init__(self) -> None:
        if not 0 < self.bright_threshold < 1:
            raise MaxaError(f"--bright-threshold must be in (0, 1), got {self.bright_threshold}")


@dataclass(frozen=True)
class StripesOptions:
    num_images: int = field(default=8, metadata={"help": "images in the split."})
    size: int = field(default=32, metadata={"help": "side of the square images (pixels)."})
    skip_ids: list[str] | None = field(default=None, metadata={"help": "sample ids to leave out."})


READERS.register(
    ReaderSpec(name="stripes", help="vertical stripes, bright or dark", options=StripesOptions,
               splits="train|val", implementation="toy_maxa_impl:Stripes")
)
TASKS.register(
    TaskSpec(name="bright", help="which pixels are bright", options=BrightOptions, target="semantic",
             label="bright pixels", primary="bright_acc", implementation="toy_maxa_impl:Bright",
             evaluator="toy_maxa_impl:BrightEvaluator", objective_version=3, metric_version=2)
)
METRICS.register(
    MetricSpec(name="bright_acc", help="fraction of pixels called right", label="BrightAcc", low=0, high=1)
)
'''

IMPL = '''
"""The toy plugin's implementation (torch is imported here, when a stage builds the task)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maxa.core.sample import Sample
from maxa.probe.tasks import Task


class Stripes:
    name = "stripes"
    num_classes = 2
    class_names = ["dark", "bright"]

    def __init__(self, *, split="train", root=None, num_images=8, size=32, skip_ids=None):
        self.split, self.num_images, self.size = split, int(num_images), int(size)
        self.ids = [f"stripes-{split}-{i}" for i in range(self.num_images)]

    def __len__(self):
        return self.num_images

    def __getitem__(self, index):
        rng = np.random.default_rng([index, self.split == "val"])
        columns = rng.random(self.size // 8) < 0.5
        bright = np.repeat(np.repeat(columns, 8)[None, :], self.size, axis=0)
        image = np.repeat(np.where(bright, 220, 30).astype(np.uint8)[..., None], 3, axis=2)
        return Sample(id=self.ids[index], image=image, targets={"semantic": bright.astype(np.uint8)})

    def config(self):
        return {"split": self.split, "num_images": self.num_images, "size": self.size}


class Bright(Task):
    bright_threshold: float

    def out_channels(self, num_classes):
        return 1

    def loss(self, output, target):
        return F.binary_cross_entropy_with_logits(output[:, 0].float(), target.float())

    def predict(self, output):
        return output[:, 0].float().sigmoid() > self.bright_threshold

    def block_stats(self, raw):
        return {"bright": np.float64((raw > 0).sum()), "pixels": np.float64(raw.size)}

    def finish_stats(self, sums, num_classes):
        return {"rate": float(sums.get("bright", 0.0)) / max(float(sums.get("pixels", 0.0)), 1.0)}

    def output_bias(self, stats):
        p = min(max(stats["rate"], 1e-6), 1 - 1e-6)
        return [math.log(p / (1 - p))]


class BrightEvaluator:
    def __init__(self, task, meta, pair):
        self.task, self.right, self.pixels = task, 0, 0

    def update(self, output, raw):
        truth = torch.from_numpy(np.asarray(raw) > 0)
        self.right += int((self.task.predict(output).cpu() == truth).sum())
        self.pixels += truth.numel()

    def compute(self):
        return {"bright_acc": self.right / self.pixels}
'''

PARAMS = """
datasets:
  toy: {dataset: stripes, train_split: train, test_split: val, train_images: 8, test_images: 4,
        label_size: 16, shard_size: 4, options: {size: 32}}
backbones:
  vit: {model: vit_tiny_patch16_224, weights: random-init, input_size: 32, layers: "-1"}
tasks:
  bright: {task: bright, dataset: toy, iterations: 3, batch_size: 4, query_grid: 4, bright_threshold: 0.4}
"""

DRIVER = """
import json, sys
from click.testing import CliRunner
from maxa.pipelines.cli import cli

results = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(cli, args)
    torch = "torch" in sys.modules
    results.append({"args": args, "code": r.exit_code, "output": r.output, "torch": torch})
print(json.dumps(results))
"""


def _run(tmp_path: Path, commands: list[list[str]]) -> list[dict[str, object]]:
    """The maxa commands in one fresh interpreter with the toy plugin (only) on its path: per command its
    exit code, output and whether torch was imported by then."""
    env = {**os.environ, "MAXA_PLUGINS": "toy_maxa_specs", "PYTHONPATH": str(tmp_path / "plugin")}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(commands)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def _write_plugin(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "toy_maxa_specs.py").write_text(textwrap.dedent(SPECS))
    (plugin / "toy_maxa_impl.py").write_text(textwrap.dedent(IMPL))
    (tmp_path / "params.yaml").write_text(PARAMS)


@pytest.mark.heavy  # every stage once, in a fresh interpreter (~15 s)
def test_a_plugins_task_reader_and_metric_run_end_to_end(tmp_path: Path) -> None:
    _write_plugin(tmp_path)
    maxa_before = _tracked_maxa_files()
    t, f, m = "data/targets", "data/features", "models/bright.pt"
    vit = "--model vit_tiny_patch16_224 --weights random-init --input-size 32 --layers=-1 --name vit"
    stages = [
        ["params", "params.yaml"],
        ["plugins", "--json"],
        *(
            f"prepare --dataset stripes --split {s} -o num_images={n} --label-size 16 --shard-size 4 "
            f"--out {t}/{s}.zarr".split()
            for s, n in (("train", 8), ("val", 4))
        ),
        *(f"extract --targets {t}/{s}.zarr {vit} --out {f}/{s}.zarr".split() for s in ("train", "val")),
        f"probe --task bright --bright-threshold 0.4 --features {f}/train.zarr --targets {t}/train.zarr "
        f"--iterations 3 --batch-size 4 --query-grid 4 --out {m}".split(),
        f"evaluate --checkpoint {m} --features {f}/val.zarr --targets {t}/val.zarr "
        "--out metrics/bright/vit.json".split(),
        ["report", "metrics", "--out", "reports"],
    ]
    results = _run(tmp_path, stages)
    for result in results:
        assert result["code"] == 0, result
    resolved = json.loads(str(results[0]["output"]))
    assert resolved["tasks"]["bright"]["config"]["bright_threshold"] == 0.4  # a ProbeConfig field now
    listing = json.loads(str(results[1]["output"]))
    assert listing["plugins"] == ["toy_maxa_specs"]
    assert {"name": "bright", "source": "toy_maxa_specs", "help": "which pixels are bright"} in listing[
        "task"
    ]

    record = json.loads((tmp_path / "metrics/bright/vit.json").read_text())
    assert record["task"] == "bright" and record["dataset"] == "stripes"
    assert record["protocol"]["task_options"] == {"bright_threshold": 0.4}
    assert record["primary"]["name"] == "bright_acc" and record["primary"]["higher_is_better"] is True
    # the constant baseline predicts "bright" everywhere iff the training rate exceeds the threshold:
    # its accuracy, computed here from the stores alone, is the plugin metric's value for it
    train = zarr.open_group(str(tmp_path / t / "train.zarr"), mode="r")["semantic"][:]
    val = zarr.open_group(str(tmp_path / t / "val.zarr"), mode="r")["semantic"][:]
    assert train.shape == (8, 16, 16) and val.shape == (4, 16, 16)
    constant_bright = (train > 0).mean() > 0.4
    expected = float(((val > 0) == constant_bright).mean())
    assert np.isclose(record["constant_baseline"]["bright_acc"], expected)
    assert 0.0 <= record["scores"]["bright_acc"] <= 1.0
    assert "BrightAcc" in (tmp_path / "reports/leaderboard.md").read_text()  # the metric's declared label
    assert _tracked_maxa_files() == maxa_before  # no file of maxa was touched


@pytest.mark.heavy
def test_params_validation_and_the_cli_see_the_plugin(tmp_path: Path) -> None:
    _write_plugin(tmp_path)
    bad_option = PARAMS.replace("bright_threshold: 0.4", "bright_treshold: 0.4")
    bad_reader = PARAMS.replace("options: {size: 32}", "options: {sizes: 32}")
    bad_type = PARAMS.replace("options: {size: 32}", "options: {size: big}")
    bad_value = PARAMS.replace("bright_threshold: 0.4", "bright_threshold: 1.5")
    for name, text in (
        ("option", bad_option),
        ("reader", bad_reader),
        ("type", bad_type),
        ("value", bad_value),
    ):
        (tmp_path / f"{name}.yaml").write_text(text)
    results = _run(
        tmp_path,
        [
            ["probe", "--help"],
            ["prepare", "--help"],
            ["params", "option.yaml"],
            ["params", "reader.yaml"],
            ["params", "type.yaml"],
            ["params", "value.yaml"],
            ["pipeline", "params.yaml"],
        ],
    )
    assert not results[0]["torch"] and not results[1]["torch"]  # the plugin's specs keep `--help` light
    probe_help, prepare_help = str(results[0]["output"]), str(results[1]["output"])
    assert "--bright-threshold" in probe_help and "bright" in probe_help
    assert "stripes" in prepare_help
    assert [r["code"] for r in results] == [0, 0, 1, 1, 1, 1, 0], results[-1]["output"]
    assert "bright_treshold" in str(results[2]["output"]) and "tasks.bright" in str(results[2]["output"])
    assert "the stripes reader has no option 'sizes' (did you mean 'size'?)" in str(results[3]["output"])
    assert "the stripes reader's option size must be an integer, got 'big'" in str(results[4]["output"])
    assert "--bright-threshold must be in (0, 1), got 1.5" in str(results[5]["output"])
    # the generated DVC pipeline runs the plugin's task like maxa's own, its protocol versions included
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    assert "maxa probe --params params.yaml --run bright " in stages["probe_bright"]["do"]["cmd"]
    assert "--checkpoint models/bright/${key}.pt" in stages["evaluate_bright"]["do"]["cmd"]
    ((_, probe_keys),) = stages["probe_bright"]["do"]["params"][0].items()
    ((_, evaluate_keys),) = stages["evaluate_bright"]["do"]["params"][0].items()
    assert probe_keys == ["tasks.bright", "protocols.objective.bright"]
    assert evaluate_keys == ["protocols.metric.bright"]
    written = yaml.safe_load((tmp_path / "protocols.yaml").read_text())
    assert (written["objective"].pop("bright"), written["metric"].pop("bright")) == (3, 2)
    assert written == yaml.safe_load(protocols.render(protocol_versions()))  # maxa's own, unchanged


def _tracked_maxa_files() -> dict[str, float]:
    """Modification times of maxa's own source files (the checkout this test runs from)."""
    root = Path(__file__).resolve().parents[2]
    return {
        str(p): p.stat().st_mtime
        for folder in ("core", "extract", "probe", "evaluate", "pipelines")
        for p in (root / folder).rglob("*.py")
    }


ISOLATION = """
import json
from maxa.probe.config import ProbeConfig
mine, theirs = ProbeConfig(task="bright"), ProbeConfig(task="depth", max_depth=5.0)
print(json.dumps({k: sorted(v) for k, v in {
    "mine_result": mine.result_fields(), "mine_options": mine.task_options(),
    "theirs_result": theirs.result_fields(), "theirs_options": theirs.task_options()}.items()}))
"""


def test_a_plugins_options_stay_out_of_other_runs(tmp_path: Path) -> None:
    """A plugin's option is a field of every ProbeConfig, but only its own task's runs record it: other
    runs keep their run ids and checkpoint records whether the plugin is installed or not."""
    _write_plugin(tmp_path)
    env = {**os.environ, "MAXA_PLUGINS": "toy_maxa_specs", "PYTHONPATH": str(tmp_path / "plugin")}
    done = subprocess.run(
        [sys.executable, "-c", ISOLATION], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "bright_threshold" in seen["mine_result"] and "bright_threshold" in seen["mine_options"]
    assert "bright_threshold" not in seen["theirs_result"] + seen["theirs_options"]
    assert {"max_depth", "min_depth", "instance_dim"} <= set(seen["theirs_options"])  # maxa's, as before


@pytest.mark.slow  # dvc in subprocesses (~20 s)
def test_bumping_a_plugin_tasks_version_makes_only_its_stages_stale(tmp_path: Path) -> None:
    """The plugin's versions are tracked like maxa's own: after its objective (or metric) version changes
    in the guard's copy (what the guard of the upgraded plugin writes), `dvc status` lists its probes (or
    evaluations) and nothing else."""
    from tests.kit.cli import command_env, maxa_script
    from tests.pipelines.test_dvc_tracking import _placeholders

    _write_plugin(tmp_path)
    env = command_env(MAXA_PLUGINS="toy_maxa_specs", PYTHONPATH=str(tmp_path / "plugin"))

    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done.stdout

    dvc = (sys.executable, "-m", "dvc")
    run(*maxa_script(), "pipeline", "params.yaml")
    run("git", "init", "-q")
    run(*dvc, "init", "-q")
    run(*dvc, "repro", "pipeline")
    _placeholders(tmp_path)
    run(*dvc, "commit", "-f", "-q")
    tracked_path = tmp_path / "params_tracked.json"
    current = json.loads(tracked_path.read_text())
    assert current["protocols"]["objective"]["bright"] == 3

    def stale_after_bump(group: str) -> set[str]:
        bumped = json.loads(json.dumps(current))
        bumped["protocols"][group]["bright"] += 1
        tracked_path.write_text(json.dumps(bumped))
        return set(json.loads(run(*dvc, "status", "--json")))

    assert stale_after_bump("objective") == {"pipeline", "probe_bright@vit"}
    assert stale_after_bump("metric") == {"pipeline", "evaluate_bright@vit"}
