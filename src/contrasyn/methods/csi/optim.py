"""LARS around any torch optimiser, and CSI's warm-up + cosine learning-rate schedule.

LARS follows torchlars (which CSI uses): for every parameter tensor w with gradient g,
``g <- (g + wd * w) * trust * ||w|| / (||g|| + wd * ||w|| + eps)`` (scale 1 when either norm
is zero), then the inner optimiser steps with its own weight decay switched off. It applies
to every tensor, BatchNorm and biases included, as in CSI. Pure PyTorch, any device.
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


class LARS:
    """Layer-wise adaptive rate scaling wrapping ``optimizer`` (CSI: SGD, trust 0.001)."""

    def __init__(self, optimizer: Optimizer, trust_coef: float = 0.001, eps: float = 1e-8) -> None:
        self.optim = optimizer
        self.trust_coef, self.eps = trust_coef, eps

    @property
    def param_groups(self) -> list[dict]:
        return self.optim.param_groups

    def state_dict(self) -> dict:
        return self.optim.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.optim.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optim.zero_grad(set_to_none=set_to_none)

    def __repr__(self) -> str:
        return f"LARS(trust_coef={self.trust_coef}, eps={self.eps}, optim={self.optim!r})"

    @torch.no_grad()
    def step(self) -> None:
        decays = []
        for group in self.optim.param_groups:
            wd = group.get("weight_decay", 0.0)
            decays.append(wd)
            for p in group["params"]:
                if p.grad is None:
                    continue
                w_norm, g_norm = p.norm(), p.grad.norm()
                scale = self.trust_coef * w_norm / (g_norm + wd * w_norm + self.eps)
                scale = torch.where((w_norm > 0) & (g_norm > 0), scale, torch.ones_like(scale))
                p.grad.add_(p, alpha=wd).mul_(scale)
            group["weight_decay"] = 0.0
        try:
            self.optim.step()
        finally:
            for group, wd in zip(self.optim.param_groups, decays, strict=True):
                group["weight_decay"] = wd


def warmup_cosine_lr(
    epoch: float,
    base_lr: float,
    total_epochs: float,
    warmup_epochs: float = 10.0,
    warmup_multiplier: float = 10.0,
) -> float:
    """CSI's schedule at a fractional epoch.

    Linear warm-up from ``base_lr`` to ``base_lr * warmup_multiplier`` over ``warmup_epochs``
    (CSI's GradualWarmupScheduler), then a cosine from that peak to 0 over the remaining
    epochs. CSI's cosine runs over all ``total_epochs`` after the warm-up and so stops at
    0.00025 of the peak instead of 0; we end at 0, which only matters for short schedules
    (docs/METHOD.md, "Defaults the paper leaves open").
    """
    peak = base_lr * warmup_multiplier
    if epoch < warmup_epochs:
        return base_lr + (peak - base_lr) * epoch / warmup_epochs
    span = max(total_epochs - warmup_epochs, 1e-12)
    t = min(max(epoch - warmup_epochs, 0.0), span)
    return 0.5 * peak * (1 + math.cos(math.pi * t / span))
