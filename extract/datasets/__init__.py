"""Dataset readers. Importing this package registers every built-in reader."""

from maxa.extract.datasets import synthetic as _synthetic  # noqa: F401  (registers "synthetic")
from maxa.extract.datasets.base import (
    Dataset,
    build_dataset,
    dataset_fingerprint,
    dataset_names,
    register_dataset,
)

__all__ = ["Dataset", "build_dataset", "dataset_fingerprint", "dataset_names", "register_dataset"]
