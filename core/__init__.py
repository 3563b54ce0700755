"""Shared basics every stage may import: the user-facing error, device choice, the sample type, and the
records that cross stage boundaries (fingerprints, dataset references, run ids, the metrics record)."""
