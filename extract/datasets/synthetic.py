"""The built-in synthetic dataset: coloured shapes on a textured background, deterministic from a seed.

It is the embedded default, so every stage (extract, probe, evaluate) runs and is tested with no
download. Each class has its own shape *and* its own hue, so even a randomly initialised backbone's
patch features separate the classes and a small probe has something to find; apparent size shrinks
with depth and the background is a tilted plane, so depth is (weakly) recoverable from the image too.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from maxa.core.errors import MaxaError
from maxa.core.labels import instance_boxes
from maxa.core.sample import Sample
from maxa.extract.transforms import instance_boundaries

SHAPES = ("disk", "square", "triangle", "ring", "cross", "ellipse", "diamond", "star")
"""Shape kind of class id k+1 is SHAPES[k]; the option num_classes takes the first num_classes kinds."""

HUES = tuple(h / 360.0 for h in (0, 30, 58, 125, 180, 220, 275, 320))
"""Characteristic hue of each shape kind, spread round the colour wheel so hue alone separates them."""

SPLITS = ("train", "val", "test")
"""A split's position here is its code in the seed sequence, so splits never share images."""

BACKGROUND_DEPTH = 9.0  # metres at the image centre; the plane's tilt keeps it within 8..10 m
OBJECT_DEPTH = (1.0, 7.0)  # nearest / farthest object depth in metres, always nearer than the background
RADIUS = (0.08, 0.15)  # object radius as a fraction of the image size at the farthest depth
NOISE_SIGMA = 6.0  # per-pixel Gaussian noise on the final image, in 8-bit levels
TEXTURE_GRID = 5  # control points per side of the background's smooth random texture

Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _disk(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.75


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Equilateral: three half-planes at inradius 0.5, so the vertices sit on the unit circle.
    return (v <= 0.5) & (0.866 * u - 0.5 * v <= 0.5) & (-0.866 * u - 0.5 * v <= 0.5)


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    rho2 = u * u + v * v
    return (rho2 <= 1.0) & (rho2 >= 0.3)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.28) & (av <= 1.0)) | ((av <= 0.28) & (au <= 1.0))


def _ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + (v / 0.55) ** 2 <= 1.0


def _diamond(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(u) / 0.6 + np.abs(v) <= 1.0


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Five points: the allowed radius falls linearly from 1 at a tip to 0.42 between tips.
    t = np.mod(np.arctan2(v, u) * (5.0 / (2.0 * math.pi)), 1.0)
    return u * u + v * v <= (0.42 + 0.58 * np.abs(2.0 * t - 1.0)) ** 2


SHAPE_MASKS: dict[str, Mask] = {
    "disk": _disk,
    "square": _square,
    "triangle": _triangle,
    "ring": _ring,
    "cross": _cross,
    "ellipse": _ellipse,
    "diamond": _diamond,
    "star": _star,
}


@dataclass(frozen=True)
class _Object:
    """One shape's drawing parameters; coordinates in pixels, depth in metres."""

    class_id: int
    cx: float
    cy: float
    radius: float
    angle: float
    depth: float
    tilt: tuple[float, float]  # metres per radius along x and y
    shade: tuple[float, float]  # relative brightness change per radius along x and y
    color: tuple[float, float, float]  # RGB in 0..255


@lru_cache(maxsize=8)
def _pixel_centres(size: int) -> np.ndarray:
    centres = np.arange(size, dtype=np.float32) + 0.5
    centres.flags.writeable = False
    return centres


@lru_cache(maxsize=8)
def _interpolation_matrix(size: int) -> np.ndarray:
    """(size, TEXTURE_GRID) bilinear weights that upsample a coarse grid to pixel centres."""
    pos = _pixel_centres(size) / size * (TEXTURE_GRID - 1)
    lower = np.clip(np.floor(pos).astype(np.int64), 0, TEXTURE_GRID - 2)
    frac = pos - lower
    weights = np.zeros((size, TEXTURE_GRID), dtype=np.float32)
    rows = np.arange(size)
    weights[rows, lower] = 1.0 - frac
    weights[rows, lower + 1] = frac
    weights.flags.writeable = False
    return weights


def _hsv_rgb(hue: float, saturation: float, value: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return (255.0 * r, 255.0 * g, 255.0 * b)


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A desaturated smooth gradient plus coarse texture (float RGB), and its tilted depth plane."""
    centres = (_pixel_centres(size) / size - 0.5).astype(np.float32)  # -0.5..0.5
    tint = np.array(_hsv_rgb(rng.random(), rng.uniform(0.0, 0.15), rng.uniform(0.3, 0.7)), np.float32)
    gx, gy = (float(g) for g in rng.uniform(-50.0, 50.0, size=2))
    ramp = gx * centres[None, :] + gy * centres[:, None]
    weights = _interpolation_matrix(size)
    # Mostly brightness texture with a little colour, so the background never takes on a class's hue.
    coarse = (TEXTURE_GRID, TEXTURE_GRID)
    grid = rng.normal(0.0, 18.0, size=(1, *coarse)) + rng.normal(0.0, 5.0, size=(3, *coarse))
    # (3, S, S) bilinear upsampling; two matmuls are several times faster than einsum here.
    texture = weights @ grid.astype(np.float32) @ weights.T
    image = np.moveaxis(texture, 0, -1) + (ramp[:, :, None] + tint)
    # |tilt_x| + |tilt_y| <= 2 m over the unit square keeps the plane inside 8..10 m.
    tilt_y = float(rng.uniform(-1.6, -0.4))  # usually nearer at the bottom, like a floor
    tilt_x = float(rng.uniform(-1.0, 1.0)) * (2.0 + tilt_y)
    depth = BACKGROUND_DEPTH + tilt_x * centres[None, :] + tilt_y * centres[:, None]
    return image.astype(np.float32, copy=False), depth.astype(np.float32, copy=False)


def _sample_objects(rng: np.random.Generator, size: int, num_shapes: int, max_objects: int) -> list[_Object]:
    """Objects back to front: each one's depth band lies strictly nearer than every earlier one's."""
    count = int(rng.integers(1, max_objects + 1))
    near, far = OBJECT_DEPTH
    gap = (far - near) / count
    objects = []
    for k in range(count):
        class_id = int(rng.integers(1, num_shapes + 1))
        # Bases are >= gap/2 apart and each tilt moves depth by <= gap/10, so the bands never overlap.
        depth = far - (k + 0.5 * rng.random()) * gap
        tilt = rng.uniform(-0.05, 0.05, size=2) * gap
        shade = rng.uniform(-0.1, 0.1, size=2)
        radius = size * rng.uniform(*RADIUS) * math.sqrt((far + 1.0) / (depth + 1.0))
        hue = HUES[class_id - 1] + rng.uniform(-0.02, 0.02)
        color = _hsv_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))
        cx, cy = rng.uniform(0.1 * size, 0.9 * size, size=2)
        objects.append(
            _Object(
                class_id=class_id,
                cx=float(cx),
                cy=float(cy),
                radius=max(float(radius), 1.0),
                angle=float(rng.uniform(0.0, 2.0 * math.pi)),
                depth=float(depth),
                tilt=(float(tilt[0]), float(tilt[1])),
                shade=(float(shade[0]), float(shade[1])),
                color=color,
            )
        )
    return objects


def _window(centre: float, radius: float, size: int) -> slice:
    return slice(max(0, math.floor(centre - radius)), min(size, math.ceil(centre + radius) + 1))


def _draw(obj: _Object, label: int, image: np.ndarray, depth: np.ndarray, labels: np.ndarray) -> None:
    """Paint one object over what is there, only inside its bounding window (that keeps it fast)."""
    size = labels.shape[0]
    rows, cols = _window(obj.cy, obj.radius, size), _window(obj.cx, obj.radius, size)
    centres = _pixel_centres(size)
    dx = ((centres[cols] - obj.cx) / obj.radius)[None, :]
    dy = ((centres[rows] - obj.cy) / obj.radius)[:, None]
    cos, sin = math.cos(obj.angle), math.sin(obj.angle)
    mask = SHAPE_MASKS[SHAPES[obj.class_id - 1]](cos * dx + sin * dy, cos * dy - sin * dx)
    if not mask.any():
        return
    shading = 1.0 + obj.shade[0] * dx + obj.shade[1] * dy
    surface = obj.depth + obj.tilt[0] * dx + obj.tilt[1] * dy
    # Basic slices are views, so these masked writes land in the full-size arrays.
    labels[rows, cols][mask] = label
    depth[rows, cols][mask] = np.broadcast_to(surface, mask.shape)[mask]
    brightness = np.broadcast_to(shading, mask.shape)[mask]
    image[rows, cols][mask] = brightness[:, None] * np.asarray(obj.color, np.float32)


def _targets(objects: list[_Object], labels: np.ndarray, depth: np.ndarray) -> dict[str, np.ndarray]:
    """Renumber the visible objects 1..K in drawing order and derive every target from that."""
    count = len(objects)
    visible = np.bincount(labels.ravel(), minlength=count + 1)[1:] > 0
    renumber = np.zeros(count + 1, dtype=np.int32)
    renumber[1:][visible] = np.arange(1, int(visible.sum()) + 1, dtype=np.int32)
    classes = np.array([0] + [obj.class_id for obj in objects], dtype=np.uint8)
    instances = renumber[labels]
    return {
        "semantic": classes[labels],
        "instances": instances,
        "depth": depth,
        "boundary": instance_boundaries(instances),
        "boxes": instance_boxes(instances),
    }


def render(
    rng: np.random.Generator, image_size: int, num_shapes: int, max_objects: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One uint8 (S, S, 3) image and its targets, drawn entirely from `rng`."""
    image, objects, labels, depth = _scene(rng, image_size, num_shapes, max_objects)
    return image, _targets(objects, labels, depth)


def _scene(
    rng: np.random.Generator, image_size: int, num_shapes: int, max_objects: int
) -> tuple[np.ndarray, list[_Object], np.ndarray, np.ndarray]:
    """The image with what its targets are derived from (objects, per-pixel object index, depth);
    all of `rng`'s draws happen here, so an image rendered without targets is the same image."""
    image, depth = _background(rng, image_size)
    labels = np.zeros((image_size, image_size), dtype=np.int32)
    objects = _sample_objects(rng, image_size, num_shapes, max_objects)
    for label, obj in enumerate(objects, start=1):
        _draw(obj, label, image, depth, labels)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= NOISE_SIGMA
    image += noise
    np.clip(image, 0.0, 255.0, out=image)
    return image.astype(np.uint8), objects, labels, depth


def _int_option(name: str, value: Any, low: int, high: int | None = None) -> int:
    """Check an integer option and name it in the error, so the CLI's one-line message is actionable."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise MaxaError(f"synthetic dataset: option {name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        expected = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise MaxaError(f"synthetic dataset: option {name} must be {expected}, got {value}")
    return int(value)


class SyntheticDataset:
    """Coloured shapes on a textured background: the download-free default dataset.

    The option `num_classes` counts shape kinds (1..8); semantic id 0 is background and shapes are
    ids 1..num_classes, so the attribute `num_classes` (semantic classes *including* background) is
    the option plus one, and `class_names` is ["background", <shape names>...] of that length.
    `config()` returns the constructor options (the option value of num_classes), so
    `SyntheticDataset(**ds.config())` rebuilds the same dataset. Index i of a (seed, split) is drawn
    from its own generator, so samples do not depend on access order. `root` is accepted and ignored
    so every reader shares one signature.
    """

    name = "synthetic"

    def __init__(
        self,
        *,
        split: str = "train",
        num_images: int = 64,
        image_size: int = 128,
        num_classes: int = 4,
        max_objects: int = 5,
        seed: int = 0,
        root: str | None = None,
    ) -> None:
        if split not in SPLITS:
            raise MaxaError(
                f"synthetic dataset: option split must be one of {', '.join(SPLITS)}, got {split!r}"
            )
        self.split = split
        self.num_images = _int_option("num_images", num_images, 1)
        self.image_size = _int_option("image_size", image_size, 1)
        self.num_shapes = _int_option("num_classes", num_classes, 1, len(SHAPES))
        self.max_objects = _int_option("max_objects", max_objects, 1)
        self.seed = _int_option("seed", seed, 0)
        self.num_classes = self.num_shapes + 1
        self.class_names = ["background", *SHAPES[: self.num_shapes]]

    def config(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "num_images": self.num_images,
            "image_size": self.image_size,
            "num_classes": self.num_shapes,
            "max_objects": self.max_objects,
            "seed": self.seed,
        }

    def __len__(self) -> int:
        return self.num_images

    def _rng(self, index: int) -> np.random.Generator:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"synthetic dataset indices must be integers, got {type(index).__name__}")
        if not 0 <= index < self.num_images:
            raise IndexError(f"synthetic dataset index {index} out of range 0..{self.num_images - 1}")
        return np.random.default_rng([self.seed, SPLITS.index(self.split), int(index)])

    def __getitem__(self, index: int) -> Sample:
        rng = self._rng(index)
        image, targets = render(rng, self.image_size, self.num_shapes, self.max_objects)
        return Sample(id=f"synthetic-{self.split}-{int(index):06d}", image=image, targets=targets)

    def image(self, index: int) -> np.ndarray:
        """Sample `index`'s image without rendering its targets (extraction)."""
        return _scene(self._rng(index), self.image_size, self.num_shapes, self.max_objects)[0]
