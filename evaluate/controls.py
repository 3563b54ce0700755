"""Controls on the leaderboard: what each column gives without a backbone's knowledge, and each backbone's
margin over the strongest of them.

The controls of a column are the constant baseline (every metrics record carries it) and the runs on
control stores (`--weights control:noise|control:position`, extract/controls.py), which are ordinary
leaderboard rows. A backbone's margin is its score minus the strongest control's, signed so that positive
means better whatever the metric's direction; a column where no backbone clears its controls measures the
probe, not the features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maxa.evaluate.report import Column, Leaderboard, Row

CONTROL_PREFIX = "control:"
CONSTANT = "constant baseline"


def is_control(row: Row) -> bool:
    """A row scored on a control store (the store's weights say so)."""
    return any(str(r.get("weights", "")).startswith(CONTROL_PREFIX) for r in row.runs)


@dataclass(frozen=True)
class Strongest:
    """The best control of one column: its name and score."""

    name: str
    value: float


def strongest(board: Leaderboard, column: Column) -> Strongest | None:
    """The control with the best score in `column` (the constant baseline counts)."""
    best: Strongest | None = None
    if column in board.baseline:
        best = Strongest(CONSTANT, board.baseline[column])
    for row in board.rows:
        value = row.values.get(column)
        if is_control(row) and value is not None and (best is None or column.better(value, best.value)):
            best = Strongest(row.backbone, value)
    return best


def margin(value: float, control: Strongest, column: Column) -> float:
    """How much better than the strongest control (positive: better, in the metric's own units)."""
    return value - control.value if column.higher_is_better else control.value - value


def margins(board: Leaderboard) -> dict[str, Any]:
    """Per column, the strongest control and every non-control row's margin over it (JSON-able)."""
    out: dict[str, Any] = {}
    for column in board.columns:
        control = strongest(board, column)
        if control is None:
            continue
        out[column.header(board.qualify)] = {
            "strongest_control": control.name,
            "control_value": control.value,
            "margins": {
                f"{row.backbone}/{row.adapter}": margin(row.values[column], control, column)
                for row in board.rows
                if not is_control(row) and column in row.values
            },
        }
    return out


def margin_cells(board: Leaderboard, format_value: Callable[[float], str]) -> list[list[str]]:
    """The margin table: a row naming each column's strongest control, then one row per backbone."""
    controls = {c: strongest(board, c) for c in board.columns}
    columns = [c for c in board.columns if controls[c] is not None]
    header = ["backbone", "adapter"] + [c.header(board.qualify) for c in columns]
    cells = [header, ["*strongest control*", ""]]
    for column in columns:
        control = controls[column]
        assert control is not None
        cells[1].append(f"{control.name}: {format_value(control.value)}")
    for row in board.rows:
        if is_control(row):
            continue
        line = [row.backbone, row.adapter]
        for column in columns:
            control = controls[column]
            assert control is not None
            if column not in row.values:
                line.append("")
                continue
            gain = margin(row.values[column], control, column)
            line.append(f"{gain:+.3f}" + ("" if gain > 0 else " ⚠"))
        cells.append(line)
    return cells


def has_controls(board: Leaderboard) -> bool:
    return any(is_control(row) for row in board.rows)


def lost_to_constant(runs: list[dict[str, Any]]) -> list[str]:
    """Runs whose held-out selection chose a member worse than the constant (probe/validation.py)."""
    flagged = []
    for run in runs:
        protocol = run.get("protocol")
        selection = protocol.get("selection") if isinstance(protocol, dict) else None
        if isinstance(selection, dict) and selection.get("worse_than_constant"):
            flagged.append(str(run["source"]))
    return flagged
