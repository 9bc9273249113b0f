"""Deep SVDD (Ruff et al., ICML 2018), one-class objective.

A bias-free LeNet-type CNN phi maps normal images close to a centre c fixed from the initial
outputs; the anomaly score is ||phi(x) - c||^2. No biases and BatchNorm without affine
parameters rule out the trivial solution phi = c. Optional autoencoder pre-training (the
paper's default) initialises phi from the encoder of a mirrored autoencoder. Defaults follow
Ruff's CIFAR-10 settings (Adam, lr 1e-4, weight decay 5e-7, batch 128, 128-d), with fewer
epochs for a CPU budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from contrasyn.config import at_least, check_fields, positive
from contrasyn.methods.baselines import Baseline, input_shape
from contrasyn.methods.registry import register


class LeNetEncoder(nn.Module):
    """Three 5x5 conv -> BN (no affine) -> leaky ReLU -> 2x2 max-pool stages (32, 64, 128
    channels), then a bias-free dense layer to ``rep_dim``. Needs sides divisible by 8."""

    def __init__(self, channels: int = 3, image_size: int = 32, rep_dim: int = 128) -> None:
        super().__init__()
        if image_size % 8:
            raise ValueError(
                f"Deep SVDD's LeNet needs an image side divisible by 8, got {image_size}"
            )
        layers: list[nn.Module] = []
        for c_in, c_out in ((channels, 32), (32, 64), (64, 128)):
            layers += [
                nn.Conv2d(c_in, c_out, 5, padding=2, bias=False),
                nn.BatchNorm2d(c_out, eps=1e-4, affine=False),
                nn.LeakyReLU(0.01),
                nn.MaxPool2d(2),
            ]
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Linear(128 * (image_size // 8) ** 2, rep_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body((x - 0.5) / 0.5))


class LeNetDecoder(nn.Module):
    """The encoder's mirror, bias-free: rep -> (rep/16) x 4 x 4 ... -> image in [0, 1]."""

    def __init__(self, channels: int = 3, image_size: int = 32, rep_dim: int = 128) -> None:
        super().__init__()
        self.side = image_size // 8
        self.c0 = rep_dim // self.side**2
        layers: list[nn.Module] = []
        for c_in, c_out in ((self.c0, 128), (128, 64), (64, 32)):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 5, padding=2, bias=False),
                nn.BatchNorm2d(c_out, eps=1e-4, affine=False),
                nn.LeakyReLU(0.01),
                nn.Upsample(scale_factor=2),
            ]
        layers += [nn.ConvTranspose2d(32, channels, 5, padding=2, bias=False), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(z.view(len(z), self.c0, self.side, self.side))


def _epochs(
    net: nn.Module,
    images: Tensor,
    epochs: int,
    lr: float,
    wd: float,
    batch: int,
    loss_fn,
    desc: str,
    progress: bool,
) -> list[float]:
    """Adam over shuffled batches; returns the mean loss of each epoch."""
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=wd)
    device = next(net.parameters()).device
    history = []
    net.train()
    for _ in tqdm(range(epochs), desc=desc, disable=None if progress else True):
        total, n = 0.0, 0
        for idx in torch.randperm(len(images)).split(batch):
            x = images[idx].to(device)
            loss = loss_fn(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(x), n + len(x)
        history.append(total / n)
    return history


@dataclass
class DeepSVDDConfig:
    rep_dim: int = 128
    epochs: int = 30
    pretrain_epochs: int = 10  # autoencoder pre-training (0: none)
    lr: float = 1e-4
    weight_decay: float = 5e-7
    batch_size: int = 128
    eps: float = 0.1  # centre coordinates closer to 0 than this are pushed to +-eps
    max_train: int | None = 2000

    def __post_init__(self) -> None:
        for names, ok, words in (
            (("rep_dim", "epochs", "batch_size", "max_train"), at_least(1), ">= 1"),
            (("pretrain_epochs", "weight_decay"), at_least(0), ">= 0"),
            (("lr", "eps"), positive, "> 0"),
        ):
            check_fields(self, "deepsvdd", names, ok, words)


@register
class DeepSVDD(Baseline):
    """One-class Deep SVDD; ``pretrain_epochs`` > 0 adds autoencoder pre-training."""

    config_class = DeepSVDDConfig

    def fit(
        self, images: Tensor, run_dir=None, progress=False, verbose=False, clock=None
    ) -> DeepSVDD:
        cfg = self.config
        torch.manual_seed(self.seed)
        _, c, h, _ = images.shape
        self.input_shape_ = input_shape(images)
        net = LeNetEncoder(c, h, cfg.rep_dim).to(self.device)
        self.pretrain_loss_: list[float] = []
        if cfg.pretrain_epochs:
            decoder = LeNetDecoder(c, h, cfg.rep_dim).to(self.device)
            ae = nn.Sequential(net, decoder)
            self.pretrain_loss_ = _epochs(
                ae, images, cfg.pretrain_epochs, cfg.lr, cfg.weight_decay, cfg.batch_size,
                lambda x: F.mse_loss(ae(x), x), "deepsvdd pretrain", progress,
            )  # fmt: skip
        # c: the mean initial output; coordinates near 0 are pushed to +-eps, since a unit
        # whose centre coordinate is 0 can be matched trivially by zero weights.
        centre = self._embed(net, images).mean(0)
        small = centre.abs() < cfg.eps
        centre[small] = torch.where(centre[small] < 0, -cfg.eps, cfg.eps)
        self.center_ = centre.to(self.device)
        self.train_loss_ = _epochs(
            net, images, cfg.epochs, cfg.lr, cfg.weight_decay, cfg.batch_size,
            lambda x: ((net(x) - self.center_) ** 2).sum(1).mean(), "deepsvdd", progress,
        )  # fmt: skip
        self.net_ = net.eval()
        return self

    @torch.no_grad()
    def _embed(self, net: nn.Module, images: Tensor) -> Tensor:
        net.eval()
        device = next(net.parameters()).device
        return torch.cat([net(x.to(device)).cpu() for x in images.split(512)])

    def anomaly_score(self, images: Tensor) -> Tensor:
        return ((self._embed(self.net_, images) - self.center_.cpu()) ** 2).sum(1)

    def state_tensors(self) -> dict[str, Tensor]:
        tensors = {f"net.{k}": v for k, v in self.net_.state_dict().items()}
        return {**tensors, "center": self.center_, "input_shape": self.input_shape_}

    def load_state(self, tensors: dict[str, Tensor]) -> DeepSVDD:
        c, h, _ = tensors["input_shape"].tolist()
        net = LeNetEncoder(c, h, self.config.rep_dim).to(self.device)
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        self.net_, self.input_shape_ = net.eval(), tensors["input_shape"]
        self.center_ = tensors["center"].to(self.device)
        return self
