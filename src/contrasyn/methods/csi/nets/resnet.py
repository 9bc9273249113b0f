"""CIFAR ResNet-18 (CSI's backbone) with CSI's projection and shift heads.

The CIFAR variant has a 3x3 stride-1 stem and no max-pool, stages of width w, 2w, 4w, 8w
(w = 64 in the paper) with strides 1/2/2/2 and global average pooling, so the penultimate
feature has 8w dimensions (512 at w = 64). The ``imagenet`` stem (7x7 stride 2 + max-pool)
is for 224-pixel inputs. Inputs are images in [0, 1]; the network normalises them itself
(``(x - 0.5) / 0.5``) so that augmentations always work in image space.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 trunk returning the pooled penultimate feature (B, 8 * width)."""

    def __init__(self, width: int = 64, in_channels: int = 3, stem: str = "cifar") -> None:
        super().__init__()
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            )
        elif stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            raise ValueError(f"unknown stem {stem!r}; use 'cifar' or 'imagenet'")
        layers, c_in = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            c_out = width * 2**i
            layers.append(
                nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1))
            )
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.out_dim = c_in

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(self.stem((x - 0.5) / 0.5))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


class CSIOutput(NamedTuple):
    """What one forward pass gives: penultimate h, projection z (unnormalised), shift logits."""

    h: Tensor
    z: Tensor
    shift: Tensor


class CSINet(nn.Module):
    """Backbone F plus CSI's heads: projection d -> d -> ReLU -> ``proj_dim`` and shift d -> K.

    ``trunk`` replaces the ResNet-18 with another backbone (a module with ``out_dim`` that
    takes images in [0, 1]). When the network trains, the trunk's BatchNorm layers whose
    weights are frozen stay in eval mode, and so do all of them with ``frozen_bn``: they keep
    the statistics they were pretrained with."""

    def __init__(
        self,
        width: int = 64,
        in_channels: int = 3,
        stem: str = "cifar",
        proj_dim: int = 128,
        num_shifts: int = 4,
        trunk: nn.Module | None = None,
        frozen_bn: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = ResNet18(width, in_channels, stem) if trunk is None else trunk
        self.frozen_bn = frozen_bn
        d = self.backbone.out_dim
        self.projection = nn.Sequential(
            nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, proj_dim)
        )
        self.shift_head = nn.Linear(d, num_shifts)

    def train(self, mode: bool = True) -> CSINet:
        super().train(mode)
        if not mode:
            return self
        for m in self.backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if self.frozen_bn or not any(p.requires_grad for p in m.parameters()):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> CSIOutput:
        h = self.backbone(x)
        return CSIOutput(h, self.projection(h), self.shift_head(h))
