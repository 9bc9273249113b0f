"""Devices and precision: which device ``auto`` means, where bf16 autocast pays, and how big
an inference forward should be."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor, nn

from contrasyn.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit name must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(
            f"device {name!r} is not a device name (use auto, cpu, cuda, cuda:N or mps)"
        ) from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} requested but MPS is not available")
    return device


def bf16_is_fast(device: torch.device) -> bool:
    """Whether the device has native bf16 matrix units (without them autocast is ~10x slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def effective_precision(precision: str, device: torch.device) -> str:
    """What a ``precision`` setting computes in on ``device``: ``bf16`` for ``bf16``, and
    for ``auto`` where the hardware runs bf16 natively; ``fp32`` otherwise. Results record
    it, since the same setting trains differently on different machines."""
    if precision not in ("fp32", "bf16", "auto"):
        raise ConfigError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")
    if precision == "bf16" or (precision == "auto" and bf16_is_fast(device)):
        return "bf16"
    return "fp32"


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """bf16 autocast where ``effective_precision`` is bf16, nothing otherwise."""
    if effective_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


# Rows per inference forward on a CPU, where a big forward's activations leave the cache. One
# thread on an AMD EPYC, width-16 ResNet-18s at 32 px (benchmarks/forward_rows.py): one forward
# of 2,304 rows took 2.9x as long as 64-row forwards of the same rows (fp32), one of 1,024 rows
# 1.6x (bf16) and 2.1x (fp32, channels-last). Eval mode makes rows independent: same outputs.
CPU_FORWARD_ROWS = 64


def forward_in_chunks(net: nn.Module, batch: Tensor) -> tuple[Tensor, ...]:
    """``net(batch)`` for inference, ``CPU_FORWARD_ROWS`` rows a forward on a CPU (one
    forward elsewhere), each of the network's outputs concatenated over the chunks."""
    rows = CPU_FORWARD_ROWS if batch.device.type == "cpu" else len(batch)
    parts = [net(chunk) for chunk in batch.split(rows)]
    return tuple(torch.cat(outputs) for outputs in zip(*parts, strict=True))
