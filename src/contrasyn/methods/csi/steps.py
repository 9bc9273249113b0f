"""What every optimiser step of Algorithm 1 shares: freezing the networks a step must not
train, the NaN/inf check on its loss, and the step itself (gradients averaged over ranks
under ``torchrun``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from contrasyn import distributed
from contrasyn.errors import TrainingError


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Run ``modules`` forward (in their current mode) without training them: parameters get no
    gradient and buffers (BatchNorm running statistics, spectral-norm vectors) are restored on
    exit, so the backward pass and the optimiser step belong inside the block."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    buffers = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


def check_finite(name: str, value: float, where: str) -> None:
    """Stop with a message naming the loss when it is NaN or infinite."""
    if value != value or value in (float("inf"), float("-inf")):
        raise TrainingError(
            f"{name} became {value} {where}; the last good checkpoint is kept. "
            "Lower the learning rates (train.base_lr, train.gen_lr, train.disc_lr) or use "
            "precision fp32."
        )


def step(loss: Tensor, *optimizers: torch.optim.Optimizer) -> None:
    """One optimiser step of the generative side; under ``torchrun`` the gradients are
    averaged over ranks first, so the replicated networks stay identical on every rank."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    distributed.average_gradients(
        p for opt in optimizers for group in opt.param_groups for p in group["params"]
    )
    for opt in optimizers:
        opt.step()
