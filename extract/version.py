"""The package version recorded in every store's provenance (defined once, in maxa.core)."""

from maxa.core.version import __version__

__all__ = ["__version__"]
