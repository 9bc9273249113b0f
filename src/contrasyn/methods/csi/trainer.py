"""Training: Algorithm 1 of the paper (``algorithm_1``), and the run around it.

``algorithm_1`` is the paper's loop, one line of code per line of the algorithm (numbered as
in docs/METHOD.md, "Algorithm 1, line by line"): F's step on L_CSI for every real batch
(line 4), and after every N-th batch (line 5) one round of the generative side
(``GenerativeSide.round``: lines 6-13) and F's step on L_JOINT (line 14). Everything else is set up
around it by ``train_networks``: the batches and the learning-rate schedule
(``TrainingRun.batches``), F's step with its precision, memory format, DDP and compilation
(``FStep``), the adversarial autoencoder's warm-up before the first batch (``warm_up``,
``train.gen_warmup`` rounds; 0 in the paper), and after each batch the log, the progress bar
and the checkpoints (``TrainingRun.after_batch``). ``csi`` is the same loop without the
generative side. Rerunning ``train_networks`` with the same ``out_dir`` resumes from the last
checkpoint with the same RNG state. Under ``torchrun`` the loop runs on every rank, each on its
slice of the global batch (``contrasyn.distributed``); rank 0 logs and checkpoints.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from contrasyn import distributed
from contrasyn.budget import (
    MARGIN,
    SAVE_SECONDS,
    Clock,
    format_seconds,
    planned_step_seconds,
    steps_within,
    time_per_call,
)
from contrasyn.checkpoint import save_checkpoint
from contrasyn.config import to_dict
from contrasyn.device import autocast, resolve_device
from contrasyn.errors import ConfigError, TrainingError
from contrasyn.methods.backbone_names import is_pretrained
from contrasyn.methods.csi.adversarial import GenerativeSide
from contrasyn.methods.csi.augment import (
    HorizontalFlip,
    SimCLRAugment,
    rotate_shifts,
    shifted_views,
)
from contrasyn.methods.csi.losses import csi_loss
from contrasyn.methods.csi.nets import CSINet
from contrasyn.methods.csi.optim import LARS, warmup_cosine_lr
from contrasyn.methods.csi.resume import (
    data_fingerprint,
    load_resumable,
    rank_seed,
    restore,
    state_tensors,
)
from contrasyn.methods.csi.runlog import MetricsLog, log_line
from contrasyn.methods.csi.steps import check_finite
from contrasyn.methods.csi.trained import build_model
from contrasyn.methods.csi_config import TrainConfig

__all__ = ["Batch", "Trained", "TrainingError", "algorithm_1", "train", "train_networks"]


# Re-timing at the end of the LR warm-up: the first steps left out (kernels and caches are
# built there) and the fewest steps that must remain to time.
RETIME_SKIP = 2
RETIME_MIN = 3


class Timed(NamedTuple):
    """What timing a few steps before training found: the steps chosen, one step's seconds
    and the seconds kept for scoring the bank and the held-out images afterwards."""

    steps: int
    step_seconds: float
    scoring_seconds: float


class Batch(NamedTuple):
    """A real batch X of the loop: its step, the epoch reached at its end, F's learning rate,
    where it is (for messages) and, on an epoch's last batch, that epoch's number."""

    step: int
    epoch: float
    x: Tensor
    lr: float
    where: str
    epoch_end: int | None


Round = Callable[[Tensor, str], tuple[dict[str, float], Tensor]]


def algorithm_1(
    batches: Iterable[Batch],
    f_step: Callable[[Tensor, float, str, str], dict[str, float]],
    gen_round: Round | None,
    every: int,
    after_batch: Callable[[Batch, dict], None],
) -> None:
    """Algorithm 1 (``gen_round`` None: CSI alone). ``f_step(x, lr, name, where)`` is one step
    of F on L_CSI over x; ``gen_round(X, where)`` runs lines 6-13 and returns their losses and
    X~ = G(h) (``GenerativeSide.round``); ``every`` is N."""
    for b in batches:  # line 3: for next image batch X do
        record = f_step(b.x, b.lr, "L_CSI", b.where)  # line 4: F minimises L_CSI(X)
        if gen_round is not None and (b.step + 1) % every == 0:  # line 5: every N batches
            losses, synthetic = gen_round(b.x, b.where)  # lines 6-13: h, X~, X^; D, G, E, D'
            joint = f_step(torch.cat([b.x, synthetic]), b.lr, "L_JOINT", b.where)  # line 14
            record = {**record, **losses, "loss_joint": joint["loss"], "gen_step": b.step}
        after_batch(b, record)


def warm_up(
    side: GenerativeSide,
    images: Tensor,
    rounds: int,
    batch: int,
    shard: tuple[int, int],
    ctx: Callable,
    seed: int,
    log: Callable[[int, dict], None],
    out: Path | None,
) -> None:
    """``rounds`` rounds of the adversarial autoencoder alone (``warmup_round``) on shuffled
    real batches in their own seeded order, before F's first step, so that G enters the joint
    training already making images of the class; ``log(r, losses)`` after each."""
    lo, hi = shard
    order = torch.Generator().manual_seed(seed + 7_919)
    per_pass = max(len(images) // batch, 1)
    device = next(side.parameters()).device
    for r in range(rounds):
        if r % per_pass == 0:
            perm = torch.randperm(len(images), generator=order)
        i = r % per_pass
        x = images[perm[i * batch : (i + 1) * batch][lo:hi]].to(device, non_blocking=True)
        where = f"in warm-up round {r}" + (f" (in {out})" if out else "")
        log(r, side.warmup_round(x, ctx, where))


class Trained(NamedTuple):
    """What training produced: F, G/D/E/D' for ``csi+g``/``full`` (else None), eval mode,
    and the configuration as run (``gen_channels`` resolved from the data)."""

    model: CSINet
    side: GenerativeSide | None
    config: TrainConfig


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
    clock: Clock | None = None,
    score_passes: int = 1,
) -> Trained:
    """Train F (and, for ``csi+g``/``full``, the generative side) on ``images`` (N, C, H, W)
    in [0, 1]. ``verbose`` prints every logged record (each ``log_every`` steps) as a line,
    which is what a log file of a run without a terminal (no progress bar) shows.

    With ``out_dir`` the run is checkpointed and resumable: rerunning the same call after an
    interruption continues from the last saved epoch with the same RNG state.

    With ``cfg.time_budget`` (and ``steps`` unset) the length is chosen by the clock
    (``TrainingRun.time_steps``, checked against the real steps at the end of the LR
    warm-up by ``TrainingRun.retime``): ``clock`` is the fit's (started now when None), and
    ``score_passes`` how many passes over the K shifts scoring an image takes (the bank and
    the held-out images are scored after training). The configuration returned holds the
    chosen ``steps``.
    """
    run = TrainingRun(images, cfg, out_dir, progress, verbose, clock, score_passes)
    try:
        side, ctx = run.side, run.precision
        if side is not None and run.start_epoch == 0 and run.cfg.gen_warmup:
            warm_up(
                side, images, run.cfg.gen_warmup, run.batch, run.shard, ctx, run.cfg.seed,
                run.log_warmup, run.out,
            )  # fmt: skip
        gen_round = None
        if side is not None:

            def gen_round(x: Tensor, where: str) -> tuple[dict[str, float], Tensor]:
                return side.round(run.model, x, run.augment, run.flip, ctx, where)

        algorithm_1(run.batches(), run.f_step, gen_round, run.cfg.gen_every, run.after_batch)
    finally:
        run.close()
    return run.finish()


# -- the run around the loop ----------------------------------------------------------------


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """F's parameters to train: one group, or for a pretrained trunk the trunk's with
    ``lr_scale`` = ``backbone_lr`` (none when it is 0: frozen) and the heads' at 1."""
    if not is_pretrained(cfg.backbone):
        return [{"params": list(model.parameters()), "lr_scale": 1.0}]
    trunk = [p for p in model.backbone.parameters() if p.requires_grad]
    heads = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    groups = [{"params": heads, "lr_scale": 1.0}]
    return groups + ([{"params": trunk, "lr_scale": cfg.backbone_lr}] if trunk else [])


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> LARS | torch.optim.SGD:
    sgd = torch.optim.SGD(
        parameter_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )  # fmt: skip
    if cfg.optimizer == "lars":
        return LARS(sgd, trust_coef=cfg.lars_trust)
    if cfg.optimizer == "sgd":
        return sgd
    raise ConfigError(f"optimizer must be 'lars' or 'sgd', got {cfg.optimizer!r}")


def build_augment(cfg: TrainConfig) -> SimCLRAugment:
    return SimCLRAugment(cfg.jitter, cfg.jitter_p, cfg.gray_p, cfg.crop_scale, blur=cfg.blur)


def resolve_gen_channels(cfg: TrainConfig, images: Tensor) -> TrainConfig:
    """``cfg`` with ``gen_channels`` fixed from the data: 1 when every training image is grey
    (its channels equal, as replicated grey images are), else ``channels``. G then learns the
    data's own images; its samples are replicated to F's channels."""
    if cfg.method == "csi" or cfg.gen_channels is not None:
        return cfg
    grey = cfg.channels == 1 or bool((images == images[:, :1]).all())
    return dataclasses.replace(cfg, gen_channels=1 if grey else cfg.channels)


class FStep:
    """One LARS step of F on L_CSI over the shifted instances of a batch, at a learning rate;
    the forward runs through ``forward`` (F itself, under DDP or compiled), in the run's
    precision and memory format. Returns L_CSI and its parts, averaged over ranks."""

    def __init__(self, run: TrainingRun, forward: nn.Module) -> None:
        self.run, self.forward = run, forward

    def __call__(self, x: Tensor, lr: float, name: str, where: str) -> dict[str, float]:
        run, cfg = self.run, self.run.cfg
        for group in run.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        views, labels = shifted_views(x, run.augment, cfg.num_shifts, run.flip)
        with run.precision():
            outputs = self.forward(views.contiguous(memory_format=run.memory))
        loss = csi_loss(outputs.z, outputs.shift, labels, cfg.temperature)
        # Logged, and checked, as the mean over ranks: every rank stops together.
        total, con, cls = distributed.mean_over_ranks(
            torch.stack([loss.total, loss.con, loss.cls]).detach().float()
        ).tolist()
        check_finite(f"{name} (L_con-SI {con:.4g}, L_cls-SI {cls:.4g})", total, where)
        run.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        run.optimizer.step()
        return {"loss": total, "loss_con": con, "loss_cls": cls}


class TrainingRun:
    """Everything ``algorithm_1`` runs in: the networks and optimisers, the resumed state,
    the batches and schedule, the log, the progress bar and the checkpoints."""

    def __init__(
        self,
        images: Tensor,
        cfg: TrainConfig,
        out_dir: str | Path | None,
        progress: bool,
        verbose: bool,
        clock: Clock | None = None,
        score_passes: int = 1,
    ) -> None:
        if images.ndim != 4 or images.shape[1] != cfg.channels:
            raise ConfigError(
                f"training images must be (N, {cfg.channels}, H, W), got {tuple(images.shape)}"
            )
        if cfg.method != "csi" and images.shape[-1] != cfg.image_size:
            raise ConfigError(
                f"training images are {images.shape[-2]}x{images.shape[-1]} but the generator "
                f"of method {cfg.method!r} makes {cfg.image_size}x{cfg.image_size} "
                "(train.image_size)"
            )
        self.images, self.verbose = images, verbose
        self.cfg = cfg = resolve_gen_channels(cfg, images)
        self.device = device = distributed.init(resolve_device(cfg.device))
        self.main = distributed.is_main()
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.model = build_model(cfg).to(device)
        self.optimizer = build_optimizer(self.model, cfg)
        self.side = GenerativeSide(cfg).to(device) if cfg.method != "csi" else None
        self.augment, self.flip = build_augment(cfg), HorizontalFlip()
        self.memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory)
        if distributed.rank():  # rank 0 (or one process) keeps drawing from the seed's stream
            torch.manual_seed(rank_seed(cfg.seed))

        self.batch = min(cfg.batch_size, len(images))
        self.shard = distributed.shard(self.batch)  # this rank's slice of every global batch
        self.steps_per_epoch = max(len(images) // self.batch, 1)
        self.out = Path(out_dir) if out_dir is not None else None
        self.clock = None
        # With a length chosen by the clock: what the timing beforehand found (one step, the
        # scoring after training), checked against the real steps when the LR warm-up ends.
        self.timed: Timed | None = None
        if cfg.time_budget is not None:
            self.clock = clock if clock is not None else Clock.started(cfg.time_budget)
            if cfg.steps is None:
                steps = self._resumed_steps()
                if steps is None:
                    self.timed = self.time_steps(score_passes)
                    steps = self.timed.steps
                self.cfg = cfg = dataclasses.replace(cfg, steps=steps)
        self.total = cfg.steps if cfg.steps is not None else cfg.epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.total / self.steps_per_epoch)
        self.data_sha = data_fingerprint(images)
        self.start_epoch = self._resume()
        resume_step = self.start_epoch * self.steps_per_epoch
        self.log = MetricsLog(self.out / "metrics.jsonl", resume_step) if self.out else None
        if not self.main:
            self.log = None
        # The module F's steps run through: DDP under torchrun, compiled on request; both
        # share ``model``'s parameters, which are what is checkpointed and returned.
        forward = distributed.wrap(self.model, device, cfg.sync_bn)
        self.f_step = FStep(self, torch.compile(forward) if cfg.compile else forward)
        self.bar = tqdm(
            total=self.total,
            initial=resume_step,
            disable=None if progress and self.main else True,  # None: only on a terminal
            desc=f"train {cfg.method}",
            unit="step",
            dynamic_ncols=True,
        )
        self.model.train()
        if self.side is not None:
            self.side.train()
        self.tick = time.perf_counter()
        self.latest: dict[str, float] = {}
        self.retime_at = self._retime_step()
        self.step_ends: list[float] = []  # perf_counter at the end of each step, to retime_at

    def precision(self):
        """The precision context of every forward pass (bf16 autocast or nothing)."""
        return autocast(self.cfg.precision, self.device)

    def _resumed_steps(self) -> int | None:
        """The length a checkpoint in ``out`` chose for this same budget (resuming keeps it,
        so the schedule does not change half-way), or None."""
        meta_path = self.out / "last.json" if self.out is not None else None
        if meta_path is None or not meta_path.is_file():
            return None
        try:
            saved = json.loads(meta_path.read_text()).get("config", {})
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return None  # _resume reports the damaged file
        same = saved.get("time_budget") == self.cfg.time_budget
        return saved.get("steps") if same and isinstance(saved.get("steps"), int) else None

    def time_steps(self, score_passes: int) -> Timed:
        """The steps that fit in what is left of the clock: one step of F (and, for the
        generative variants, its share of a round and of F's L_JOINT step, plus the warm-up
        rounds) timed here on throwaway copies of the networks, in this run's precision,
        memory format and batch, with the caller's RNG state kept; after training the bank
        of every training image and the held-out images are scored (``score_passes`` passes
        over the K shifts each) and the model saved. Every rank takes the mean of the
        ranks' timings, so all choose the same length."""
        cfg = self.cfg
        probe = copy.copy(self)  # the same data, augmentations, precision and memory format
        probe.model = copy.deepcopy(self.model)
        probe.optimizer = build_optimizer(probe.model, cfg)
        probe.side = copy.deepcopy(self.side)
        step = FStep(probe, probe.model)
        lo, hi = self.shard
        gen = torch.Generator().manual_seed(cfg.seed + 104_729)

        def batch() -> Tensor:
            pick = torch.randperm(len(self.images), generator=gen)[: self.batch][lo:hi]
            return self.images[pick].to(self.device)

        x = batch()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            timings = [time_per_call(lambda: step(batch(), cfg.lr, "a timing step", ""), 2, 5)]
            if probe.side is not None:
                side = probe.side

                def joint_round() -> None:
                    _, synthetic = side.round(probe.model, x, self.augment, self.flip,
                                              self.precision, "in a timing round")  # fmt: skip
                    step(torch.cat([x, synthetic]), cfg.lr, "a timing step", "")

                timings.append(time_per_call(joint_round, 1, 3))
                warm = lambda: side.warmup_round(x, self.precision, "in a timing round")  # noqa: E731
                timings.append(time_per_call(warm, 1, 3) if cfg.gen_warmup else 0.0)
            probe.model.eval()
            views = rotate_shifts(x, cfg.num_shifts).contiguous(memory_format=self.memory)

            @torch.inference_mode()
            def score_batch() -> None:
                with self.precision():
                    probe.model(views)

            timings.append(time_per_call(score_batch, 1, 3) / len(x))
        f_s, *gen_s, score_s = distributed.mean_over_ranks(
            torch.tensor(timings, device=self.device)
        ).tolist()
        per_step = f_s + (gen_s[0] / cfg.gen_every if gen_s else 0.0)
        scoring = (len(self.images) + self.clock.after_images) * score_passes * score_s
        reserve = scoring + (gen_s[1] * cfg.gen_warmup if gen_s else 0.0) + SAVE_SECONDS
        steps = steps_within(
            self.clock.left(), per_step, reserve, self.clock.seconds, what=f"training {cfg.method}"
        )
        return Timed(steps, per_step, scoring)

    def _retime_step(self) -> int | None:
        """The step after which the length the timing chose is checked against the real
        steps: the end of F's LR warm-up, whose learning rates do not depend on the length
        (so ``train.steps`` still repeats the run exactly). None when the length was not
        timed by this run (given, or a resumed run's), or when the warm-up is too short to
        time (``RETIME_SKIP`` steps left out and at least ``RETIME_MIN`` timed) or ends the
        run."""
        if self.timed is None:
            return None
        end = math.ceil(self.cfg.warmup_epochs * self.steps_per_epoch)
        timed_steps = end - RETIME_SKIP
        return end if timed_steps >= RETIME_MIN and end < self.total else None

    def retime(self, done: int) -> None:
        """Set the length again from the real steps so far (``done`` of them, the first
        ``RETIME_SKIP`` left out; a timed run starts at step 0): a few steps timed on a copy
        before training run faster than a long run does (15-20% on a 2-core VM), and a fit
        that ends past its budget breaks the user's promise. Steps faster than timed
        lengthen the run with a slack (``planned_step_seconds``), slower ones shorten it.
        The scoring after training is scaled by the same slowdown (never shrunk); the
        generative side's warm-up rounds are already spent. The mean over ranks, so all
        choose the same length; at least one step more, which ends the run with its
        checkpoint."""
        timed, clock = self.timed, self.clock
        ends = self.step_ends
        measured = (ends[-1] - ends[RETIME_SKIP - 1]) / (len(ends) - RETIME_SKIP)
        pair = torch.tensor([measured, clock.left()], device=self.device)  # NCCL: on the GPU
        step_s, left = distributed.mean_over_ranks(pair).tolist()
        slower = max(step_s / timed.step_seconds, 1.0)
        reserve = timed.scoring_seconds * slower + SAVE_SECONDS
        room = left - reserve - MARGIN * clock.seconds
        planned = planned_step_seconds(step_s, timed.step_seconds)
        self.total = done + max(math.floor(room / planned), 1)
        self.epochs = math.ceil(self.total / self.steps_per_epoch)
        self.cfg = dataclasses.replace(self.cfg, steps=self.total)
        self.bar.total = self.total
        self.bar.refresh()
        self._write(
            {"step": done - 1, "retimed_steps": self.total, "timed_steps": timed.steps,
             "step_seconds": round(step_s, 4), "timed_step_seconds": round(timed.step_seconds, 4),
             "seconds": round(time.perf_counter() - self.tick, 3)}
        )  # fmt: skip

    def _resume(self) -> int:
        """Restore the last checkpoint in ``out`` (if any); the epoch to start from."""
        found = load_resumable(self.out, self.cfg, self.data_sha, self.device)
        if found is None:
            return 0
        tensors, epoch = found
        restore(self.model, self.optimizer, self.side, tensors, self.cfg.seed)
        return epoch

    def batches(self) -> Iterator[Batch]:
        """The real batches from the resumed epoch on, shuffled per epoch (seeded), each with
        F's learning rate on CSI's warm-up + cosine schedule."""
        cfg, images, batch, spe = self.cfg, self.images, self.batch, self.steps_per_epoch
        lo, hi = self.shard
        epoch = self.start_epoch
        while epoch < self.epochs:  # ``retime`` may change the length on the way
            order = torch.randperm(
                len(images), generator=torch.Generator().manual_seed(cfg.seed + epoch)
            )
            for i in range(spe):
                step = epoch * spe + i
                if step >= self.total:
                    break
                lr = warmup_cosine_lr(
                    epoch + i / spe,
                    cfg.lr,
                    self.total / spe,
                    cfg.warmup_epochs,
                    cfg.warmup_multiplier,
                )
                x = images[order[i * batch : (i + 1) * batch][lo:hi]]
                where = f"at epoch {epoch}, step {step}" + (f" (in {self.out})" if self.out else "")
                last = i == spe - 1 or step == self.total - 1
                yield Batch(
                    step,
                    round(epoch + (i + 1) / spe, 4),
                    x.to(self.device, non_blocking=True),
                    lr,
                    where,
                    epoch + 1 if last else None,
                )
            epoch += 1

    def after_batch(self, b: Batch, record: dict) -> None:
        """Progress, the log every ``log_every`` steps (with the latest round's losses), and
        the checkpoint every ``checkpoint_every`` epochs and at the end."""
        self.bar.update(1)
        if self.retime_at is not None and b.step < self.retime_at:
            self.step_ends.append(time.perf_counter())
            if b.step + 1 == self.retime_at:
                self.retime(self.retime_at)
        self.latest.update(record)  # a round's losses stay until the next round
        if b.step % self.cfg.log_every == 0 or b.step == self.total - 1:
            entry = {
                "step": b.step,
                "epoch": b.epoch,
                "lr": b.lr,
                **self.latest,
                "seconds": round(time.perf_counter() - self.tick, 3),
            }
            self._write(entry)
        left = {} if self.clock is None else {"left": format_seconds(self.clock.left())}
        self.bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{b.lr:.3g}", **left, refresh=False)
        if b.epoch_end == self.epochs and self.side is not None:
            self.side.calibrate_sampler()  # the sampling generator's statistics, saved with it
        if b.epoch_end is not None and (
            b.epoch_end % self.cfg.checkpoint_every == 0 or b.epoch_end == self.epochs
        ):
            self.checkpoint(b.epoch_end)

    def log_warmup(self, r: int, losses: dict[str, float]) -> None:
        if r % self.cfg.log_every == 0 or r == self.cfg.gen_warmup - 1:
            seconds = round(time.perf_counter() - self.tick, 3)
            self._write({"warmup_round": r, **losses, "seconds": seconds})

    def _write(self, entry: dict) -> None:
        if self.log is not None:
            self.log.write(entry)
        if self.verbose and self.main:
            tqdm.write(log_line(self.cfg.method, self.total, entry))

    def checkpoint(self, epoch: int) -> None:
        """Save everything needed to resume exactly. A discriminator on a winning streak may
        be collapsing training: an intermediate checkpoint then would not be a good one to
        keep, so it waits (the final one is kept)."""
        side = self.side
        streak = side is not None and max(side.win_streak.values()) > 0
        if self.out is None or (epoch != self.epochs and streak):
            return
        rng = distributed.gather_rng_states()  # every rank takes part; rank 0 writes
        if self.main:
            step = min(epoch * self.steps_per_epoch, self.total)
            meta = {"config": to_dict(self.cfg), "epoch": epoch, "step": step}
            meta["data_sha256"] = self.data_sha
            tensors = state_tensors(self.model, self.optimizer, side, rng)
            save_checkpoint(self.out / "last", tensors, meta)

    def close(self) -> None:
        self.bar.close()
        if self.log is not None:
            self.log.close()

    def finish(self) -> Trained:
        distributed.broadcast_buffers(self.model)  # rank 0's BatchNorm statistics everywhere
        distributed.barrier()
        if self.side is not None:
            self.side.eval()
        return Trained(self.model.eval(), self.side, self.cfg)
