"""The resumable state of a run or a sweep: `<out>.resume`, every member at one step.

Every `checkpoint_every` steps (and on Ctrl-C) the engine saves, in one file written atomically, the step,
each member's model, optimiser, schedule, scaler and random stream, and the losses so far (one row per
step, one column per member). `--resume` (or `--update`, what a DVC stage runs) continues every member
from it to the same final weights, because the batch of every step is a function of the seed and the step
alone (probe/loader.py). A state saved by another run (other result fields or stores) is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from maxa.core import store as st
from maxa.core.checkpoint_meta import CHECKPOINT_FORMAT
from maxa.core.errors import MaxaError
from maxa.probe.checkpoint import save_atomic
from maxa.probe.config import ProbeConfig
from maxa.probe.member import Member


def resume_path(out: str | Path) -> Path:
    """Where a run writing `out` keeps its resumable state."""
    return Path(f"{out}.resume")


def state_difference(state: Any, config: ProbeConfig, fingerprints: list[str]) -> str | None:
    """Why a saved resumable state belongs to another run (None: it is this run's)."""
    if not isinstance(state, dict) or not isinstance(state.get("members"), list):
        return "a state without members, written by an older maxa"
    expected = {"config": config.result_fields(), "stores": fingerprints}
    for key, want in expected.items():
        if state.get(key) != want:
            have = state.get(key) or {}
            if key == "config" and isinstance(have, dict):
                changed = (f"{k}: {have.get(k)!r} -> {v!r}" for k, v in want.items() if have.get(k) != v)
                return ", ".join(changed)
            return "different feature or target store"
    return None


def save_state(path: Path, config: ProbeConfig, fingerprints: list[str], members: list[Member]) -> None:
    """Every member's state at the step they have all finished (atomic: a crash keeps the previous one)."""
    step = len(members[0].losses)
    blob = {
        "format": CHECKPOINT_FORMAT,
        "config": config.result_fields(),
        "stores": fingerprints,
        "step": step,
        "losses": [[member.losses[i] for member in members] for i in range(step)],
        "members": [member.state_dict() for member in members],
    }
    save_atomic(blob, path)


def restore_state(path: Path, config: ProbeConfig, fingerprints: list[str], members: list[Member]) -> int:
    """Load this run's saved state into its members; returns the step they continue from."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    diff = state_difference(state, config, fingerprints)
    if diff is None and len(state["members"]) != len(members):
        diff = f"{len(state['members'])} members, this run trains {len(members)}"
    if diff is not None:
        raise MaxaError(
            f"cannot --resume from {path}: it was saved by a different run ({diff}); "
            "delete it or rerun without --resume"
        )
    for k, member in enumerate(members):
        member.load_state_dict(state["members"][k], [row[k] for row in state["losses"]])
    return int(state["step"])


def can_resume(config: ProbeConfig, features_url: str, targets_url: str, out: str) -> bool:
    """Whether `<out>.resume` holds a state this very run (or sweep) saved (same result fields, same
    stores): what `maxa probe --update` (the generated DVC stage) resumes; any other state is started over."""
    path = resume_path(out)
    if not path.is_file():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a state cut off mid-write by a crash is started over, like any foreign state
        return False
    fingerprints = [st.open_store(features_url, "features").fingerprint]
    fingerprints.append(st.open_store(targets_url, "targets").fingerprint)
    return state_difference(state, config, fingerprints) is None
