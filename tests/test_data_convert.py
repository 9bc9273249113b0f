"""to_model_input: ranges, shapes, channel conversion and the resize policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contrasyn.data import to_model_input
from contrasyn.data.convert import default_resize_policy
from contrasyn.errors import ConfigError, DataError


def random_images(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def test_identity_size_is_exact_and_channels_first() -> None:
    images = random_images(5, 32, 32, 3)
    x = to_model_input(images)
    assert x.dtype == torch.float32 and x.shape == (5, 3, 32, 32)
    np.testing.assert_allclose(x.numpy(), images.transpose(0, 3, 1, 2) / 255.0, atol=1e-7)
    assert to_model_input(np.full((1, 4, 4, 3), 255, np.uint8), size=4, channels=1).max() <= 1.0


def test_grey_replicated_and_colour_to_luma() -> None:
    grey = random_images(3, 8, 8, 1)
    x = to_model_input(grey, size=8)
    assert x.shape == (3, 3, 8, 8)
    assert torch.equal(x[:, 0], x[:, 2]) and torch.equal(x[:, 1], x[:, 2])
    colour = np.zeros((1, 2, 2, 3), np.uint8)
    colour[..., 1] = 255
    y = to_model_input(colour, size=2, channels=1)
    assert y.shape == (1, 1, 2, 2)
    torch.testing.assert_close(y, torch.full((1, 1, 2, 2), 0.587))


def test_resize_antialiased_range_and_shape() -> None:
    images = random_images(4, 28, 28, 1)
    x = to_model_input(images, size=32)
    assert x.shape == (4, 3, 32, 32) and 0.0 <= x.min() and x.max() <= 1.0
    down = to_model_input(random_images(2, 64, 64, 3), size=16)
    assert down.shape == (2, 3, 16, 16)
    # Antialiasing averages a checkerboard to grey instead of aliasing it.
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)[None, ..., None]
    assert torch.allclose(to_model_input(board, size=8), torch.tensor(0.5), atol=0.02)


def test_pad_centres_and_keeps_pixels() -> None:
    images = random_images(2, 28, 28, 1)
    x = to_model_input(images, size=32, channels=1, resize="pad")
    assert x.shape == (2, 1, 32, 32)
    torch.testing.assert_close(
        x[:, 0, 2:30, 2:30], torch.from_numpy(images[..., 0] / 255.0).float()
    )
    assert x[:, :, :2].abs().sum() == 0 and x[:, :, :, 30:].abs().sum() == 0
    with pytest.raises(DataError, match="cannot pad 40x40"):
        to_model_input(random_images(1, 40, 40, 1), size=32, resize="pad")


def test_none_policy_and_bad_arguments() -> None:
    assert to_model_input(random_images(1, 32, 32, 3), resize="none").shape == (1, 3, 32, 32)
    with pytest.raises(DataError, match="resize='none'"):
        to_model_input(random_images(1, 28, 28, 1), resize="none")
    with pytest.raises(DataError, match="uint8"):
        to_model_input(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(DataError, match="channels"):
        to_model_input(random_images(1, 8, 8, 4))
    with pytest.raises(ConfigError):
        to_model_input(random_images(1, 8, 8, 3), resize="crop")


def test_chunking_matches_one_shot(monkeypatch: pytest.MonkeyPatch) -> None:
    import contrasyn.data.convert as convert

    images = random_images(10, 12, 12, 3)
    whole = to_model_input(images, size=16)
    monkeypatch.setattr(convert, "_CHUNK", 3)
    torch.testing.assert_close(to_model_input(images, size=16), whole)
    assert to_model_input(images[:0], size=16).shape == (0, 3, 16, 16)


def test_default_resize_policy() -> None:
    assert default_resize_policy("fashion-mnist") == "pad"
    assert default_resize_policy("cifar10") == "resize"
