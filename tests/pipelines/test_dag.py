"""The runner's view of the DVC DAG: where a stage runs, what lies downstream, DVC's own edges."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
import yaml

from maxa.pipelines import dag
from tests.kit.cli import command_env

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("cmd", "kind"),
    [
        ("maxa extract --params params.yaml --backbone vit --out x.zarr", dag.DEVICE),
        ("maxa probe --params params.yaml --run semantic", dag.DEVICE),
        ("maxa evaluate --checkpoint m.pt", dag.DEVICE),
        ("maxa local knn --features f --out k.json", dag.DEVICE),
        ("maxa prepare --data synthetic --role train --out t.zarr", dag.CPU),
        ("maxa report metrics --out reports", dag.CPU),
        ("maxa plots --metrics m --out p", dag.CPU),
        ("maxa pipeline params.yaml --check", dag.GATE),
        ("/opt/venv/bin/maxa report metrics", dag.CPU),  # a path to maxa is maxa
        ("OMP_NUM_THREADS=1 maxa report metrics", dag.CPU),  # an environment prefix is not the program
        ("maxa prepare --out t.zarr && maxa extract --out f.zarr", dag.DEVICE),  # any device part
        ("maxa report m --out r; maxa plots --out p", dag.CPU),
        ("python train.py", dag.UNKNOWN_KIND),  # not maxa: takes a device slot
        (["maxa report metrics", "maxa probe --run depth"], dag.DEVICE),  # DVC's list form
    ],
)
def test_stage_kind_follows_the_table(cmd: str | list[str], kind: str) -> None:
    assert dag.stage_kind(cmd) == kind


def test_every_generated_stage_has_a_known_kind() -> None:
    """The repository's dvc.yaml: no generated stage falls through to the unknown default."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        cmd = stage.get("do", stage)["cmd"]
        subs = dag._maxa_subcommands(cmd)
        assert subs and all(sub in dag.STAGE_KINDS for sub in subs), (name, subs)


def _chain(edges: list[tuple[str, str]]) -> dict[str, dag.Stage]:
    names = {n for edge in edges for n in edge}
    return {
        n: dag.Stage(n, "maxa report", dag.CPU, frozenset(up for up, down in edges if down == n))
        for n in names
    }


def test_downstream_matches_graph_descendants() -> None:
    edges = [("a", "b"), ("b", "c"), ("a", "d"), ("e", "d"), ("d", "f"), ("g", "h")]
    stages = _chain(edges)
    graph = nx.DiGraph(edges)
    for name in stages:
        assert dag.downstream(stages, [name]) == {name} | nx.descendants(graph, name)
    assert dag.to_run(stages, ["e", "g", "not-a-stage"]) == {"e", "d", "f", "g", "h"}


@pytest.mark.heavy
def test_read_dag_is_dvcs_graph(tmp_path: Path) -> None:
    """Stages and edges read through DVC's index equal what `dvc dag --dot` prints; foreach expands."""
    spec = {
        "stages": {
            "make": {"foreach": ["x", "y"], "do": {"cmd": "maxa prepare ${item}", "outs": ["${item}.txt"]}},
            "use": {"cmd": "maxa probe x.txt y.txt", "deps": ["x.txt", "y.txt"], "outs": ["m.pt"]},
            "show": {"cmd": "maxa report m.pt", "deps": ["m.pt"], "outs": ["r.md"]},
        }
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec))
    for args in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(args, cwd=tmp_path, check=True, env=command_env())
    stages, changed = dag.read_dag(tmp_path)
    assert changed == set(stages)  # nothing has run yet
    dot = subprocess.run(
        [sys.executable, "-m", "dvc", "dag", "--dot"],
        cwd=tmp_path,
        env=command_env(),
        capture_output=True,
        text=True,
    ).stdout
    edges = set(re.findall(r'"([^"]+)" -> "([^"]+)"', dot))
    assert {(up, s.name) for s in stages.values() for up in s.upstream} == edges
    assert set(stages) == {"make@x", "make@y", "use", "show"}
    assert [stages[n].kind for n in ("make@x", "use", "show")] == [dag.CPU, dag.DEVICE, dag.CPU]
    assert stages["use"].cmd == "maxa probe x.txt y.txt"
