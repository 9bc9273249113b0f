"""Numpy image arrays to one layout, by documented rules that never guess.

Input shapes (numpy arrays; ``_images``): uint8, or floats in [0, 1].

| shape | read as |
|---|---|
| (N, H, W, C), C in {1, 3}, axis 1 not in {1, 3} | N images, channels last |
| (N, C, H, W), C in {1, 3}, last axis not in {1, 3} | N images, channels first |
| (H, W, C), C in {1, 3}, H not in {1, 3} | one image |
| (N, H, W), W not in {1, 3}, N not 3 | N grey images |
| (H, W) | one grey image |

Anything else (a 4-D array with 1 or 3 on both axis 1 and the last axis, (3, H, W): three
grey images or one channels-first image, no channel axis, an empty array, other dtypes) is
refused with a ``DataError`` that says which
shape to pass: a shape is never guessed. Tensors are the model input itself: float (N, C, S,
S) in [0, 1], exactly the model's channels and size.
"""

from __future__ import annotations

import numpy as np

from contrasyn.errors import DataError


def channels_last(X: np.ndarray) -> np.ndarray:
    """A numpy image array as (N, H, W, C), C in {1, 3}, by the documented shape rules
    (module docstring); uint8, or floats in [0, 1]. Ambiguous shapes are refused."""
    shape = tuple(X.shape)
    if X.dtype not in (np.uint8, np.float16, np.float32, np.float64):
        raise DataError(
            f"numpy images must be uint8 or floats in [0, 1], got {X.dtype}; convert with "
            "X.astype(np.uint8) (values 0..255) or X / 255.0"
        )
    if X.size == 0:
        raise DataError(f"no images: the array is empty {shape}")
    if X.dtype.kind == "f":
        lo, hi = float(np.min(X)), float(np.max(X))  # NaN propagates: refused below
        if not (0 <= lo and hi <= 1):
            raise DataError(
                f"float images must be finite and in [0, 1], got values in [{lo:g}, {hi:g}]"
                + ("; uint8 images 0..255 are passed as uint8" if hi > 1 else "")
            )
    ch = (1, 3)
    if X.ndim == 2:  # (H, W): one grey image
        return X[None, ..., None]
    if X.ndim == 3:
        first, last = shape[0] in ch, shape[2] in ch
        if last and not first:  # (H, W, C): one image
            return X[None]
        if not last and (not first or shape[0] == 1):  # (N, H, W) grey images
            return X[..., None]
        raise DataError(
            f"ambiguous image array {shape}: it could be {shape[0]} grey images (N, H, W), one "
            "channels-first image (C, H, W) or one channels-last image (H, W, C); pass a 4-D "
            f"array: (N, H, W, 1) for grey images, (1, H, W, C) or (1, C, H, W) for one image"
        )
    if X.ndim == 4:
        first, last = shape[1] in ch, shape[3] in ch
        if last and not first:
            return X
        if first and not last:
            return X.transpose(0, 2, 3, 1)
        if first and last:
            raise DataError(
                f"ambiguous image array {shape}: axis 1 and the last axis could both be the "
                "channels; resize the images, or pass them one layout at a time as files"
            )
        raise DataError(
            f"image array {shape} has no channel axis: (N, H, W, C) or (N, C, H, W) with C "
            "1 (grey) or 3 (colour)"
        )
    raise DataError(
        f"image arrays are (N, H, W, C), (N, C, H, W), (H, W, C), (N, H, W) or (H, W); "
        f"got {X.ndim} dimensions {shape}"
    )
