"""Shared basics every stage may import: the store contract (`maxa.core.store`), the records that cross
stage boundaries (provenance, checkpoint meta, run ids, the metrics record), layer naming, choice checks,
the user-facing error, device choice, the sample type, and the dataset facts that evaluation needs
without importing a reader. It imports no stage (tests/test_layering.py)."""
