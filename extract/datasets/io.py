"""File access shared by the on-disk readers: every failure becomes a MaxaError naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from maxa.core.errors import MaxaError
from maxa.core.paths import expand_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LABEL_MODES = ("P", "L")
"""PNG modes whose pixel values are the ids themselves (palette indices or 8-bit grey)."""

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)


def require_root(root: str | Path | None, reader: str, expected: str) -> Path:
    """The dataset folder, or an error saying what the reader expects to find there."""
    if root is None:
        raise MaxaError(f"{reader} dataset needs --root: {expected}")
    path = Path(root)
    if not path.exists():
        raise MaxaError(f"{reader} dataset: root {path} does not exist (expected {expected})")
    return path


def require_dir(path: Path, reader: str, what: str) -> Path:
    if not path.is_dir():
        raise MaxaError(f"{reader} dataset: missing folder {path} ({what})")
    return path


def require_file(path: Path, reader: str, what: str) -> Path:
    if not path.is_file():
        raise MaxaError(f"{reader} dataset: missing file {path} ({what})")
    return path


def _open(path: Path, what: str, referenced_by: object = None) -> Image.Image:
    """Open and fully decode (`load()`), so a truncated file fails here and not somewhere later."""
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        source = f" (referenced by {referenced_by})" if referenced_by is not None else ""
        raise MaxaError(f"{what} {path} does not exist{source}") from None
    except _DECODE_ERRORS as exc:
        raise MaxaError(f"{what} {path} is corrupt or unreadable: {exc}") from None
    return image


def load_rgb(path: Path, referenced_by: object = None) -> np.ndarray:
    """uint8 (H, W, 3); greyscale, CMYK and RGBA files are converted, EXIF orientation is not applied
    (dataset annotations are drawn on the stored pixels). `referenced_by` names the annotation or
    list that asked for the file, for the error when it is missing."""
    image = _open(path, "image", referenced_by)
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def load_label_png(path: Path, what: str = "label map", referenced_by: object = None) -> np.ndarray:
    """uint8 (H, W) ids from a palette ('P': the indices, never the colours) or greyscale PNG."""
    image = _open(path, what, referenced_by)
    if image.mode not in LABEL_MODES:
        raise MaxaError(
            f"{what} {path} has PNG mode {image.mode!r}; expected a palette (mode 'P') or 8-bit "
            "greyscale (mode 'L') PNG whose pixel values are the ids (was it saved as RGB colours?)"
        )
    return np.asarray(image)


def check_same_size(label: np.ndarray, image: np.ndarray, label_path: Path, image_path: Path) -> None:
    if label.shape[:2] != image.shape[:2]:
        raise MaxaError(
            f"{label_path} is {label.shape[0]}x{label.shape[1]} but its image {image_path} is "
            f"{image.shape[0]}x{image.shape[1]} (HxW); annotation and image must match"
        )


def list_images(folder: Path) -> list[Path]:
    """Every .jpg/.jpeg/.png below `folder` (any case), sorted by relative path for a fixed order."""
    found = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def resolve_option_path(value: str, root: Path) -> Path:
    """A file option: absolute paths as given, relative ones inside the dataset root (so the stored
    config stays valid wherever the dataset is mounted)."""
    path = Path(expand_path(value))
    return path if path.is_absolute() else root / path
