"""The error users see: one line that names the file, option or store and what was expected."""


class MaxaError(Exception):
    """A user mistake or a bad input; the CLI prints the message without a traceback and exits 1."""


class Interrupted(MaxaError):
    """A run stopped by the user (Ctrl-C) after keeping what it finished; the CLI exits 130."""
