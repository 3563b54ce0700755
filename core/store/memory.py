"""Keeping freed read buffers in the process: glibc otherwise returns every large buffer to the OS when it
is freed and the next read of the same size faults its pages in again.

Why: an object-store read receives each shard object into a fresh buffer (obstore: one allocation of the
object's size, freed once its rows are copied out). With glibc's defaults, buffers over its dynamic
threshold are mmap'd and unmapped, and freed arena memory over 2x that threshold is trimmed, so every
6.3 MB GET page-faults ~1500 pages: ~10 ms of system CPU per shard on the 2-core VM, more than obstore's
whole client cost (benchmarks/s3_stream.py). Raising both thresholds keeps up to TRIM bytes of freed
memory per arena for reuse (the process keeps what its largest window of reads used; it never grows past
that). glibc only (Linux); elsewhere nothing changes. MAXA_KEEP_FREED_MEMORY=0 leaves glibc's defaults.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

MMAP_THRESHOLD = 32 << 20
"""Allocations below this come from the heap (glibc's maximum for the threshold on 64-bit)."""
TRIM_THRESHOLD = 256 << 20
"""Freed memory at the top of a heap kept for reuse before glibc gives it back."""
ENV = "MAXA_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@functools.cache
def keep_freed_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; whether it did."""
    if os.environ.get(ENV, "1") == "0" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
