"""SNGAN's "standard CNN" generator G and spectrally normalised discriminator D (Miyato et al.
2018, Table 3), as the paper's method uses them (docs/METHOD.md, "Notation").

Resolution-general: G starts from a 4x4 map and doubles it ``log2(size / 4)`` times, D halves
it as many times, so 32x32 gives exactly SNGAN's networks and 64x64 and up add one stage per
doubling. ``width`` is SNGAN's base channel count (64): the deepest stage has 8x ``width``
channels, each stage towards the image halves it, never below ``width``.
"""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


def num_stages(image_size: int) -> int:
    """Doublings from 4x4 to ``image_size`` (a power of two >= 8)."""
    stages = round(math.log2(image_size / 4))
    if image_size < 8 or 4 * 2**stages != image_size:
        raise ValueError(f"image size must be a power of two >= 8, got {image_size}")
    return stages


def stage_channels(image_size: int, width: int) -> list[int]:
    """Channels at 4x4, 8x8, ..., ``image_size``: 8w, 4w, 2w, w, w, ..."""
    return [max(8 * width // 2**i, width) for i in range(num_stages(image_size) + 1)]


class Generator(nn.Module):
    """h in R^latent -> dense 4x4x8w (BN, ReLU) -> [deconv 4x4 s2 (BN, ReLU)] x stages ->
    conv 3x3 -> tanh, mapped to [0, 1] so that G's images live where real images do."""

    def __init__(
        self, latent_dim: int = 128, channels: int = 3, image_size: int = 32, width: int = 64
    ) -> None:
        super().__init__()
        chans = stage_channels(image_size, width)
        self.latent_dim, self.base = latent_dim, chans[0]
        self.dense = nn.Linear(latent_dim, 4 * 4 * chans[0])
        layers: list[nn.Module] = [nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True)]
        for c_in, c_out in zip(chans, chans[1:], strict=False):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.Conv2d(chans[-1], channels, 3, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        x = self.body(self.dense(h).view(len(h), self.base, 4, 4))
        return (x + 1) / 2


class Discriminator(nn.Module):
    """[conv 3x3 c, conv 4x4 s2 c] per stage with c = w, 2w, 4w, ... then conv 3x3 8w and a
    dense logit; spectral norm on every layer, leaky ReLU 0.1. Takes [0, 1] images."""

    def __init__(self, channels: int = 3, image_size: int = 32, width: int = 64) -> None:
        super().__init__()
        chans = stage_channels(image_size, width)[::-1][:-1]  # w, 2w, 4w at 32x32
        layers: list[nn.Module] = []
        c_prev = channels
        for c in chans:
            layers += [
                spectral_norm(nn.Conv2d(c_prev, c, 3, padding=1)),
                nn.LeakyReLU(0.1, inplace=True),
                spectral_norm(nn.Conv2d(c, c, 4, stride=2, padding=1)),
                nn.LeakyReLU(0.1, inplace=True),
            ]
            c_prev = c
        layers += [spectral_norm(nn.Conv2d(c_prev, 8 * width, 3, padding=1))]
        layers += [nn.LeakyReLU(0.1, inplace=True), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.logit = spectral_norm(nn.Linear(4 * 4 * 8 * width, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.logit(self.body((x - 0.5) / 0.5)).squeeze(1)
