"""Algorithm 1: the training loop of all three variants (``csi``, ``csi+g``, ``full``).

One readable loop: shuffle, build 2 views x K rotations on the device, one forward, L_CSI,
LARS step on CSI's warm-up + cosine schedule. For ``csi+g`` and ``full``, after every
``gen_every`` batches the generative side runs one adversarial round
(``adversarial.GenerativeSide.round``) and F takes one more step, on L_JOINT: L_CSI over the
real batch and the round's synthetic batch together. Every loss component goes to
``metrics.jsonl``; checkpoints (safetensors + JSON) are written every ``checkpoint_every``
epochs and at the end, and ``train`` resumes from ``out_dir/last`` when it exists.
Under ``torchrun`` the same loop runs on every rank, each on its slice of the global batch
(``contrasyn.distributed``); rank 0 logs and checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from contrasyn import distributed
from contrasyn.adversarial import GenerativeSide, check_finite
from contrasyn.augment import HorizontalFlip, SimCLRAugment, shifted_views
from contrasyn.checkpoint import load_checkpoint, recover_interrupted_save, save_checkpoint
from contrasyn.config import TrainConfig, from_dict, to_dict
from contrasyn.errors import ConfigError, TrainingError
from contrasyn.losses import csi_loss
from contrasyn.nets import CSINet
from contrasyn.optim import LARS, warmup_cosine_lr

__all__ = ["Trained", "TrainingError", "load_generator", "load_model", "train", "train_networks"]


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


def autocast(precision: str, device: torch.device):
    """bf16 autocast for ``bf16``, and for ``auto`` where the hardware runs bf16 natively."""
    if precision not in ("fp32", "bf16", "auto"):
        raise ConfigError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")
    if precision == "bf16" or (precision == "auto" and bf16_is_fast(device)):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def build_model(cfg: TrainConfig) -> CSINet:
    return CSINet(cfg.width, cfg.channels, cfg.stem, cfg.proj_dim, cfg.num_shifts)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> LARS | torch.optim.SGD:
    sgd = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    if cfg.optimizer == "lars":
        return LARS(sgd, trust_coef=cfg.lars_trust)
    if cfg.optimizer == "sgd":
        return sgd
    raise ConfigError(f"optimizer must be 'lars' or 'sgd', got {cfg.optimizer!r}")


def build_augment(cfg: TrainConfig) -> SimCLRAugment:
    return SimCLRAugment(cfg.jitter, cfg.jitter_p, cfg.gray_p, cfg.crop_scale, blur=cfg.blur)


def _sgd_state(optimizer) -> dict:
    return optimizer.optim.state if isinstance(optimizer, LARS) else optimizer.state


def _state_tensors(
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


def _restore(
    model: nn.Module,
    optimizer,
    side: GenerativeSide | None,
    tensors: dict[str, Tensor],
    seed: int,
) -> None:
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if side is not None:
        side.load_weight_tensors(tensors)
        side.load_optimizer_tensors(tensors)
    state = _sgd_state(optimizer)
    for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"]):
        key = f"optim.momentum.{i}"
        if key in tensors:
            state[p]["momentum_buffer"] = tensors[key].to(p.device)
    # A run resumed with more ranks than it was saved with: the new ranks start fresh streams.
    suffix = f".rank{distributed.rank()}" if distributed.rank() else ""
    if f"rng.cpu{suffix}" not in tensors:
        torch.manual_seed(_rank_seed(seed))
        return
    torch.set_rng_state(tensors[f"rng.cpu{suffix}"].cpu())
    if f"rng.cuda{suffix}" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors[f"rng.cuda{suffix}"].cpu())


def _rank_seed(seed: int) -> int:
    """Rank r > 0's seed for augmentations and latent draws, so ranks do not repeat each other
    (rank 0 draws as one process does)."""
    return seed + 1_000_003 * distributed.rank()


def log_line(method: str, total: int, entry: dict) -> str:
    """One ``metrics.jsonl`` record as a line for a terminal or a log file."""
    losses = " ".join(f"{k} {v:.4g}" for k, v in entry.items() if k.startswith(("loss", "rec_")))
    return (
        f"{method} step {entry['step'] + 1}/{total} epoch {entry['epoch']:.2f} "
        f"lr {entry['lr']:.3g} {losses} ({entry['seconds']:.0f} s)"
    )


class MetricsLog:
    """``metrics.jsonl``: one JSON record per logged step. On resume, records at or past the
    resumed step (logged after the last checkpoint by the interrupted run) are dropped, so
    the file reads as one uninterrupted run."""

    def __init__(self, path: Path, resume_step: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] < resume_step
            ]
            path.write_text("".join(line + "\n" for line in kept))
        self._file = path.open("a")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def data_fingerprint(images: Tensor) -> str:
    """sha256 of the training images, so a resumed run is known to continue on the same data."""
    x = images.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{tuple(x.shape)}|{x.dtype}".encode())
    digest.update(x.numpy().tobytes())
    return digest.hexdigest()


def load_model(stem: str | Path, device: str | torch.device = "cpu") -> tuple[CSINet, TrainConfig]:
    """The trained F and its config from a checkpoint written by ``train``."""
    tensors, meta = load_checkpoint(stem, device)
    cfg = from_dict(TrainConfig, meta["config"])
    model = build_model(cfg).to(device)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    return model.eval(), cfg


def load_generator(
    stem: str | Path, device: str | torch.device = "cpu"
) -> tuple[GenerativeSide, TrainConfig]:
    """G, D (and E, D') of a ``csi+g`` or ``full`` checkpoint, in eval mode."""
    tensors, meta = load_checkpoint(stem, device)
    cfg = from_dict(TrainConfig, meta["config"])
    if cfg.method == "csi":
        raise ConfigError(f"{stem}: a 'csi' run has no generator (train csi+g or full)")
    side = GenerativeSide(cfg).to(device)
    side.load_weight_tensors(tensors)
    return side.eval(), cfg


class Trained(NamedTuple):
    """What training produced: F, and G/D/E/D' for ``csi+g``/``full`` (else None), eval mode."""

    model: CSINet
    side: GenerativeSide | None


def train(
    images: Tensor,
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
    verbose: bool = False,
) -> CSINet:
    """Train on ``images`` and return F in eval mode (see ``train_networks``)."""
    return train_networks(images, cfg, out_dir, progress, verbose).model


def train_networks(
    images: Tensor,
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
    verbose: bool = False,
) -> Trained:
    """Train F (and, for ``csi+g``/``full``, the generative side) on ``images`` (N, C, H, W)
    in [0, 1]. ``verbose`` prints every logged record (each ``log_every`` steps) as a line,
    which is what a log file of a run without a terminal (no progress bar) shows.

    With ``out_dir`` the run is checkpointed and resumable: rerunning the same call after an
    interruption continues from the last saved epoch with the same RNG state.
    """
    if images.ndim != 4 or images.shape[1] != cfg.channels:
        raise ConfigError(
            f"training images must be (N, {cfg.channels}, H, W), got {tuple(images.shape)}"
        )
    if cfg.method != "csi" and images.shape[-1] != cfg.image_size:
        raise ConfigError(
            f"training images are {images.shape[-2]}x{images.shape[-1]} but the generator of "
            f"method {cfg.method!r} makes {cfg.image_size}x{cfg.image_size} (train.image_size)"
        )
    device = distributed.init(resolve_device(cfg.device))
    main = distributed.is_main()
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(cfg).to(device)
    optimizer = build_optimizer(model, cfg)
    side = GenerativeSide(cfg).to(device) if cfg.method != "csi" else None
    augment, flip = build_augment(cfg), HorizontalFlip()
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    if distributed.rank():  # rank 0 (or one process) keeps drawing from the seed's stream
        torch.manual_seed(_rank_seed(cfg.seed))

    batch = min(cfg.batch_size, len(images))
    lo, hi = distributed.shard(batch)  # this rank's slice of every global batch
    steps_per_epoch = max(len(images) // batch, 1)
    total = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    epochs = math.ceil(total / steps_per_epoch)
    out = Path(out_dir) if out_dir is not None else None
    start_epoch = 0
    data_sha = data_fingerprint(images)
    if out is not None and (out / "last.safetensors").exists():
        if recover_interrupted_save(out / "last"):
            warnings.warn(
                f"{out / 'last.json'} was left by an interrupted save; rebuilt it", stacklevel=2
            )
        tensors, meta = load_checkpoint(out / "last", device)
        # Read through TrainConfig, so a checkpoint from before a field existed (at its
        # default now) still resumes.
        if to_dict(from_dict(TrainConfig, meta["config"])) != to_dict(cfg):
            raise ConfigError(f"{out}: a run with a different config is there; use another --out")
        if meta.get("data_sha256") != data_sha:
            raise ConfigError(
                f"{out}: the run there was trained on other images; use the same images, "
                "another output folder, or delete that folder to start over"
            )
        _restore(model, optimizer, side, tensors, cfg.seed)
        start_epoch = meta["epoch"]
    log = MetricsLog(out / "metrics.jsonl", start_epoch * steps_per_epoch) if out and main else None

    def checkpoint(epoch: int) -> None:
        # A discriminator on a winning streak may be collapsing training: an intermediate
        # checkpoint then would not be a good one to keep, so it waits (the final one is kept).
        streak = side is not None and max(side.win_streak.values()) > 0
        if out is not None and (epoch == epochs or not streak):
            rng = distributed.gather_rng_states()  # every rank takes part; rank 0 writes
            if main:
                step = min(epoch * steps_per_epoch, total)
                meta = {"config": to_dict(cfg), "epoch": epoch, "step": step}
                meta["data_sha256"] = data_sha
                save_checkpoint(out / "last", _state_tensors(model, optimizer, side, rng), meta)

    # The module F's steps run through: DDP under torchrun, compiled on request; both share
    # ``model``'s parameters, which are what is checkpointed and returned.
    forward = distributed.wrap(model, device, cfg.sync_bn)
    if cfg.compile:
        forward = torch.compile(forward)

    def f_step(x: Tensor, name: str, where: str) -> dict[str, float]:
        """One LARS step of F on L_CSI over the shifted instances of ``x``."""
        views, labels = shifted_views(x, augment, cfg.num_shifts, flip)
        with autocast(cfg.precision, device):
            outputs = forward(views.contiguous(memory_format=memory))
        loss = csi_loss(outputs.z, outputs.shift, labels, cfg.temperature)
        # Logged, and checked, as the mean over ranks: every rank stops together.
        total, con, cls = distributed.mean_over_ranks(
            torch.stack([loss.total, loss.con, loss.cls]).detach().float()
        ).tolist()
        check_finite(f"{name} (L_con-SI {con:.4g}, L_cls-SI {cls:.4g})", total, where)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        optimizer.step()
        return {"loss": total, "loss_con": con, "loss_cls": cls}

    bar = tqdm(
        total=total,
        initial=start_epoch * steps_per_epoch,
        disable=None if progress and main else True,  # None: only on a terminal
        desc=f"train {cfg.method}",
        unit="step",
        dynamic_ncols=True,
    )
    model.train()
    if side is not None:
        side.train()
    gen_losses: dict[str, float] = {}
    tick = time.perf_counter()
    try:
        for epoch in range(start_epoch, epochs):
            order = torch.randperm(
                len(images), generator=torch.Generator().manual_seed(cfg.seed + epoch)
            )
            for i in range(steps_per_epoch):
                step = epoch * steps_per_epoch + i
                if step >= total:
                    break
                lr = warmup_cosine_lr(
                    epoch + i / steps_per_epoch,
                    cfg.lr,
                    total / steps_per_epoch,
                    cfg.warmup_epochs,
                    cfg.warmup_multiplier,
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x = images[order[i * batch : (i + 1) * batch][lo:hi]].to(device, non_blocking=True)
                where = f"at epoch {epoch}, step {step}" + (f" (in {out})" if out else "")
                record = f_step(x, "L_CSI", where)
                if side is not None and (step + 1) % cfg.gen_every == 0:
                    gen_losses, synthetic = side.round(
                        model, x, augment, flip, lambda: autocast(cfg.precision, device), where
                    )
                    joint = f_step(torch.cat([x, synthetic]), "L_JOINT", where)
                    gen_losses = {**gen_losses, "loss_joint": joint["loss"], "gen_step": step}
                bar.update(1)
                if step % cfg.log_every == 0 or step == total - 1:
                    entry = {
                        "step": step,
                        "epoch": round(epoch + (i + 1) / steps_per_epoch, 4),
                        "lr": lr,
                        **record,
                        **gen_losses,
                        "seconds": round(time.perf_counter() - tick, 3),
                    }
                    if log is not None:
                        log.write(entry)
                    if verbose and main:
                        tqdm.write(log_line(cfg.method, total, entry))
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.3g}", refresh=False)
            if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == epochs:
                checkpoint(epoch + 1)
    finally:
        bar.close()
        if log is not None:
            log.close()
    distributed.broadcast_buffers(model)  # rank 0's BatchNorm statistics, kept by every rank
    distributed.barrier()
    if side is not None:
        side.eval()
    return Trained(model.eval(), side)
