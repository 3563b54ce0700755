"""The check every stage makes of a name chosen from a fixed (or registered) set."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from maxa.core.errors import MaxaError


def check_choice(
    value: str, choices: tuple[str, ...], option: str, registry: Callable[[], list[str]] | None = None
) -> None:
    """One-line error for a name outside a fixed set, with the closest names as a hint.

    `registry` (imported only for a name outside `choices`) admits names registered at run time."""
    if value in choices:
        return
    if registry is not None:
        known = registry()
        if value in known:
            return
        choices = tuple(sorted({*choices, *known}))
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        noun = option.lstrip("-").replace("-", " ")
        raise MaxaError(f"{option}: unknown {noun} {value!r}{hint} (known: {', '.join(choices)})")
