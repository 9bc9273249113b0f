"""G, D, E and D': SNGAN's layer plan at 32x32, one stage more per doubling, spectral norm on
every layer of D, and E as G's mirror."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrasyn.methods.csi.nets import Discriminator, Encoder, Generator, LatentDiscriminator
from contrasyn.methods.csi.nets.sngan import stage_channels


def _convs(net: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, kind)]


def test_sngan_layer_plan_at_32() -> None:
    g, d = Generator(image_size=32), Discriminator(image_size=32)
    assert g.dense.out_features == 4 * 4 * 512
    assert [c.out_channels for c in _convs(g, nn.ConvTranspose2d)] == [256, 128, 64]
    assert all(
        c.kernel_size == (4, 4) and c.stride == (2, 2) for c in _convs(g, nn.ConvTranspose2d)
    )
    convs = _convs(d, nn.Conv2d)
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1]
    slopes = {m.negative_slope for m in d.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.1}


def test_every_discriminator_layer_is_spectrally_normalised() -> None:
    d = Discriminator(image_size=32, width=8)
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    # in training mode the power iteration keeps each layer's top singular value near 1
    d.train()
    for _ in range(30):
        d(torch.rand(2, 3, 32, 32))
    w = d.logit.weight
    assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_shapes_at_each_resolution(size: int) -> None:
    g, d = Generator(16, 1, size, 8), Discriminator(1, size, 8)
    e, dz = Encoder(16, 1, size, 8), LatentDiscriminator(16)
    h = torch.randn(3, 16)
    x = g(h)
    assert x.shape == (3, 1, size, size)
    assert d(x).shape == (3,) and e(x).shape == (3, 16) and dz(h).shape == (3,)
    # one up-stage per doubling: 2 at 16, 3 at 32, 4 at 64
    assert len(_convs(g, nn.ConvTranspose2d)) == {16: 2, 32: 3, 64: 4}[size]


def test_encoder_mirrors_the_generator() -> None:
    g, e = Generator(image_size=32, width=8), Encoder(image_size=32, width=8)
    up = [c.out_channels for c in _convs(g, nn.ConvTranspose2d)]
    down = [c.out_channels for c in _convs(e, nn.Conv2d)]
    assert down[1:] == [*up[::-1][1:], 64]  # 8 -> 16 -> 32 -> 64 channels going down
    assert e.dense.in_features == 4 * 4 * 64 and e.dense.out_features == 128


def test_stage_channels_and_bad_sizes() -> None:
    assert stage_channels(32, 64) == [512, 256, 128, 64]
    assert stage_channels(128, 64) == [512, 256, 128, 64, 64, 64]
    with pytest.raises(ValueError, match="power of two"):
        Generator(image_size=48)
