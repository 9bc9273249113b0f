"""What a training checkpoint holds, and how a run resumes from it exactly.

A checkpoint (``last.safetensors`` + ``last.json``, written atomically by
``contrasyn.checkpoint``) holds F's weights and SGD momentum, the generative side's weights
and Adam state, and every rank's RNG state (``state_tensors``); its JSON holds the
configuration, the epoch and step, and a fingerprint of the training images
(``data_fingerprint``). ``load_resumable`` refuses a run made with another configuration or
on other images, and ``restore`` puts the state back, so a resumed run draws the same
batches, augmentations and latents as one that was never stopped.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from contrasyn import distributed
from contrasyn.checkpoint import load_checkpoint, recover_interrupted_save
from contrasyn.config import to_dict
from contrasyn.errors import ConfigError
from contrasyn.methods.csi.adversarial import GenerativeSide
from contrasyn.methods.csi.optim import LARS
from contrasyn.methods.csi.trained import saved_config
from contrasyn.methods.csi_config import TrainConfig


def data_fingerprint(images: Tensor) -> str:
    """sha256 of the training images, so a resumed run is known to continue on the same data."""
    x = images.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{tuple(x.shape)}|{x.dtype}".encode())
    digest.update(x.numpy().tobytes())
    return digest.hexdigest()


def rank_seed(seed: int) -> int:
    """Rank r > 0's seed for augmentations and latent draws, so ranks do not repeat each other
    (rank 0 draws as one process does)."""
    return seed + 1_000_003 * distributed.rank()


def _sgd_state(optimizer) -> dict:
    return optimizer.optim.state if isinstance(optimizer, LARS) else optimizer.state


def state_tensors(
    model: nn.Module,
    optimizer,
    side: GenerativeSide | None,
    rng: list[tuple[Tensor, Tensor | None]],
) -> dict[str, Tensor]:
    """Everything needed to resume exactly: weights, momentum and Adam state, and the RNG
    states of every rank (``distributed.gather_rng_states``)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if side is not None:
        tensors.update(side.weight_tensors())
        tensors.update(side.optimizer_tensors())
    state = _sgd_state(optimizer)
    for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"]):
        buf = state[p].get("momentum_buffer")
        if buf is not None:
            tensors[f"optim.momentum.{i}"] = buf
    for r, (cpu, cuda) in enumerate(rng):
        suffix = f".rank{r}" if r else ""
        tensors[f"rng.cpu{suffix}"] = cpu
        if cuda is not None:
            tensors[f"rng.cuda{suffix}"] = cuda
    return tensors


def load_resumable(
    out: Path | None, cfg: TrainConfig, data_sha: str, device: torch.device
) -> tuple[dict[str, Tensor], int] | None:
    """The last checkpoint in ``out`` and its epoch, or None where there is none; a run made
    with another configuration or on other images is refused in one line."""
    if out is None or not (out / "last.safetensors").exists():
        return None
    if recover_interrupted_save(out / "last"):
        warnings.warn(
            f"{out / 'last.json'} was left by an interrupted save; rebuilt it", stacklevel=4
        )
    tensors, meta = load_checkpoint(out / "last", device)
    # Read through TrainConfig, so a checkpoint from before a field existed (at its default
    # now) still resumes.
    if to_dict(saved_config(meta)) != to_dict(cfg):
        raise ConfigError(f"{out}: a run with a different config is there; use another --out")
    if meta.get("data_sha256") != data_sha:
        raise ConfigError(
            f"{out}: the run there was trained on other images; use the same images, "
            "another output folder, or delete that folder to start over"
        )
    return tensors, meta["epoch"]


def restore(
    model: nn.Module,
    optimizer,
    side: GenerativeSide | None,
    tensors: dict[str, Tensor],
    seed: int,
) -> None:
    """Put back what ``state_tensors`` saved: weights, momentum, Adam state and this rank's
    RNG state (a rank the run was not saved with starts its own fresh stream)."""
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if side is not None:
        side.load_weight_tensors(tensors)
        side.load_optimizer_tensors(tensors)
    state = _sgd_state(optimizer)
    for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"]):
        key = f"optim.momentum.{i}"
        if key in tensors:
            state[p]["momentum_buffer"] = tensors[key].to(p.device)
    suffix = f".rank{distributed.rank()}" if distributed.rank() else ""
    if f"rng.cpu{suffix}" not in tensors:
        torch.manual_seed(rank_seed(seed))
        return
    torch.set_rng_state(tensors[f"rng.cpu{suffix}"].cpu())
    if f"rng.cuda{suffix}" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors[f"rng.cuda{suffix}"].cpu())
