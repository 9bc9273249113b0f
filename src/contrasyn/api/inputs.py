"""Numpy image arrays to one layout, by documented rules that never guess.

Input shapes (numpy arrays; ``read_images``): uint8, or floats in [0, 1].

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

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrasyn.data import find_images, load_images, to_model_input
from contrasyn.data.base import ImageDataset
from contrasyn.data.protocol import OneClassTask
from contrasyn.errors import DataError

# Everything ``Detector`` reads images from.
Images = np.ndarray | Tensor | str | Path | list | tuple | ImageDataset | OneClassTask


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


def image_folders(X: Any) -> tuple[Path, ...]:
    """The folders of image files ``fit`` read (a folder given, or the files' folders), where
    ``save`` must not write; none for arrays, tensors and datasets."""
    if isinstance(X, str | Path):
        return (Path(X),) if Path(X).is_dir() else (Path(X).parent,)
    if isinstance(X, list | tuple) and all(isinstance(x, str | Path) for x in X):
        return tuple(dict.fromkeys(Path(x).parent for x in X))
    return ()


def read_images(
    X: Any, spec: dict[str, int], resize: str = "resize", skip_bad: bool = False
) -> tuple[Tensor, list[Path] | None]:
    """Model input (N, C, S, S) in [0, 1] from any accepted kind of input, plus the
    file paths when the input was files (so results can name them). Arrays follow the
    shape rules above; an empty input is an error."""
    size, channels = spec["image_size"], spec["channels"]
    paths = None
    if isinstance(X, OneClassTask | ImageDataset):
        X = X.train_images
    if isinstance(X, str | Path):
        X = find_images(X) if Path(X).is_dir() else [Path(X)]
    if isinstance(X, list | tuple):
        if not X:
            raise DataError("no images: the list of image paths is empty")
        if not all(isinstance(x, str | Path) for x in X):
            kinds = sorted({type(x).__name__ for x in X if not isinstance(x, str | Path)})
            raise DataError(
                f"a list must hold image file paths, got {', '.join(kinds)}; stack arrays "
                "into one array (N, H, W, C) or (N, C, H, W)"
            )
        arrays, paths = load_images(X, size, channels, resize, skip_bad=skip_bad)
        X = arrays
    if isinstance(X, np.ndarray):
        policy = "pad" if resize == "pad" else "resize"
        return to_model_input(channels_last(X), size, channels, policy, floats=True), paths
    if isinstance(X, Tensor):
        expected = (channels, size, size)
        if X.ndim != 4 or tuple(X.shape[1:]) != expected:
            raise DataError(
                f"tensor images must be the model input (N, {', '.join(map(str, expected))}), "
                f"got {tuple(X.shape)}; pass other shapes as a numpy array (uint8, or "
                "floats in [0, 1]: (N, H, W, C), (N, C, H, W), (H, W, C), (N, H, W), (H, W))"
            )
        if len(X) == 0:
            raise DataError(f"no images: the tensor is empty {tuple(X.shape)}")
        if X.device.type == "meta":
            raise DataError(
                "tensor images are on the meta device (a shape without data); pass "
                "tensors that hold the images, on the CPU or a GPU"
            )
        if not torch.is_floating_point(X):
            raise DataError(f"tensor images must be floats in [0, 1], got {X.dtype}")
        if not bool(torch.isfinite(X).all()) or X.min() < 0 or X.max() > 1:
            raise DataError("tensor images must be finite floats in [0, 1]")
        return X.float().cpu(), paths
    raise DataError(
        f"cannot read images from a {type(X).__name__}: pass a folder, image paths, a uint8 "
        "or [0, 1] float array (N, H, W, C) or (N, C, H, W), a float tensor (N, C, H, W) "
        "in [0, 1], or an ImageDataset"
    )
