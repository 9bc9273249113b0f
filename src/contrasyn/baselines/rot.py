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

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from contrasyn.baselines.transforms import (
    Transform,
    apply,
    geom_transforms,
    rot_trans_transforms,
    transform_rows,
)
from contrasyn.nets import ResNet18

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


class RotationDetector:
    """Rot+Trans (default) or Geom; ``fit`` on normal images, ``anomaly_score`` = minus the
    summed log-probability of the true transformations."""

    def __init__(
        self,
        mode: str = "rot+trans",
        width: int = 16,
        epochs: int = 15,
        batch_size: int = 32,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        draws: int = 4,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode, self.width, self.epochs, self.batch_size = mode, width, epochs, batch_size
        self.lr, self.momentum, self.weight_decay, self.draws = lr, momentum, weight_decay, draws
        self.seed, self.device, self.progress = seed, device, progress

    def _transforms(self) -> list[Transform]:
        return geom_transforms() if self.mode == "geom" else rot_trans_transforms()

    def _draw(self, n: int, gen: torch.Generator) -> list[int]:
        """Transformation indices for ``n`` images x ``draws``: for rot+trans each image in
        every rotation (draws = 4) with random translations; for geom uniformly at random."""
        ts = self._transforms()
        if self.mode == "geom":
            return torch.randint(len(ts), (n * self.draws,), generator=gen).tolist()
        index = {t: i for i, t in enumerate(ts)}
        shifts = torch.randint(-1, 2, (n * self.draws, 2), generator=gen).tolist()
        return [
            index[Transform(False, tx, ty, k % 4)]
            for k, (tx, ty) in zip(range(n * self.draws), shifts, strict=True)
        ]

    def fit(self, images: Tensor) -> RotationDetector:
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        ts = self._transforms()
        heads = (len(ts),) if self.mode == "geom" else (4, 3, 3)
        net = TransformClassifier(heads, self.width, images.shape[1]).to(self.device)
        steps = max(len(images) // self.batch_size, 1)
        opt = torch.optim.SGD(
            net.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.epochs * steps)
        self.train_loss_: list[float] = []
        net.train()
        for _ in tqdm(
            range(self.epochs), desc=f"{self.mode}", disable=None if self.progress else True
        ):
            order, total = torch.randperm(len(images), generator=gen), 0.0
            for i in range(steps):
                x = images[order[i * self.batch_size : (i + 1) * self.batch_size]]
                index = self._draw(len(x), gen)
                batch = transform_rows(x.repeat_interleave(self.draws, 0), ts, index)
                logits = net(batch.to(self.device))
                labels = _labels(ts, self.mode, index)
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
        ts = self._transforms()
        labels = _labels(ts, self.mode, list(range(len(ts))))
        scores = []
        for x in images.split(batch_size):
            logp = torch.zeros(len(x))
            for t, transform in enumerate(ts):
                out = self.net_(apply(x, transform).to(self.device))
                for lg, lb in zip(out, labels, strict=True):
                    logp += F.log_softmax(lg.float(), 1)[:, lb[t]].cpu()
            scores.append(-logp)
        return torch.cat(scores)
