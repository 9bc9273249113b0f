"""Several processes, one training run: PyTorch's own distributed engine under ``torchrun``.

``torchrun --nproc_per_node=N -m contrasyn fit ...`` starts N copies of the command with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set; ``init`` joins them into one process group
(NCCL on GPUs, gloo on CPUs). Each rank then trains on its slice of every global batch
(``train.batch_size`` is the global batch, so results do not depend on the number of ranks),
F is wrapped in ``DistributedDataParallel``, and the contrastive loss gathers the embeddings
of all ranks with their gradients (``gather_views``), so negatives come from the global batch
as in CSI. The generative side's networks stay replicated: their gradients are averaged
before every step (``average_gradients``), which keeps them identical on every rank. Logs,
checkpoints, the training bank and everything written are rank 0's job (``is_main``).

Without ``torchrun`` (no ``WORLD_SIZE``, or 1) every function here is a no-op, so the same
code runs on one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from contrasyn.errors import ConfigError


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    """This process's rank (from the environment before ``init``, so it is known early)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0: the process that logs, checkpoints, builds the bank and writes results."""
    return rank() == 0


def launched() -> bool:
    """Whether ``torchrun`` (or an equivalent launcher) started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> torch.device:
    """Join the process group ``torchrun`` describes (idempotent) and return this rank's device:
    ``cuda:LOCAL_RANK`` on GPUs, otherwise ``device`` unchanged. Without a launcher, nothing."""
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"distributed training runs on CUDA or CPU devices, not {device.type}")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shard(global_batch: int) -> tuple[int, int]:
    """This rank's ``(start, stop)`` within a global batch of ``global_batch`` images."""
    n = world_size()
    if global_batch % n:
        raise ConfigError(
            f"train.batch_size {global_batch} must be divisible by the number of processes ({n}), "
            "since it is the global batch that the ranks share"
        )
    per = global_batch // n
    return rank() * per, (rank() + 1) * per


def gather_views(z: Tensor) -> Tensor:
    """The ``[view1; view2]`` embeddings of the global batch, gradients kept.

    Each rank holds ``[view1_r; view2_r]``; the result is ``[view1_0 .. view1_{n-1};
    view2_0 .. view2_{n-1}]``, so row i's positive is still row i + N. PyTorch's
    ``all_gather`` sums the gradients of every rank's copy of the loss in its backward pass,
    and DDP then averages over ranks: F's gradient is that of one process on the global batch.
    """
    if not active():
        return z
    try:
        from torch.distributed._functional_collectives import all_gather_single_autograd
    except ImportError:  # older PyTorch: the autograd all_gather it has since deprecated
        from torch.distributed.nn.functional import all_gather

        parts = all_gather(z.contiguous())
    else:
        gathered = all_gather_single_autograd(z.contiguous(), 0, dist.group.WORLD)
        parts = gathered.chunk(world_size())
    halves = [p.chunk(2) for p in parts]
    return torch.cat([h[0] for h in halves] + [h[1] for h in halves])


def mean_over_ranks(values: Tensor) -> Tensor:
    """The mean of ``values`` over ranks (detached), for logs and decisions every rank shares."""
    if not active():
        return values
    values = values.detach().clone()
    dist.all_reduce(values)
    return values / world_size()


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average the gradients of replicated parameters over ranks, as DDP does, in one call."""
    if not active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank."""
    if active():
        for b in module.buffers():
            dist.broadcast(b, 0)


def gather_rng_states() -> list[tuple[Tensor, Tensor | None]]:
    """Every rank's (CPU, CUDA or None) RNG states, for exact resumption: a collective, so all
    ranks call it; rank 0 saves them."""
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
    mine = (torch.get_rng_state(), cuda)
    if not active():
        return [mine]
    states: list = [None] * world_size()
    dist.all_gather_object(states, mine)
    return states


def barrier() -> None:
    if active():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (at the end of a command run under ``torchrun``)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
    """F for the training steps: DDP across ranks (SyncBatchNorm on request), else ``model``.
    The returned module shares its parameters with ``model``."""
    if not active():
        return model
    if sync_bn:
        if device.type != "cuda":
            raise ConfigError("train.sync_bn needs GPUs: PyTorch's SyncBatchNorm runs on CUDA only")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
