"""Dataset readers (extract/reader_specs.py declares them; a reader's module is imported when it is built)."""

from maxa.extract.datasets.base import Dataset, build_dataset, dataset_fingerprint, dataset_names

__all__ = ["Dataset", "build_dataset", "dataset_fingerprint", "dataset_names"]
