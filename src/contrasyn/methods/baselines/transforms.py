"""Geometric transformations of the self-supervised baselines (Geom, Rot+Trans, GOAD).

A transformation is (flip, tx, ty, rot): an optional left-right flip, a translation by
``tx``/``ty`` steps of a quarter of the image side (reflection fills the border, as in
Golan & El-Yaniv's code), then ``rot`` quarter turns. Geom and GOAD use all 2 x 3 x 3 x 4 =
72; Rot+Trans uses the 4 rotations x 3 x 3 translations without flips.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrasyn.device import forward_in_chunks


class Transform(NamedTuple):
    flip: bool
    tx: int  # -1, 0 or 1 quarter-sides
    ty: int
    rot: int  # quarter turns


def geom_transforms() -> list[Transform]:
    """Golan & El-Yaniv's 72: flip x horizontal shift x vertical shift x rotation."""
    return [
        Transform(f, tx, ty, r)
        for f, tx, ty, r in itertools.product((False, True), (0, -1, 1), (0, -1, 1), range(4))
    ]


def rot_trans_transforms() -> list[Transform]:
    """Hendrycks et al.'s 36: 4 rotations x 3 horizontal x 3 vertical translations."""
    return [
        Transform(False, tx, ty, r)
        for r, tx, ty in itertools.product(range(4), (0, -1, 1), (0, -1, 1))
    ]


def translate(x: Tensor, tx: int, ty: int) -> Tensor:
    """Shift by whole quarter-sides, filling with the reflected image."""
    if tx == 0 and ty == 0:
        return x
    h, w = x.shape[-2:]
    dx, dy = tx * (w // 4), ty * (h // 4)
    padded = F.pad(x, (abs(dx), abs(dx), abs(dy), abs(dy)), mode="reflect")
    top, left = abs(dy) - dy, abs(dx) - dx
    return padded[..., top : top + h, left : left + w]


def apply(x: Tensor, t: Transform) -> Tensor:
    if t.flip:
        x = x.flip(-1)
    x = translate(x, t.tx, t.ty)
    return torch.rot90(x, t.rot, dims=(2, 3)) if t.rot else x


def transform_batch(x: Tensor, transforms: list[Transform]) -> Tensor:
    """All transformations of every image, transformation-major: (M * B, C, H, W)."""
    return torch.cat([apply(x, t) for t in transforms])


def forward_transformed(
    net: nn.Module,
    x: Tensor,
    transforms: list[Transform],
    device: torch.device | str,
    memory: torch.memory_format = torch.contiguous_format,
) -> tuple[Tensor, ...]:
    """``net`` on every transformation of ``x`` (transformation-major rows, as
    ``transform_batch``) in ``memory``'s format (the network's: a mismatch converts every
    layer), in ``forward_in_chunks``'s row chunks."""
    return forward_in_chunks(net, transform_batch(x, transforms).to(device, memory_format=memory))


def transform_rows(x: Tensor, transforms: list[Transform], index: list[int]) -> Tensor:
    """Row i of ``x`` under ``transforms[index[i]]``, one batched call per transformation."""
    out = torch.empty_like(x)
    which = torch.tensor(index)
    for t in which.unique().tolist():
        rows = (which == t).nonzero().squeeze(1)
        out[rows] = apply(x[rows], transforms[t])
    return out
