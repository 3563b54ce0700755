"""`maxa pipeline` writes every output's .gitignore entry, sorted: DVC (its own `Git.ignore`, what a stage
runs when it ends) then has nothing to append, so the files read the same however the stages ran."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from maxa.core.errors import MaxaError
from maxa.pipelines import dvcgen, gitignore
from maxa.pipelines.cli import cli
from maxa.pipelines.params import load_params

REPO = Path(__file__).resolve().parents[2]


def _git_init(root: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)


def test_entries_are_sorted_after_lines_of_the_user_and_a_second_write_changes_nothing(
    tmp_path: Path,
) -> None:
    _git_init(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/.gitignore").write_text("# mine\n/b\n*.tmp\n")
    outs = ["data/c", "data/b", "data/a", "models/x.pt", "top.json"]
    written = gitignore.write(tmp_path, outs)
    assert sorted(written) == sorted(
        tmp_path / p for p in ("data/.gitignore", "models/.gitignore", ".gitignore")
    )
    assert (tmp_path / "data/.gitignore").read_text() == "# mine\n*.tmp\n/a\n/b\n/c\n"
    assert (tmp_path / "models/.gitignore").read_text() == "/x.pt\n"
    assert (tmp_path / ".gitignore").read_text() == "/top.json\n"
    assert gitignore.write(tmp_path, list(reversed(outs))) == []


def test_an_output_git_already_ignores_gets_no_entry_and_outside_git_every_one_does(tmp_path: Path) -> None:
    repo, loose = tmp_path / "repo", tmp_path / "loose"
    repo.mkdir()
    loose.mkdir()
    _git_init(repo)
    (repo / ".gitignore").write_text("/data/\n")  # as the tool repository's
    gitignore.write(repo, ["data/features/a", "models/b.pt"])
    assert not (repo / "data/features/.gitignore").exists()
    assert (repo / "models/.gitignore").read_text() == "/b.pt\n"
    gitignore.write(loose, ["data/features/a"])  # no git yet: DVC will find the entry once there is
    assert (loose / "data/features/.gitignore").read_text() == "/a\n"


def test_a_foreach_naming_no_params_section_is_one_line() -> None:
    pipeline = {"stages": {"x": {"foreach": "${nothing}", "do": {"outs": ["o/${key}"]}}}}
    with pytest.raises(MaxaError, match=r"foreach '\$\{nothing\}' names no top-level key of the params file"):
        gitignore.outputs(pipeline, {"backbones": {}})


@pytest.mark.heavy  # DVC builds the demo's index (53 stages): seconds
def test_the_demos_entries_are_every_output_dvc_caches_and_dvc_appends_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dvc.repo import Repo
    from scmrepo.git import Git

    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["pipeline", "params.yaml"])
    assert result.exit_code == 0, result.output
    _git_init(tmp_path)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    with Repo(str(tmp_path)) as repo:  # DVC's own resolution of dvc.yaml (foreach, ${key}, ${item})
        cached = sorted(
            str(Path(out.fs_path).relative_to(tmp_path)) for out in repo.index.outs if out.use_cache
        )
    params = load_params(tmp_path / "params.yaml")
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert sorted(gitignore.outputs(dvcgen.pipeline(params), raw)) == cached
    files = {p: p.read_bytes() for p in tmp_path.rglob(".gitignore") if ".dvc" not in p.parts}
    assert len(files) >= 5
    for name, lines in gitignore.entries(cached).items():
        assert (tmp_path / name).read_text().splitlines() == lines  # sorted
    git = Git(str(tmp_path))
    try:
        assert [git.ignore(str(tmp_path / out)) for out in cached] == [None] * len(cached)
    finally:
        git.close()
    assert {p: p.read_bytes() for p in tmp_path.rglob(".gitignore") if ".dvc" not in p.parts} == files
    again = CliRunner().invoke(cli, ["pipeline", "params.yaml"]).output
    assert again.strip().endswith("dvc.yaml unchanged") and ".gitignore" not in again
