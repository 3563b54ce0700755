"""The error users see: one line that names the file, option or store and what was expected."""


class MaxaError(Exception):
    """A user mistake or a bad input; the CLI prints the message without a traceback and exits 1."""
