"""Suite-wide settings: nothing may wait on the network, DVC sends no analytics, and parallel workers
(`pytest -n N`, pytest-xdist) share the cores instead of each starting a thread per core."""

import os

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def _worker_threads() -> int | None:
    """Threads per xdist worker: the cores divided among the workers (None when not a worker)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if not os.environ.get("PYTEST_XDIST_WORKER") or workers < 1:
        return None
    return max(1, (os.cpu_count() or 1) // workers)


_THREADS = _worker_threads()
if _THREADS is not None:
    # Read by torch (and the BLAS under numpy) at import, in this worker and the commands it starts; N
    # workers with a thread per core each would fight over the cores (OpenMP threads spin while waiting).
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, str(_THREADS))

pytest_plugins = ["tests.s3server"]  # the loopback S3 server fixtures (`s3`, `s3_server`)
