"""Suite-wide settings: nothing may wait on the network, DVC sends no analytics, and parallel workers
(`pytest -n N`, pytest-xdist) share the cores instead of each starting a thread per core."""

import os
from pathlib import Path

import pytest

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


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """maxa's on-disk caches (timm facts) in the session's temp folder, for this process and the commands
    it starts: a test never reads what an earlier run left in the user's ~/.cache, nor writes there."""
    os.environ["MAXA_CACHE_DIR"] = str(tmp_path_factory.mktemp("maxa-cache"))


pytest_plugins = ["tests.s3server"]  # the loopback S3 server fixtures (`s3`, `s3_server`)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker: the modules holding slow tests first, then those holding heavy ones. Each module
    runs whole on one worker (--dist loadfile --no-loadscope-reorder keeps this order), so the long ones
    start early and the short ones fill the cores around them instead of one long module ending the run."""
    if _THREADS is None:
        return
    weights: dict[Path, list[int]] = {}
    for item in items:
        weight = 0 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("heavy") else 2
        weights.setdefault(item.path, []).append(weight)
    # first the modules of slow tests, most slow tests first; then heavy ones alike; then the rest
    rank = {path: (min(w), -w.count(min(w))) for path, w in weights.items()}
    items.sort(key=lambda item: rank[item.path] if rank[item.path][0] < 2 else (2, 0))  # stable sort
