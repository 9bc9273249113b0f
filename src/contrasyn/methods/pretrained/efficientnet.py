"""EfficientNet-Lite0 (Tan & Le 2019; the TensorFlow "lite" variant: ReLU6, no squeeze-and-
excitation, stem and head not scaled), written with timm's parameter names for its
``tf_efficientnet_lite0``, so a timm state dict (e.g. its ``model.safetensors``) loads as it is.

The ImageNet weights were trained in TensorFlow, so the convolutions pad as TensorFlow's
"SAME" does (more on the bottom and right when the padding is odd) and batch norm's epsilon is
1e-3; with PyTorch's symmetric padding the same weights give other features.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

# (block kind, repeats, kernel, first stride, expansion, output channels) per stage, as
# timm's ``_gen_efficientnet_lite`` decodes "ds_r1_k3_s1_e1_c16", "ir_r2_k3_s2_e6_c24", ...
LITE0_STAGES = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)
STEM, FEATURES, CLASSES = 32, 1280, 1000
BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """A bias-free convolution padded as TensorFlow's "SAME": output side ceil(side / stride),
    the odd pixel of padding on the bottom and right."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for side, k, s in zip(
            x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True
        ):
            total = max((math.ceil(side / s) - 1) * s + k - side, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class DepthwiseSeparable(nn.Module):
    """Stage 1's block: depthwise conv, ReLU6, pointwise projection (timm's
    ``DepthwiseSeparableConv``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = SameConv2d(cin, cin, kernel, stride, groups=cin)
        self.bn1 = _bn(cin)
        self.conv_pw = SameConv2d(cin, cout, 1)
        self.bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv_pw(F.relu6(self.bn1(self.conv_dw(x)))))
        return x + y if self.skip else y


class InvertedResidual(nn.Module):
    """MobileNetV2's block: pointwise expansion, depthwise conv, linear projection, with the
    identity added when the shape allows (timm's ``InvertedResidual``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.conv_pw = SameConv2d(cin, mid, 1)
        self.bn1 = _bn(mid)
        self.conv_dw = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self.bn2 = _bn(mid)
        self.conv_pwl = SameConv2d(mid, cout, 1)
        self.bn3 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self.bn1(self.conv_pw(x)))
        y = F.relu6(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: RGB images normalised by the backbone's mean and std ->
    ``forward_features`` (N, 1280), the global average of the last feature map; ``forward``
    adds the ImageNet classifier (1000 logits)."""

    out_dim = FEATURES

    def __init__(self) -> None:
        super().__init__()
        self.conv_stem = SameConv2d(3, STEM, 3, 2)
        self.bn1 = _bn(STEM)
        stages, cin = [], STEM
        for kind, repeats, kernel, stride, expand, cout in LITE0_STAGES:
            blocks = []
            for i in range(repeats):
                s = stride if i == 0 else 1
                if kind == "ds":
                    blocks.append(DepthwiseSeparable(cin, cout, kernel, s))
                else:
                    blocks.append(InvertedResidual(cin, cout, kernel, s, expand))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = SameConv2d(cin, FEATURES, 1)
        self.bn2 = _bn(FEATURES)
        self.classifier = nn.Linear(FEATURES, CLASSES)

    def parts(self) -> list[list[nn.Module]]:
        """The network from input to output in 9 parts: the stem, the 7 stages, the head
        (what ``train.backbone_freeze`` counts)."""
        stages = [[stage] for stage in self.blocks]
        return [[self.conv_stem, self.bn1], *stages, [self.conv_head, self.bn2]]

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu6(self.bn1(self.conv_stem(x)))
        x = F.relu6(self.bn2(self.conv_head(self.blocks(x))))
        return x.mean((2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.forward_features(x))
