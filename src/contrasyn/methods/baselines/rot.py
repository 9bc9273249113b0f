"""Self-supervised transformation prediction: Rot+Trans (Hendrycks et al., NeurIPS 2019) and,
as an option, Geom (Golan & El-Yaniv, NeurIPS 2018).

A network learns to tell which geometric transformation was applied to a normal image; the
normality of a test image is the summed log-probability of the true transformation over all
of them, so images whose transformations the network cannot recognise are anomalous.
- ``rot+trans`` (default): heads for the rotation (4-way) and the horizontal and vertical
  translations (3-way each, a quarter side with reflection); each training image is seen in
  all 4 rotations with random translations; the score sums the three heads' log-probabilities
  over all 36 transformations.
- ``geom``: one 72-way head over flip x translations x rotations, trained on random
  transformations; the score is the simplified one (summed log-probability of the true
  transformation; Golan's Dirichlet score is not used).
The network is a CIFAR ResNet-18 (``width``) instead of the papers' wide ResNets.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from contrasyn.budget import SAVE_SECONDS, Clock, steps_within, time_per_call
from contrasyn.config import at_least, below_one, check_fields, positive
from contrasyn.device import autocast, effective_precision
from contrasyn.errors import ConfigError
from contrasyn.methods.baselines import Baseline, input_shape
from contrasyn.methods.baselines.transforms import (
    Transform,
    forward_transformed,
    geom_transforms,
    rot_trans_transforms,
    transform_rows,
)
from contrasyn.methods.csi.nets import ResNet18
from contrasyn.methods.registry import register

MODES = ("rot+trans", "geom")


class TransformClassifier(nn.Module):
    """ResNet-18 trunk with one linear head per transformation factor."""

    def __init__(self, heads: tuple[int, ...], width: int = 16, channels: int = 3) -> None:
        super().__init__()
        self.backbone = ResNet18(width, channels)
        self.heads = nn.ModuleList(nn.Linear(self.backbone.out_dim, n) for n in heads)

    def forward(self, x: Tensor) -> list[Tensor]:
        h = self.backbone(x)
        return [head(h) for head in self.heads]


def _labels(ts: list[Transform], mode: str, index: list[int]) -> list[Tensor]:
    if mode == "geom":
        return [torch.tensor(index)]
    return [
        torch.tensor([ts[i].rot for i in index]),
        torch.tensor([ts[i].tx + 1 for i in index]),
        torch.tensor([ts[i].ty + 1 for i in index]),
    ]


@dataclass
class RotConfig:
    mode: str = "rot+trans"  # or "geom"
    width: int = 16
    epochs: int = 15
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    draws: int = 4  # transformations drawn per image and step
    max_train: int | None = None
    steps: int | None = None  # when set, training is this many steps and ``epochs`` is unused
    # Seconds for the whole fit: ``steps`` is chosen from this machine's speed (contrasyn.budget).
    time_budget: float | None = None
    # bf16 autocast ("auto": where the hardware runs it natively) and channels-last tensors:
    # the CSI family's speed levers, so that at equal time Rot+Trans is not held to fp32.
    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"rot mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        effective_precision(self.precision, torch.device("cpu"))  # refuses an unknown name
        if self.channels_last and self.width <= 4:
            # the PyTorch CPU bug TrainConfig refuses too (1x1 stride-2 convolutions, <= 4 in)
            raise ConfigError("rot.channels_last needs rot.width > 4 (a PyTorch CPU bug)")
        for names, ok, words in (
            (
                ("width", "epochs", "batch_size", "draws", "max_train", "steps"),
                at_least(1),
                ">= 1",
            ),
            (("lr", "time_budget"), positive, "> 0"),
            (("momentum",), below_one, "in [0, 1)"),
            (("weight_decay",), at_least(0), ">= 0"),
        ):
            check_fields(self, "rot", names, ok, words)


@register
class RotationDetector(Baseline):
    """Rot+Trans (default) or Geom; ``fit`` on normal images, ``anomaly_score`` = minus the
    summed log-probability of the true transformations."""

    config_class = RotConfig
    budget_fields = ("steps", "time_budget")
    late_fields = {"precision": "fp32", "channels_last": False}

    @property
    def precision(self) -> str:
        return effective_precision(self.config.precision, self.device)

    def _memory(self) -> torch.memory_format:
        return torch.channels_last if self.config.channels_last else torch.contiguous_format

    def _network(self, channels: int) -> TransformClassifier:
        net = TransformClassifier(self._heads(), self.config.width, channels)
        return net.to(self.device, memory_format=self._memory())

    def _transforms(self) -> list[Transform]:
        return geom_transforms() if self.config.mode == "geom" else rot_trans_transforms()

    def _heads(self) -> tuple[int, ...]:
        return (len(self._transforms()),) if self.config.mode == "geom" else (4, 3, 3)

    def _draw(self, n: int, gen: torch.Generator) -> list[int]:
        """Transformation indices for ``n`` images x ``draws``: for rot+trans each image in
        every rotation (draws = 4) with random translations; for geom uniformly at random."""
        ts, draws = self._transforms(), self.config.draws
        if self.config.mode == "geom":
            return torch.randint(len(ts), (n * draws,), generator=gen).tolist()
        index = {t: i for i, t in enumerate(ts)}
        shifts = torch.randint(-1, 2, (n * draws, 2), generator=gen).tolist()
        return [
            index[Transform(False, tx, ty, k % 4)]
            for k, (tx, ty) in zip(range(n * draws), shifts, strict=True)
        ]

    def fit(
        self, images: Tensor, run_dir=None, progress=False, verbose=False, clock=None
    ) -> RotationDetector:
        cfg = self.config
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        ts = self._transforms()
        self.input_shape_ = input_shape(images)
        net = self._network(images.shape[1])
        per_epoch = max(len(images) // cfg.batch_size, 1)

        def sgd(module: nn.Module) -> torch.optim.SGD:
            return torch.optim.SGD(
                module.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                weight_decay=cfg.weight_decay,
            )  # fmt: skip

        def step(module: nn.Module, opt: torch.optim.Optimizer, x: Tensor) -> float:
            index = self._draw(len(x), gen)
            batch = transform_rows(x.repeat_interleave(cfg.draws, 0), ts, index)
            with autocast(cfg.precision, self.device):
                logits = module(batch.to(self.device, memory_format=self._memory()))
            labels = _labels(ts, cfg.mode, index)
            loss = sum(
                F.cross_entropy(lg.float(), lb.to(self.device))
                for lg, lb in zip(logits, labels, strict=True)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.item()

        if cfg.time_budget is not None and cfg.steps is None:
            cfg = self.config = dataclasses.replace(
                cfg, steps=self._budget_steps(net, sgd, step, images, gen, clock)
            )
        total = cfg.steps if cfg.steps is not None else cfg.epochs * per_epoch
        opt = sgd(net)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
        self.train_loss_: list[float] = []
        net.train()
        epochs = range(math.ceil(total / per_epoch))
        for epoch in tqdm(epochs, desc=cfg.mode, disable=None if progress else True):
            order, summed = torch.randperm(len(images), generator=gen), 0.0
            done = min(per_epoch, total - epoch * per_epoch)
            for i in range(done):
                x = images[order[i * cfg.batch_size : (i + 1) * cfg.batch_size]]
                summed += step(net, opt, x)
                sched.step()
            self.train_loss_.append(summed / done)
        self.net_ = net.eval()
        return self

    def _budget_steps(
        self, net, sgd, step, images: Tensor, gen: torch.Generator, clock: Clock | None
    ) -> int:
        """The steps that fit in the clock's time left: one step timed on a throwaway copy
        of the network (the RNG states kept, so the run is the one ``rot.steps`` gives), and
        after training the held-out images scored under every transformation, and the save."""
        cfg = self.config
        clock = clock if clock is not None else Clock.started(cfg.time_budget)
        probe = copy.deepcopy(net).train()
        opt = sgd(probe)
        x = images[: cfg.batch_size]
        drawn = gen.get_state()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            step_s = time_per_call(lambda: step(probe, opt, x), 2, 5)
            self.net_ = probe.eval()
            score_s = time_per_call(lambda: self.anomaly_score(x), 1, 2) / len(x)
        gen.set_state(drawn)
        del self.net_
        reserve = clock.after_images * score_s + SAVE_SECONDS
        return steps_within(
            clock.left(), step_s, reserve, clock.seconds, what="training rot", setting="rot.steps"
        )

    @torch.no_grad()
    def anomaly_score(self, images: Tensor, batch_size: int = 64) -> Tensor:
        """Every image under every transformation (M-major rows, ``forward_transformed``)."""
        ts = self._transforms()
        m = len(ts)
        labels = [lb.to(self.device) for lb in _labels(ts, self.config.mode, list(range(m)))]
        scores = []
        for x in images.split(batch_size):
            with autocast(self.config.precision, self.device):
                out = forward_transformed(self.net_, x, ts, self.device, self._memory())
            logp = torch.zeros(m, len(x), device=self.device)
            for lg, lb in zip(out, labels, strict=True):
                lp = F.log_softmax(lg.float(), 1).view(m, len(x), -1)
                logp += lp.gather(2, lb.view(m, 1, 1).expand(m, len(x), 1)).squeeze(2)
            scores.append(-logp.sum(0).cpu())
        return torch.cat(scores)

    def state_tensors(self) -> dict[str, Tensor]:
        tensors = {f"net.{k}": v for k, v in self.net_.state_dict().items()}
        return {**tensors, "input_shape": self.input_shape_}

    def load_state(self, tensors: dict[str, Tensor]) -> RotationDetector:
        net = self._network(int(tensors["input_shape"][0]))
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        self.net_, self.input_shape_ = net.eval(), tensors["input_shape"]
        return self
