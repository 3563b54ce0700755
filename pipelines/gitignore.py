"""The `.gitignore` entries of a generated pipeline's outputs, written once, sorted, by `maxa pipeline`.

DVC git-ignores each cached output when its stage ends: it appends `/<name>` to the `.gitignore` beside
the output unless git already ignores the path (scmrepo's `Git.ignore`). So the lines of a shared
`.gitignore` (`data/features/<dataset>/.gitignore` lists every backbone's store) come in stage
completion order, which differs between `dvc repro` and a parallel run, and a stage depending on that
folder as a whole (plots, report) sees a different hash. Written beforehand, in sorted order, every entry
is already there when a stage ends, DVC appends nothing, and the files read the same however the stages
ran. They belong in git as DVC's would.

An output git already ignores by another rule (the tool repository's `/data/`) gets no entry, as DVC
would give it none.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from pathspec.patterns import GitWildMatchPattern

from maxa.core.errors import MaxaError

GITIGNORE = ".gitignore"
_VARIABLE = re.compile(r"\$\{\s*(key|item)((?:\.[A-Za-z0-9_-]+)*)\s*\}")


def _substitute(text: str, key: str | None, item: Any) -> str:
    """`${key}`, `${item}` and `${item.a.b}` of a foreach body (the only variables maxa's outputs use)."""

    def value(match: re.Match[str]) -> str:
        found: Any = key if match.group(1) == "key" else item
        for part in filter(None, match.group(2).split(".")):
            found = found[part]
        if found is None or isinstance(found, (dict, list)):
            raise MaxaError(f"dvc.yaml: {match.group(0)} in output {text!r} is not a name")
        return str(found)

    return _VARIABLE.sub(value, text)


def _iterations(each: Any, variables: Mapping[str, Any]) -> Iterator[tuple[str | None, Any]]:
    """(key, item) of a foreach: a list, a mapping, or `${name}` of the params file's mapping/list."""
    if isinstance(each, str):
        name = each.strip().removeprefix("${").removesuffix("}").strip()
        if name not in variables:
            raise MaxaError(f"dvc.yaml: foreach {each!r} names no top-level key of the params file")
        each = variables[name]
    if isinstance(each, Mapping):
        yield from ((str(k), v) for k, v in each.items())
    else:
        yield from ((None, v) for v in each)


def _cached(entries: Iterable[Any]) -> Iterator[str]:
    """The paths of a stage's `outs`/`metrics`/`plots` entries that DVC caches (so git-ignores)."""
    for entry in entries:
        if isinstance(entry, str):
            yield entry
        else:
            for path, options in entry.items():
                if (options or {}).get("cache", True):
                    yield path


def outputs(pipeline: Mapping[str, Any], variables: Mapping[str, Any]) -> list[str]:
    """Every cached output of a dvc.yaml mapping (foreach stages expanded), relative to its folder."""
    found: list[str] = []
    for stage in pipeline.get("stages", {}).values():
        if "foreach" in stage:
            body = stage["do"]
            loop = list(_iterations(stage["foreach"], variables))
        else:
            body, loop = stage, [(None, None)]
        paths = [p for field in ("outs", "metrics", "plots") for p in _cached(body.get(field, []))]
        found += [_substitute(path, key, item) for key, item in loop for path in paths]
    return found


def entries(outs: Iterable[str]) -> dict[str, list[str]]:
    """`.gitignore` path (relative) -> its sorted entries, as DVC spells each (`/name`, wildmatch-escaped)."""
    files: dict[str, set[str]] = {}
    for out in outs:
        path = PurePosixPath(out)
        files.setdefault(str(path.parent / GITIGNORE), set()).add(GitWildMatchPattern.escape(f"/{path.name}"))
    return {file: sorted(lines) for file, lines in sorted(files.items())}


def _spellings(out: str) -> set[str]:
    name = PurePosixPath(out).name
    return {f"/{name}", GitWildMatchPattern.escape(f"/{name}")}


def _ignored_elsewhere(root: Path, outs: list[str]) -> set[str]:
    """Outputs git ignores by a rule other than their own entry (none outside a git work tree)."""
    git = shutil.which("git")
    if git is None or not outs:
        return set()
    top = subprocess.run([git, "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True)
    if top.returncode:  # not a git work tree (yet): once it is one, DVC finds our entries there
        return set()
    done = subprocess.run(
        [git, "check-ignore", "--no-index", "--verbose", "--stdin", "-z"],
        cwd=root,
        input="\0".join(outs) + "\0",
        capture_output=True,
        text=True,
    )
    if done.returncode not in (0, 1):
        raise MaxaError(f"`git check-ignore` failed in {root}: {' '.join(done.stderr.split())}")
    others = set()
    fields = done.stdout.split("\0")
    for source, _line, pattern, out in zip(*[iter(fields)] * 4, strict=False):
        own = (root / PurePosixPath(out).parent / GITIGNORE).resolve()
        mine = (Path(top.stdout.strip()) / source).resolve() == own and pattern in _spellings(out)
        if not pattern.startswith("!") and not mine:
            others.add(out)
    return others


def write(root: Path, outs: Iterable[str]) -> list[Path]:
    """Give each output its `.gitignore` entry beside it, each file's maxa entries sorted after any line
    that is not one (kept in its order); the files changed."""
    wanted = sorted(set(outs))
    skip = _ignored_elsewhere(root, wanted)
    changed = []
    for name, lines in entries(o for o in wanted if o not in skip).items():
        path = root / name
        try:
            old = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
            keep = [line for line in old if line not in lines]
            text = "\n".join([*keep, *lines]) + "\n"
            if path.exists() and path.read_text(encoding="utf-8") == text:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise MaxaError(f"cannot write {path}: {exc}") from exc
        changed.append(path)
    return changed


def write_for(pipeline: Mapping[str, Any], params_file: Path, root: Path) -> list[Path]:
    """`write` for the outputs of a generated dvc.yaml mapping whose foreach stages name sections of
    `params_file` (DVC's default variables: the params file beside dvc.yaml)."""
    import yaml

    try:
        variables = yaml.safe_load(params_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise MaxaError(f"cannot read {params_file}: {' '.join(str(exc).split())}") from exc
    return write(root, outputs(pipeline, variables))
