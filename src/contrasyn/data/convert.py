"""Turn stored uint8 images (N, H, W, C) into the float tensors models consume.

Datasets stay uint8 channels-last in memory; this conversion runs per task, in chunks, so
the only large allocation is the output tensor itself.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from contrasyn.errors import ConfigError, DataError

RESIZE_POLICIES = ("resize", "pad", "none")

# ITU-R BT.601 luma weights, the same ones PIL uses for RGB -> L.
LUMA = (0.299, 0.587, 0.114)

_CHUNK = 2048


def default_resize_policy(dataset_name: str) -> str:
    """The resize policy to use for ``dataset_name`` when bringing it to the model size.

    Fashion-MNIST (28 x 28) is zero-padded to 32 x 32 ("pad"): its background is exactly
    zero, so padding adds more background and keeps every original pixel value, whereas
    resampling would blur the thin strokes. Every other dataset uses "resize".
    """
    return "pad" if dataset_name == "fashion-mnist" else "resize"


def _fit(x: torch.Tensor, size: int, resize: str) -> torch.Tensor:
    """Bring a float (n, c, h, w) chunk to (n, c, size, size) by the given policy."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if resize == "resize":
        return F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    if resize == "pad":
        if h > size or w > size:
            raise DataError(
                f"cannot pad {h}x{w} images to {size}x{size}: they are larger; use resize='resize'"
            )
        top, left = (size - h) // 2, (size - w) // 2
        return F.pad(x, (left, size - w - left, top, size - h - top))
    raise DataError(
        f"images are {h}x{w} but resize='none' requires {size}x{size}; use resize='resize' or 'pad'"
    )


def to_model_input(
    images: np.ndarray,
    size: int = 32,
    channels: int = 3,
    resize: str = "resize",
    floats: bool = False,
) -> torch.Tensor:
    """Convert uint8 images (N, H, W, C) to a float32 tensor (N, channels, size, size) in [0, 1].
    With ``floats=True``, float images (N, H, W, C) in [0, 1] are accepted too (taken as
    they are; values checked).

    Channels: 1 -> 3 replicates the grey plane; 3 -> 1 takes BT.601 luma
    (0.299 R + 0.587 G + 0.114 B). ``resize``: "resize" (bilinear, antialiased when
    shrinking), "pad" (centred zero padding; images must not exceed ``size``), "none"
    (images must already be ``size`` x ``size``). See ``default_resize_policy``.
    """
    if resize not in RESIZE_POLICIES:
        raise ConfigError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}")
    if size < 1:
        raise ConfigError(f"size must be positive, got {size}")
    is_float = floats and isinstance(images, np.ndarray) and images.dtype.kind == "f"
    if (
        not isinstance(images, np.ndarray)
        or images.ndim != 4
        or not (images.dtype == np.uint8 or is_float)
    ):
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images)
        kinds = "uint8 (or [0, 1] float)" if floats else "uint8"
        raise DataError(f"expected {kinds} images of shape (N, H, W, C), got {got}")
    if is_float and images.size and not (0 <= np.min(images) and np.max(images) <= 1):
        raise DataError("float images must be finite and in [0, 1]")
    if images.shape[-1] not in (1, 3):
        raise DataError(f"expected 1 or 3 image channels, got {images.shape[-1]}")

    out = torch.empty((len(images), channels, size, size), dtype=torch.float32)
    luma = torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1)
    for start in range(0, len(images), _CHUNK):
        # np.array copies the (small) uint8 chunk: torch.from_numpy needs a writable,
        # contiguous array and callers may pass read-only or strided views.
        chunk = torch.from_numpy(np.array(images[start : start + _CHUNK]))
        x = chunk.permute(0, 3, 1, 2).float()
        if not is_float:
            x = x.div_(255.0)
        if x.shape[1] == 3 and channels == 1:
            # Before resizing: both are linear, and this way only one plane is resampled.
            # The clamp absorbs float32 rounding of the weights' sum (white -> 1.0000001).
            x = (x * luma).sum(dim=1, keepdim=True).clamp_(0.0, 1.0)
        # A grey chunk is replicated by broadcasting on assignment, after resizing one plane.
        out[start : start + len(x)] = _fit(x, size, resize)
    return out
