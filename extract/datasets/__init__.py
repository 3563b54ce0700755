"""Dataset readers. Importing this package registers every built-in reader."""

from maxa.extract.datasets import ade20k as _ade20k  # noqa: F401  (registers "ade20k")
from maxa.extract.datasets import augmented as _augmented  # noqa: F401  (registers "augmented")
from maxa.extract.datasets import coco as _coco  # noqa: F401  (registers "coco")
from maxa.extract.datasets import coco_stuff as _coco_stuff  # noqa: F401  (registers "coco_stuff")
from maxa.extract.datasets import davis as _davis  # noqa: F401  (registers "davis")
from maxa.extract.datasets import folder as _folder  # noqa: F401  (registers "folder")
from maxa.extract.datasets import nyu as _nyu  # noqa: F401  (registers "nyu")
from maxa.extract.datasets import nyu_frames as _nyu_frames  # noqa: F401  (registers "nyu_frames")
from maxa.extract.datasets import synthetic as _synthetic  # noqa: F401  (registers "synthetic")
from maxa.extract.datasets import voc as _voc  # noqa: F401  (registers "voc")
from maxa.extract.datasets.base import (
    Dataset,
    build_dataset,
    dataset_fingerprint,
    dataset_names,
    register_dataset,
)

__all__ = ["Dataset", "build_dataset", "dataset_fingerprint", "dataset_names", "register_dataset"]
