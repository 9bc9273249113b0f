"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), shipped inside its wheel.

Needs no files, so it is the dataset of choice for smoke tests and examples that must run
offline. It has no official test split: we make a seeded stratified one (below).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contrasyn.data.base import ImageDataset, register
from contrasyn.data.folder import stratified_split
from contrasyn.errors import DataError


@register("digits")
def digits(
    root: str | Path | None = None, test_fraction: float = 0.3, seed: int = 0
) -> ImageDataset:
    """Load the digits as uint8 images (N, 8, 8, 1), classes "0".."9".

    Pixel values 0..16 are scaled to 0..255 (``round(v * 255 / 16)``). Split: for each
    digit separately, ``round(n * test_fraction)`` of its ``n`` images go to test, chosen
    by ``numpy.random.default_rng(seed)`` (``folder.stratified_split``); the defaults
    (0.3, seed 0) give 1,258 train / 539 test images. ``root`` is not used (the data ships
    with scikit-learn) and must be None.
    """
    from sklearn.datasets import load_digits  # here: sklearn costs ~1.5 s to import

    if root is not None:
        raise DataError(f"digits: ships with scikit-learn and takes no root (got {root})")
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    return ImageDataset(
        name="digits",
        train_images=np.ascontiguousarray(images[train_idx]),
        train_labels=labels[train_idx],
        test_images=np.ascontiguousarray(images[test_idx]),
        test_labels=labels[test_idx],
        class_names=[str(d) for d in range(10)],
    )
