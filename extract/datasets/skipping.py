"""`--skip-bad`: find the samples a reader cannot load and rebuild it without them.

The skipped ids travel in the reader's own `skip_ids` option, so they land in its `config()`, the
target store's provenance and fingerprint, and every reader rebuilt from that store (extraction)
yields exactly the ids that were written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tqdm import tqdm

from maxa.core.errors import MaxaError
from maxa.extract.datasets.base import Dataset


def exclude_bad_samples(
    build: Callable[[list[str]], Dataset], skip_ids: Sequence[str] = (), *, progress: bool = True
) -> tuple[Dataset, dict[str, str]]:
    """Load every sample once; return the reader rebuilt without those that fail, and {id: reason}.

    `build(skip_ids)` makes the reader. Skipping can pull new samples in under a `num_images` cap,
    so the check repeats until a pass finds nothing new; no sample is loaded twice. This costs one
    extra decoding pass over the split.
    """
    skipped: dict[str, str] = {}
    checked: set[str] = set()
    while True:
        dataset = build(sorted({*skip_ids, *skipped}))
        ids = getattr(dataset, "ids", None)
        found: dict[str, str] = {}
        todo = [i for i in range(len(dataset)) if ids is None or ids[i] not in checked]
        for index in tqdm(
            todo, desc=f"check {dataset.name}/{dataset.split}", disable=not progress, unit="img"
        ):
            try:
                dataset[index]
            except MaxaError as exc:
                if ids is None:
                    raise MaxaError(
                        f"{exc} (reader {dataset.name!r} lists no ids, so it cannot skip)"
                    ) from exc
                found[ids[index]] = str(exc)
            if ids is not None:
                checked.add(ids[index])
        if not found:
            return dataset, skipped
        skipped.update(found)
