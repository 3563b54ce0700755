"""The test kit: the one CLI runner, the one set of record and store writers, the store backends.

Tests import it as `tests.kit.<module>`; the package never imports tests.
"""
