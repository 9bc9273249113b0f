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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from contrasyn.config import at_least, below_one, check_fields, positive
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

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"rot mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for names, ok, words in (
            (("width", "epochs", "batch_size", "draws", "max_train"), at_least(1), ">= 1"),
            (("lr",), positive, "> 0"),
            (("momentum",), below_one, "in [0, 1)"),
            (("weight_decay",), at_least(0), ">= 0"),
        ):
            check_fields(self, "rot", names, ok, words)


@register
class RotationDetector(Baseline):
    """Rot+Trans (default) or Geom; ``fit`` on normal images, ``anomaly_score`` = minus the
    summed log-probability of the true transformations."""

    config_class = RotConfig

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

    def fit(self, images: Tensor, run_dir=None, progress=False, verbose=False) -> RotationDetector:
        cfg = self.config
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        ts = self._transforms()
        self.input_shape_ = input_shape(images)
        net = TransformClassifier(self._heads(), cfg.width, images.shape[1]).to(self.device)
        steps = max(len(images) // cfg.batch_size, 1)
        opt = torch.optim.SGD(
            net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * steps)
        self.train_loss_: list[float] = []
        net.train()
        for _ in tqdm(range(cfg.epochs), desc=cfg.mode, disable=None if progress else True):
            order, total = torch.randperm(len(images), generator=gen), 0.0
            for i in range(steps):
                x = images[order[i * cfg.batch_size : (i + 1) * cfg.batch_size]]
                index = self._draw(len(x), gen)
                batch = transform_rows(x.repeat_interleave(cfg.draws, 0), ts, index)
                logits = net(batch.to(self.device))
                labels = _labels(ts, cfg.mode, index)
                loss = sum(
                    F.cross_entropy(lg, lb.to(self.device))
                    for lg, lb in zip(logits, labels, strict=True)
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item()
            self.train_loss_.append(total / steps)
        self.net_ = net.eval()
        return self

    @torch.no_grad()
    def anomaly_score(self, images: Tensor, batch_size: int = 64) -> Tensor:
        """Every image under every transformation (M-major rows, ``forward_transformed``)."""
        ts = self._transforms()
        m = len(ts)
        labels = [lb.to(self.device) for lb in _labels(ts, self.config.mode, list(range(m)))]
        scores = []
        for x in images.split(batch_size):
            out = forward_transformed(self.net_, x, ts, self.device)
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
        c = int(tensors["input_shape"][0])
        net = TransformClassifier(self._heads(), self.config.width, c).to(self.device)
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        self.net_, self.input_shape_ = net.eval(), tensors["input_shape"]
        return self
