"""Shared basics every stage may import: records between stages, run ids and fingerprints."""
