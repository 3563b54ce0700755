"""The package version recorded in every store's provenance and record."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("maxa")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
