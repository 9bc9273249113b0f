"""Batch-wise, on-device, differentiable augmentations: the SimCLR family T and the shifts S.

Every module takes a float batch (B, C, H, W) in [0, 1] and draws its random parameters per
sample from the global torch RNG on the batch's device, so a whole training batch is
augmented in a handful of tensor operations (as CSI does on the GPU) and the generator of the
paper's method can be trained *through* T: nothing here breaks the autograd graph w.r.t. the
input.

Choices where CSI's code and the SimCLR paper differ (docs/METHOD.md, "Defaults the paper
leaves open"):
- hue is shifted by up to +-0.1 of the colour circle (CSI's code effectively uses +-0.0708);
- the order of the four jitter operations is drawn once per batch, as CSI draws it;
- the resized crop samples up to 10 candidates per image and falls back to the whole image,
  and samples outside the image are reflected (``grid_sample`` with reflection padding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.enhance import adjust_hue
from kornia.filters import gaussian_blur2d
from torch import Tensor, nn

_LUMA = (0.299, 0.587, 0.114)


def _bernoulli(n: int, p: float, device: torch.device) -> Tensor:
    return torch.rand(n, device=device) < p


def _uniform(n: int, low: float, high: float, device: torch.device) -> Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


def _per_sample(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


def grayscale(x: Tensor) -> Tensor:
    """Luma (ITU-R 601) of an RGB batch, shape (B, 1, H, W); identity for one channel."""
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b


class HorizontalFlip(nn.Module):
    """Flip each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        mask = _per_sample(_bernoulli(len(x), self.p, x.device))
        return torch.where(mask, x.flip(-1), x)


class ColorJitter(nn.Module):
    """SimCLR colour jitter applied to each image with probability ``p``.

    Brightness multiplies, contrast blends with the image's mean luma, saturation blends with
    the luma image, hue rotates the HSV hue; factors are drawn per sample. On one-channel
    images only brightness and contrast act (saturation and hue are undefined there).
    """

    def __init__(
        self,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
        p: float = 0.8,
    ) -> None:
        super().__init__()
        self.brightness, self.contrast, self.saturation, self.hue = (
            brightness,
            contrast,
            saturation,
            hue,
        )
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        n, dev = len(x), x.device
        apply = _per_sample(_bernoulli(n, self.p, dev))
        out = x
        for op in torch.randperm(4).tolist():
            if op == 0 and self.brightness > 0:
                f = _uniform(n, 1 - self.brightness, 1 + self.brightness, dev)
                out = (out * _per_sample(f)).clamp(0, 1)
            elif op == 1 and self.contrast > 0:
                f = _per_sample(_uniform(n, 1 - self.contrast, 1 + self.contrast, dev))
                mean = grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
                out = ((out - mean) * f + mean).clamp(0, 1)
            elif op == 2 and self.saturation > 0 and x.shape[1] == 3:
                f = _per_sample(_uniform(n, 1 - self.saturation, 1 + self.saturation, dev))
                gray = grayscale(out)
                out = ((out - gray) * f + gray).clamp(0, 1)
            elif op == 3 and self.hue > 0 and x.shape[1] == 3:
                f = _uniform(n, -self.hue, self.hue, dev) * (2 * math.pi)
                out = adjust_hue(out, f).clamp(0, 1)
        return torch.where(apply, out, x)


class RandomGrayscale(nn.Module):
    """Replace each image by its luma (replicated to all channels) with probability ``p``."""

    def __init__(self, p: float = 0.2) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            return x
        mask = _per_sample(_bernoulli(len(x), self.p, x.device))
        return torch.where(mask, grayscale(x).expand_as(x), x)


class RandomResizedCrop(nn.Module):
    """Inception-style crop of a random area and aspect ratio, resized back to H x W.

    ``scale`` is the crop area as a fraction of the image; ``fixed_scale`` pins the area (the
    evaluation-time ``0.54`` of CSI) while position and aspect ratio stay random.
    Implemented as one batched affine ``grid_sample``, so it is differentiable w.r.t. x.
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        fixed_scale: float | None = None,
        attempts: int = 10,
    ) -> None:
        super().__init__()
        self.scale, self.ratio, self.fixed_scale, self.attempts = (
            scale,
            ratio,
            fixed_scale,
            attempts,
        )

    def sample(self, n: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-sample crop width, height (fractions of the side) and centre (in [-1, 1])."""
        shape = (n, self.attempts)
        if self.fixed_scale is not None:
            area = torch.full(shape, self.fixed_scale, device=device)
        else:
            area = torch.empty(shape, device=device).uniform_(*self.scale)
        log_ratio = torch.empty(shape, device=device).uniform_(
            math.log(self.ratio[0]), math.log(self.ratio[1])
        )
        aspect = log_ratio.exp()
        w, h = (area * aspect).sqrt(), (area / aspect).sqrt()
        valid = (w <= 1) & (h <= 1)
        first = valid.float().argmax(dim=1, keepdim=True)
        any_valid = valid.any(dim=1)
        w = torch.where(any_valid, w.gather(1, first).squeeze(1), torch.ones(n, device=device))
        h = torch.where(any_valid, h.gather(1, first).squeeze(1), torch.ones(n, device=device))
        cx = (torch.rand(n, device=device) * 2 - 1) * (1 - w)
        cy = (torch.rand(n, device=device) * 2 - 1) * (1 - h)
        return w, h, cx, cy

    def forward(self, x: Tensor) -> Tensor:
        w, h, cx, cy = self.sample(len(x), x.device)
        theta = torch.zeros(len(x), 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2] = w, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )


class RandomGaussianBlur(nn.Module):
    """Gaussian blur with sigma in ``sigma`` (kernel ~10% of the side), probability ``p``."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5) -> None:
        super().__init__()
        self.sigma, self.p = sigma, p

    def forward(self, x: Tensor) -> Tensor:
        n, side = len(x), x.shape[-1]
        k = max(3, int(0.1 * side) // 2 * 2 + 1)
        s = _uniform(n, *self.sigma, x.device)
        blurred = gaussian_blur2d(x, (k, k), torch.stack([s, s], dim=1), border_type="reflect")
        return torch.where(_per_sample(_bernoulli(n, self.p, x.device)), blurred, x)


class SimCLRAugment(nn.Sequential):
    """The family T: colour jitter, grayscale, resized crop (and blur behind a flag).

    The horizontal flip is separate (``HorizontalFlip``) because CSI applies it *before* the
    rotation shift and the rest of T after it.
    """

    def __init__(
        self,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        gray_p: float = 0.2,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        fixed_crop_scale: float | None = None,
        blur: bool = False,
    ) -> None:
        layers: list[nn.Module] = [
            ColorJitter(*jitter, p=jitter_p),
            RandomGrayscale(gray_p),
            RandomResizedCrop(crop_scale, fixed_scale=fixed_crop_scale),
        ]
        if blur:
            layers.append(RandomGaussianBlur())
        super().__init__(*layers)


def rotate_shifts(x: Tensor, k: int = 4) -> Tensor:
    """The shifting transformations S: ``[rot0(x); rot90(x); ...]``, shift-major, (K*B, ...)."""
    return torch.cat([torch.rot90(x, r, dims=(2, 3)) for r in range(k)])


def shift_labels(batch: int, k: int, device: torch.device | None = None) -> Tensor:
    """Rotation index of each row of ``rotate_shifts`` output: [0]*B + [1]*B + ..."""
    return torch.arange(k, device=device).repeat_interleave(batch)


def shifted_views(
    x: Tensor, augment: nn.Module, k: int = 4, flip: HorizontalFlip | None = None
) -> tuple[Tensor, Tensor]:
    """CSI's training batch: 2 views x K shifts of each image, layout ``[view1; view2]``.

    Each view is ``T(S_k(flip(x)))`` with independent flips and T draws. Row ``i`` of view 1
    and row ``i`` of view 2 are the positive pair; every other row is a negative. Returns the
    (2*K*B, C, H, W) batch and the shift label of each row.
    """
    flip = flip or HorizontalFlip()
    views = torch.cat([rotate_shifts(flip(x), k), rotate_shifts(flip(x), k)])
    labels = shift_labels(len(x), k, x.device).repeat(2)
    return augment(views), labels
