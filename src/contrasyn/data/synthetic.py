"""A small generated dataset with real structure, for tests that must beat chance quickly.

Every class is an *oriented* shape family: its rot90, rot180 and rot270 versions look
clearly different from the upright shape and from one another, so the rotation-based
methods of this library (CSI's rot90 shifted instances, rotation prediction) have
something to learn on every class. The six classes, in label order:

- ``triangle_up``: isosceles triangle, apex at the top, base at the bottom;
- ``letter_L``: vertical bar on the left joined to a bar along the bottom;
- ``letter_T``: bar along the top with a stem hanging down from its middle;
- ``arrow_right``: horizontal shaft with a triangular head on the right;
- ``top_stripes``: a block of three horizontal bars centred in the upper quarter of the
  image, never reaching below 55% of its height (rot180 moves it to the bottom,
  rot90/rot270 make the bars vertical, on the left or right);
- ``half_disc``: half disc, flat side down, dome up.

Each image draws its shape at a random centre, size, small tilt (up to 10 degrees) and
stroke width, with a random brightness on a noisy, randomly lit background. Apart from
``top_stripes``, whose position is part of its orientation, the centre range is the same
square about the image centre for every class, so orientation lives in the shape. Each
shape is anchored off its centre of mass (the triangle's and arrow's mass lies towards
the base and the head, the half disc sits on its anchor), so even the class-mean image,
blurred by the jitter, keeps the orientation: a test checks that it differs from its
rot90 and rot180 versions. Raw-pixel anomaly scores are well above chance (the shapes
differ in area and layout) but not perfect (position and size vary more than shape),
leaving room for learned features. Fully deterministic given ``seed``; about 0.1 s for
the defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from contrasyn.data.base import ImageDataset, register
from contrasyn.errors import ConfigError, DataError

# A mask function gets shape-local coordinates (v down, u right) measured from the shape's
# anchor (the drawn centre) in units of its half-height (v) and half-width (u), and the
# stroke width w in the same units, all broadcastable to (n, size, size); it returns a
# boolean mask. Shapes mostly fill [-1, 1] x [-1, 1].
_Mask = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _triangle_up(v: np.ndarray, u: np.ndarray, w: np.ndarray) -> np.ndarray:
    # Apex at v = -1, base at v = 1, half-width growing from 0 to 1.
    return (abs(v) <= 1) & (abs(u) <= (v + 1) / 2)


def _letter_l(v: np.ndarray, u: np.ndarray, w: np.ndarray) -> np.ndarray:
    # Box u in [-0.8, 0.8]: upright on the left, foot along the bottom to the right.
    upright = (u >= -0.8) & (u <= -0.8 + w) & (abs(v) <= 1)
    foot = (v >= 1 - w) & (v <= 1) & (u >= -0.8) & (u <= 0.8)
    return upright | foot


def _letter_t(v: np.ndarray, u: np.ndarray, w: np.ndarray) -> np.ndarray:
    bar = (v >= -1) & (v <= -1 + w) & (abs(u) <= 1)
    stem = (abs(u) <= w / 2) & (abs(v) <= 1)
    return bar | stem


def _arrow_right(v: np.ndarray, u: np.ndarray, w: np.ndarray) -> np.ndarray:
    # Tail at u = -0.6, head from u = 0.2 (half-height 1) to the tip at u = 1.2.
    shaft = (u >= -0.6) & (u <= 0.25) & (abs(v) <= w / 2)
    head = (u >= 0.2) & (abs(v) <= 1.2 - u)
    return shaft | head


def _top_stripes(v: np.ndarray, u: np.ndarray, w: np.ndarray) -> np.ndarray:
    # Five equal bands from the top of the box: bar, gap, bar, gap, bar.
    in_box = (abs(v) <= 1) & (abs(u) <= 1)
    return in_box & (np.floor((v + 1) * 2.5) % 2 == 0)


def _half_disc(v: np.ndarray, u: np.ndarray, w: np.ndarray) -> np.ndarray:
    # Radius 1, anchored at the middle of its flat bottom edge: the dome is v in [-1, 0].
    return (v <= 0) & (u**2 + v**2 <= 1)


class _Shape(NamedTuple):
    mask: _Mask
    centre_y: tuple[float, float]  # ranges as fractions of the image size
    centre_x: tuple[float, float]
    half_height: tuple[float, float]
    aspect: tuple[float, float]  # half-width / half-height


_CENTRED = ((0.32, 0.68), (0.32, 0.68), (0.17, 0.29), (1.0, 1.0))

SHAPES: dict[str, _Shape] = {
    "triangle_up": _Shape(_triangle_up, *_CENTRED),
    "letter_L": _Shape(_letter_l, *_CENTRED),
    "letter_T": _Shape(_letter_t, *_CENTRED),
    "arrow_right": _Shape(_arrow_right, *_CENTRED),
    # Untilted, the block spans rows 0.05..0.48 of the image; tilted, at most 0..0.55.
    "top_stripes": _Shape(_top_stripes, (0.24, 0.29), (0.4, 0.6), (0.14, 0.19), (1.5, 2.0)),
    "half_disc": _Shape(_half_disc, *_CENTRED),
}

_MAX_TILT = np.deg2rad(10.0)


def _draw(shape: _Shape, n: int, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """n images (n, size, size, channels) uint8 of one shape family.

    Drawn in grey and replicated across channels, so ``channels=3`` holds the same images
    as ``channels=1`` for a given seed.
    """
    cy = rng.uniform(*shape.centre_y, (n, 1, 1)) * size
    cx = rng.uniform(*shape.centre_x, (n, 1, 1)) * size
    ry = rng.uniform(*shape.half_height, (n, 1, 1)) * size
    rx = ry * rng.uniform(*shape.aspect, (n, 1, 1))
    tilt = rng.uniform(-_MAX_TILT, _MAX_TILT, (n, 1, 1))
    stroke = rng.uniform(0.45, 0.65, (n, 1, 1))
    grid = np.arange(size, dtype=np.float64) + 0.5
    dy, dx = grid[None, :, None] - cy, grid[None, None, :] - cx
    cos, sin = np.cos(tilt), np.sin(tilt)
    v = (cos * dy - sin * dx) / ry
    u = (sin * dy + cos * dx) / rx
    mask = shape.mask(v, u, stroke)
    background = rng.uniform(0.0, 0.3, (n, 1, 1))
    foreground = rng.uniform(0.55, 1.0, (n, 1, 1))
    noise = rng.normal(0.0, 0.08, (n, size, size))
    img = np.where(mask, foreground, background) + noise
    grey = np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(grey[..., None], channels, axis=3)


def _split(
    n_per_class: int, size: int, channels: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    images = np.concatenate([_draw(s, n_per_class, size, channels, rng) for s in SHAPES.values()])
    labels = np.repeat(np.arange(len(SHAPES), dtype=np.int64), n_per_class)
    order = rng.permutation(len(labels))  # interleave classes, as real datasets are
    return np.ascontiguousarray(images[order]), labels[order]


@register("synthetic")
def synthetic(
    root: str | Path | None = None,
    n_train_per_class: int = 200,
    n_test_per_class: int = 100,
    size: int = 32,
    channels: int = 1,
    seed: int = 0,
) -> ImageDataset:
    """Generate the oriented-shape dataset: 6 classes, none of them rot90-invariant.

    Classes in label order: triangle_up, letter_L, letter_T, arrow_right, top_stripes,
    half_disc (see the module docstring). Images are uint8 (N, size, size, channels);
    ``channels=3`` replicates the grey image into all three channels (no colour cue: class
    identity and orientation live in the shape only). Train and test come from one
    ``numpy.random.default_rng(seed)`` stream (train first). ``root`` is not used.
    """
    if root is not None:
        raise DataError(f"synthetic: generated in memory, takes no root (got {root})")
    if channels not in (1, 3):
        raise ConfigError(f"synthetic: channels must be 1 or 3, got {channels!r}")
    if size < 8 or n_train_per_class < 1 or n_test_per_class < 0:
        raise ConfigError(
            "synthetic: need size >= 8, n_train_per_class >= 1 and n_test_per_class >= 0"
        )
    rng = np.random.default_rng(seed)
    train = _split(n_train_per_class, size, channels, rng)
    test = _split(n_test_per_class, size, channels, rng)
    return ImageDataset("synthetic", *train, *test, class_names=list(SHAPES))
