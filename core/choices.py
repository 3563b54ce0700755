"""The check every stage makes of a name chosen from a fixed (or registered) set."""

from __future__ import annotations

import difflib

from maxa.core.errors import MaxaError


def check_choice(value: str, choices: tuple[str, ...], option: str) -> None:
    """One-line error for a name outside a fixed set (a registry's names), with the closest as a hint."""
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        noun = option.lstrip("-").replace("-", " ")
        raise MaxaError(f"{option}: unknown {noun} {value!r}{hint} (known: {', '.join(choices)})")
