"""GOAD (Bergman & Hoshen, ICLR 2020): classification-based anomaly detection with a centre
triplet loss, on Geom's geometric transformations.

Every training image is seen under all M transformations; a network f maps each transformed
image to a feature, trained with the cross-entropy of a transformation classifier plus
``triplet_weight`` x the centre triplet loss (each feature closer, by ``margin``, to its own
transformation's centre than to any other). Centres c_m are the mean training features of
each transformation. A test image's score is the summed log-probability of the true
transformation under P(m | f) = softmax_m(-||f - c_m||^2); the anomaly score is minus that.
The network is a CIFAR ResNet-18 (``width``) with a linear 128-d feature layer instead of
GOAD's wide ResNet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from contrasyn.config import at_least, check_fields, positive
from contrasyn.errors import ConfigError
from contrasyn.methods.baselines import Baseline, input_shape
from contrasyn.methods.baselines.transforms import (
    Transform,
    forward_transformed,
    geom_transforms,
    rot_trans_transforms,
    transform_batch,
)
from contrasyn.methods.csi.nets import ResNet18
from contrasyn.methods.registry import register


def centre_triplet_loss(z: Tensor, margin: float = 1.0) -> Tensor:
    """``z`` (n, M, d): features of n images under M transformations. With batch centres
    c_m = mean_i z[i, m], the mean over i, m of
    relu(||z_im - c_m||^2 + margin - min_{m' != m} ||z_im - c_m'||^2)."""
    centres = z.mean(0)
    d2 = ((z.unsqueeze(2) - centres) ** 2).sum(-1)  # (n, M, M)
    m = z.shape[1]
    own = d2.diagonal(dim1=1, dim2=2)
    others = d2.masked_fill(torch.eye(m, dtype=torch.bool, device=z.device), float("inf"))
    return F.relu(own + margin - others.min(-1).values).mean()


class GOADNet(nn.Module):
    def __init__(self, n_transforms: int, width: int = 16, channels: int = 3, dim: int = 128):
        super().__init__()
        self.backbone = ResNet18(width, channels)
        self.feature = nn.Linear(self.backbone.out_dim, dim)
        self.classify = nn.Linear(dim, n_transforms)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.feature(self.backbone(x))
        return z, self.classify(z)


@dataclass
class GOADConfig:
    transforms: str = "geom"  # or "rot+trans"
    width: int = 16
    epochs: int = 5
    batch_size: int = 8  # images a step, each under all M transformations
    lr: float = 1e-3
    triplet_weight: float = 0.1
    margin: float = 1.0
    max_train: int | None = None

    def __post_init__(self) -> None:
        if self.transforms not in ("geom", "rot+trans"):
            raise ConfigError(
                f"goad transforms must be 'geom' or 'rot+trans', got {self.transforms!r}"
            )
        for names, ok, words in (
            (("width", "epochs", "batch_size", "max_train"), at_least(1), ">= 1"),
            (("lr",), positive, "> 0"),
            (("triplet_weight", "margin"), at_least(0), ">= 0"),
        ):
            check_fields(self, "goad", names, ok, words)


@register
class GOAD(Baseline):
    """GOAD on ``geom`` (72, default) or ``rot+trans`` (36) transformations."""

    config_class = GOADConfig

    def _ts(self) -> list[Transform]:
        return geom_transforms() if self.config.transforms == "geom" else rot_trans_transforms()

    def fit(self, images: Tensor, run_dir=None, progress=False, verbose=False, clock=None) -> GOAD:
        cfg = self.config
        torch.manual_seed(self.seed)
        ts = self._ts()
        m = len(ts)
        self.input_shape_ = input_shape(images)
        net = GOADNet(m, cfg.width, images.shape[1]).to(self.device)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        labels = torch.arange(m, device=self.device)
        self.train_loss_: list[float] = []
        net.train()
        for _ in tqdm(range(cfg.epochs), desc="goad", disable=None if progress else True):
            total, steps = 0.0, 0
            for idx in torch.randperm(len(images)).split(cfg.batch_size):
                x = transform_batch(images[idx], ts).to(self.device)  # (M * n, ...), M-major
                z, logits = net(x)
                n = len(idx)
                ce = F.cross_entropy(logits, labels.repeat_interleave(n))
                tc = centre_triplet_loss(z.view(m, n, -1).transpose(0, 1), cfg.margin)
                loss = ce + cfg.triplet_weight * tc
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, steps = total + loss.item(), steps + 1
            self.train_loss_.append(total / steps)
        self.net_ = net.eval()
        self.centres_ = self._features(images).mean(0)  # (M, d)
        return self

    @torch.no_grad()
    def _features(self, images: Tensor, batch_size: int = 16) -> Tensor:
        """(n, M, d) features of every image under every transformation."""
        ts, out = self._ts(), []
        for x in images.split(batch_size):
            z, _ = forward_transformed(self.net_, x, ts, self.device)
            out.append(z.view(len(ts), len(x), -1).transpose(0, 1).cpu())
        return torch.cat(out)

    def anomaly_score(self, images: Tensor) -> Tensor:
        z = self._features(images)
        d2 = ((z.unsqueeze(2) - self.centres_) ** 2).sum(-1)  # (n, M, M)
        logp = F.log_softmax(-d2, dim=-1).diagonal(dim1=1, dim2=2)
        return -logp.sum(1)

    def state_tensors(self) -> dict[str, Tensor]:
        tensors = {f"net.{k}": v for k, v in self.net_.state_dict().items()}
        return {**tensors, "centres": self.centres_, "input_shape": self.input_shape_}

    def load_state(self, tensors: dict[str, Tensor]) -> GOAD:
        c = int(tensors["input_shape"][0])
        net = GOADNet(len(self._ts()), self.config.width, c).to(self.device)
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        self.net_, self.input_shape_ = net.eval(), tensors["input_shape"]
        self.centres_ = tensors["centres"].cpu()
        return self
