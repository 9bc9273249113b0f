"""Batch-wise differentiable augmentations (T) and the rotation shifts (S)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrasyn.methods.csi.augment import (
    ColorJitter,
    HorizontalFlip,
    RandomGaussianBlur,
    RandomGrayscale,
    RandomResizedCrop,
    SimCLRAugment,
    grayscale,
    rotate_shifts,
    shift_labels,
    shifted_views,
)


def _images(n: int = 8, c: int = 3, side: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, side, side, generator=torch.Generator().manual_seed(seed))


MODULES = [
    lambda: HorizontalFlip(),
    lambda: ColorJitter(p=1.0),
    lambda: RandomGrayscale(p=0.5),
    lambda: RandomResizedCrop(),
    lambda: RandomResizedCrop(fixed_scale=0.54),
    lambda: RandomGaussianBlur(p=1.0),
    lambda: SimCLRAugment(),
    lambda: SimCLRAugment(blur=True, fixed_crop_scale=0.54),
]


@pytest.mark.parametrize("make", MODULES)
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_and_range_preserved(make, channels: int) -> None:
    torch.manual_seed(0)
    x = _images(6, channels, 8)
    x[0] = 0.0
    x[1] = 1.0
    out = make()(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6


def test_flip_p1_flips_exactly_and_p0_is_identity() -> None:
    x = _images(4)
    torch.testing.assert_close(HorizontalFlip(p=1.0)(x), x.flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(HorizontalFlip(p=0.0)(x), x, rtol=0, atol=0)
    assert HorizontalFlip(p=1.0)(x)[0, 0, 0, 0] == x[0, 0, 0, -1]


def test_flip_is_per_sample() -> None:
    torch.manual_seed(1)
    x = _images(1).expand(64, -1, -1, -1)
    out = HorizontalFlip(p=0.5)(x)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped | kept).all()
    assert 10 < int(flipped.sum()) < 54


def test_crop_full_square_is_identity() -> None:
    torch.manual_seed(2)
    x = _images(4, 3, 8)
    out = RandomResizedCrop(ratio=(1.0, 1.0), fixed_scale=1.0)(x)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)


def test_crop_sample_parameters() -> None:
    torch.manual_seed(3)
    crop = RandomResizedCrop(fixed_scale=0.54)
    w, h, cx, cy = crop.sample(256, torch.device("cpu"))
    torch.testing.assert_close(w * h, torch.full((256,), 0.54), rtol=1e-5, atol=1e-6)
    aspect = w / h
    assert aspect.min() >= 3 / 4 - 1e-5 and aspect.max() <= 4 / 3 + 1e-5
    # the crop stays inside the image: |centre| + half-size <= 1 (normalised coordinates)
    assert (cx.abs() + w <= 1 + 1e-6).all() and (cy.abs() + h <= 1 + 1e-6).all()
    assert w.std() > 0 and cx.std() > 0
    w, h, _, _ = RandomResizedCrop().sample(512, torch.device("cpu"))
    area = w * h
    assert area.min() >= 0.08 - 1e-5 and area.max() <= 1 + 1e-5 and area.std() > 0.1


def test_crop_falls_back_to_whole_image_when_no_candidate_fits() -> None:
    torch.manual_seed(4)
    # area 1 with a ratio far from 1 never fits inside the image
    w, h, cx, cy = RandomResizedCrop(ratio=(4.0, 5.0), fixed_scale=1.0).sample(
        5, torch.device("cpu")
    )
    for t in (w, h):
        torch.testing.assert_close(t, torch.ones(5))
    torch.testing.assert_close(cx, torch.zeros(5))
    torch.testing.assert_close(cy, torch.zeros(5))


@pytest.mark.parametrize(
    "module",
    [ColorJitter(p=1.0), RandomResizedCrop(), SimCLRAugment(jitter_p=1.0)],
    ids=["jitter", "crop", "simclr"],
)
def test_random_parameters_are_per_sample(module: nn.Module) -> None:
    torch.manual_seed(5)
    x = _images(1, 3, 8).expand(8, -1, -1, -1).contiguous()
    out = module(x)
    distinct = {tuple(out[i].flatten().round(decimals=5).tolist()) for i in range(8)}
    assert len(distinct) >= 6


def test_jitter_p0_is_identity_and_p1_changes_every_image() -> None:
    torch.manual_seed(6)
    x = _images(8)
    torch.testing.assert_close(ColorJitter(p=0.0)(x), x, rtol=0, atol=0)
    out = ColorJitter(p=1.0)(x)
    assert ((out - x).abs().flatten(1).amax(1) > 1e-4).all()


def test_jitter_on_one_channel() -> None:
    torch.manual_seed(7)
    x = _images(8, 1, 8)
    out = ColorJitter(p=1.0)(x)
    assert out.shape == (8, 1, 8, 8)
    assert ((out - x).abs().flatten(1).amax(1) > 1e-4).all()
    # saturation and hue alone do nothing on one channel
    torch.testing.assert_close(ColorJitter(0.0, 0.0, 0.4, 0.1, p=1.0)(x), x, rtol=0, atol=0)


def test_jitter_brightness_only_multiplies() -> None:
    torch.manual_seed(8)
    x = _images(16, 3, 8) * 0.5  # no clamping at 1.4x
    out = ColorJitter(0.4, 0.0, 0.0, 0.0, p=1.0)(x)
    ratio = out / x
    per_image = ratio.flatten(1)
    torch.testing.assert_close(
        per_image, per_image[:, :1].expand_as(per_image), rtol=1e-4, atol=1e-4
    )
    assert per_image.min() >= 0.6 - 1e-4 and per_image.max() <= 1.4 + 1e-4


def test_grayscale() -> None:
    x = _images(3, 1, 8)
    assert grayscale(x) is x
    rgb = _images(3, 3, 8)
    luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    torch.testing.assert_close(grayscale(rgb), luma[:, None])
    out = RandomGrayscale(p=1.0)(rgb)
    for c in range(3):
        torch.testing.assert_close(out[:, c], luma)
    torch.testing.assert_close(RandomGrayscale(p=0.0)(rgb), rgb, rtol=0, atol=0)
    assert RandomGrayscale(p=1.0)(x) is x


def test_gradients_flow_through_simclr_augment() -> None:
    torch.manual_seed(9)
    for x0 in (_images(8, 3, 8), _images(8, 1, 8).expand(-1, 3, -1, -1)):
        x = x0.clone().requires_grad_(True)
        out = SimCLRAugment(jitter_p=1.0, blur=True)(x)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
        (out * weights).sum().backward()
        assert x.grad is not None
        assert torch.isfinite(x.grad).all()
        assert x.grad.abs().sum() > 0
        # every image of the batch receives gradient
        assert (x.grad.abs().flatten(1).sum(1) > 0).all()


def test_blur_flag_adds_a_module() -> None:
    plain, blurred = SimCLRAugment(), SimCLRAugment(blur=True)
    assert len(blurred) == len(plain) + 1 == 4
    assert isinstance(blurred[-1], RandomGaussianBlur)
    assert not any(isinstance(m, RandomGaussianBlur) for m in plain)
    assert [type(m) for m in plain] == [ColorJitter, RandomGrayscale, RandomResizedCrop]


def test_simclr_augment_passes_its_settings() -> None:
    aug = SimCLRAugment((0.1, 0.2, 0.3, 0.05), 0.7, 0.3, (0.2, 0.9), fixed_crop_scale=0.5)
    jitter, gray, crop = aug
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue, jitter.p) == (
        0.1,
        0.2,
        0.3,
        0.05,
        0.7,
    )
    assert gray.p == 0.3 and crop.scale == (0.2, 0.9) and crop.fixed_scale == 0.5


def test_blur_keeps_constant_images_and_smooths_noise() -> None:
    torch.manual_seed(10)
    const = torch.full((2, 3, 16, 16), 0.3)
    torch.testing.assert_close(RandomGaussianBlur(p=1.0)(const), const)
    x = _images(4, 1, 16)
    out = RandomGaussianBlur(sigma=(1.5, 2.0), p=1.0)(x)
    assert out.var() < x.var()


@pytest.mark.parametrize("k", [1, 2, 4])
def test_rotate_shifts_layout(k: int) -> None:
    x = _images(3, 2, 6)
    out = rotate_shifts(x, k)
    labels = shift_labels(3, k)
    assert out.shape == (k * 3, 2, 6, 6)
    assert labels.tolist() == [r for r in range(k) for _ in range(3)]
    for r in range(k):
        for i in range(3):
            torch.testing.assert_close(out[r * 3 + i], torch.rot90(x[i], r, dims=(1, 2)))
            assert labels[r * 3 + i] == r
    if k == 4:  # rot90 really turns the image (counter-clockwise, torch's convention)
        assert out[3, 0, 0, 0] == x[0, 0, 0, -1]


def test_shifted_views_layout() -> None:
    x = _images(3, 1, 8)
    views, labels = shifted_views(x, nn.Identity(), k=4, flip=HorizontalFlip(p=0.0))
    assert views.shape == (2 * 4 * 3, 1, 8, 8) and labels.shape == (24,)
    expected = rotate_shifts(x, 4)
    torch.testing.assert_close(views[:12], expected, rtol=0, atol=0)
    torch.testing.assert_close(views[12:], expected, rtol=0, atol=0)
    assert labels.tolist() == shift_labels(3, 4).tolist() * 2


def test_shifted_views_with_augment_and_random_flip() -> None:
    torch.manual_seed(11)
    x = _images(5, 3, 8)
    views, labels = shifted_views(x, SimCLRAugment(), k=4)
    assert (
        views.shape == (40, 3, 8, 8)
        and labels.tolist() == [r for r in range(4) for _ in range(5)] * 2
    )
    assert labels.dtype == torch.int64
    # the two views differ (independent draws of T)
    assert not torch.allclose(views[:20], views[20:])
