"""Detectors on ImageNet-pretrained features (``contrasyn.methods.pretrained.backbones``).

``dn2``: k-nearest-neighbour distance in a frozen pretrained network's feature space (DN2,
Bergman, Cohen & Hoshen 2020, "Deep Nearest Neighbor Anomaly Detection"). Nothing is
trained: a fit extracts the normal images' features once (the bank), a score is the mean
distance of an image's features to its k nearest in the bank. Images are resized to the
backbone's ``resolution``, grey images repeated to RGB, and normalised as the backbone's
weights expect; the features are the global average of the last feature map.

The saved model holds the backbone's weights beside the bank, so a model folder loads with
no weights file and no network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from contrasyn.config import at_least, check_choice, check_fields
from contrasyn.device import autocast, effective_precision
from contrasyn.errors import ConfigError
from contrasyn.methods.backbone_names import OWN, check_backbone
from contrasyn.methods.baselines import Baseline, input_shape
from contrasyn.methods.csi.score import nearest_distance as euclidean_distance
from contrasyn.methods.csi.score import top_inner_products
from contrasyn.methods.pretrained.backbones import Backbone, build_backbone, check_installed
from contrasyn.methods.registry import register

METRICS = ("cosine", "l2")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class DN2Config:
    backbone: str = OWN
    weights: str = "packaged"
    resolution: int = 128  # the side images are resized to for the backbone (validation)
    k: int = 2  # neighbours averaged (DN2's k)
    metric: str = "cosine"  # distance between features: cosine or l2
    precision: str = "auto"  # bf16 where the hardware has native bf16 (2x at 64-224 px here)
    batch_size: int = 64  # images per backbone forward
    chunk: int = 2048  # bank rows per matrix product (memory bound)
    max_train: int | None = None  # the bank: all training images

    def __post_init__(self) -> None:
        check_backbone(self.backbone, self.weights, ("dn2.backbone", "dn2.weights"))
        check_fields(self, "dn2", ("resolution",), at_least(32), ">= 32")
        check_fields(self, "dn2", ("k", "batch_size", "chunk", "max_train"), at_least(1), ">= 1")
        check_choice(self.metric, METRICS, "dn2.metric")
        check_choice(self.precision, PRECISIONS, "dn2.precision")


# Per preset: DN2's paper setting (224 px, as ImageNet was trained), the CPU setting chosen on
# the validation split (docs/METHOD.md), and random weights for tests (no file needed).
DN2_PRESETS = {
    "paper": {"dn2": {"resolution": 224, "k": 2, "metric": "l2"}},
    "cpu": {"dn2": {}},
    "demo": {"dn2": {}},
    "tiny": {"dn2": {"weights": "random", "resolution": 32, "batch_size": 16}},
}


def nearest_distance(
    queries: Tensor, bank: Tensor, k: int, metric: str, chunk: int, others: bool = False
) -> Tensor:
    """Mean distance of each query to its ``k`` nearest bank rows: ``1 - cos`` for features
    already L2-normalised (``cosine``), Euclidean for ``l2``; ``others``: the queries are the
    bank, each row's nearest *other* rows (leave-one-out)."""
    if metric == "cosine":
        return (1 - top_inner_products(queries, bank, k, chunk, others)).mean(1)
    return euclidean_distance(queries, bank, chunk, others, k)


@register
class PretrainedKNN(Baseline):
    """DN2: kNN distance on a frozen pretrained backbone's features."""

    config_class = DN2Config
    preset_table = DN2_PRESETS
    instant = True

    @classmethod
    def preflight(cls, config: DN2Config) -> None:
        check_installed(config.backbone, config.weights)

    @property
    def precision(self) -> str:
        return effective_precision(self.config.precision, self.device)

    def _backbone(self, weights: str) -> Backbone:
        backbone = build_backbone(self.config.backbone, weights, self.config.resolution)
        # channels-last: 1.3-2x faster depthwise convolutions on the CPU, the same results
        return backbone.to(self.device, memory_format=torch.channels_last)

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """(N, dim) features on the CPU, L2-normalised for the cosine metric."""
        out = []
        for x in images.split(self.config.batch_size):
            with autocast(self.config.precision, self.device):
                h = self.backbone_(x.float().to(self.device))
            out.append(h.float().cpu())
        h = torch.cat(out)
        return F.normalize(h, dim=1) if self.config.metric == "cosine" else h

    def fit(self, images: Tensor, run_dir=None, progress=False, verbose=False, clock=None):
        self.input_shape_ = input_shape(images)
        self.backbone_ = self._backbone(self.config.weights)
        self.bank_ = self.features(images)
        return self

    def anomaly_score(self, images: Tensor) -> Tensor:
        cfg = self.config
        return nearest_distance(self.features(images), self.bank_, cfg.k, cfg.metric, cfg.chunk)

    def leave_one_out(self, n: int) -> bool:
        return n > self.config.k

    def leave_one_out_scores(self) -> dict[str, Tensor]:
        cfg = self.config
        bank = self.bank_
        return {self.name: -nearest_distance(bank, bank, cfg.k, cfg.metric, cfg.chunk, True)}

    @property
    def bank_rows(self) -> int:
        return len(self.bank_)

    def state_tensors(self) -> dict[str, Tensor]:
        net = {f"backbone.{k}": v for k, v in self.backbone_.net.state_dict().items()}
        return {**net, "bank": self.bank_, "input_shape": self.input_shape_}

    def load_state(self, tensors: dict[str, Tensor]) -> PretrainedKNN:
        self.backbone_ = self._backbone("random")  # the architecture; the weights are saved
        state = {k[len("backbone.") :]: v for k, v in tensors.items() if k.startswith("backbone.")}
        try:
            self.backbone_.net.load_state_dict(state)
        except RuntimeError as e:
            raise ConfigError(f"the saved backbone is not {self.config.backbone} ({e})") from e
        self.backbone_.eval()
        self.bank_ = tensors["bank"].float().cpu()
        self.input_shape_ = tensors["input_shape"]
        return self
