"""The CSI family as registered methods: ``csi`` (CSI alone), ``csi+g`` (CSI + GAN) and
``full`` (the paper's method), trained by Algorithm 1 (``trainer.train_networks``) and scored
against a bank of training features (``score.Scorer``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import Tensor

from contrasyn.adversarial import GenerativeSide
from contrasyn.config import SCORES, RunConfig
from contrasyn.device import effective_precision
from contrasyn.presets import get_preset
from contrasyn.registry import Method, register
from contrasyn.score import Scorer
from contrasyn.trained import build_model
from contrasyn.trainer import train_networks


@register("csi", "csi+g", "full")
class CSIFamily(Method):
    """F (and, for ``csi+g``/``full``, the generative side) trained on normal images; the
    bank of their features scores new ones. ``config`` is a ``RunConfig``."""

    config_class = RunConfig

    @classmethod
    def preset_config(cls, name: str, preset: str, overrides: dict[str, Any]) -> RunConfig:
        train = {**overrides.get("train", {}), "method": name}
        return get_preset(preset, {**overrides, "train": train})

    @classmethod
    def generative(cls, name: str) -> bool:
        return name != "csi"  # csi+g and full train G (and D; full also E and D')

    @property
    def score_names(self) -> tuple[str, ...]:
        default = self.config.score.score
        return (default, *(s for s in SCORES if s != default))

    @property
    def max_train(self) -> int | None:
        return self.config.train.max_train

    @property
    def precision(self) -> str:
        return effective_precision(self.config.train.precision, self.device)

    @property
    def bank_rows(self) -> int:
        return len(self.scorer.bank_z_)

    def _with_seed(self) -> RunConfig:
        train = dataclasses.replace(self.config.train, seed=self.seed, device=str(self.device))
        return dataclasses.replace(self.config, train=train)

    def fit(
        self,
        images: Tensor,
        run_dir: Path | None = None,
        progress: bool = False,
        verbose: bool = False,
    ) -> CSIFamily:
        cfg = self._with_seed()
        model, side, train_cfg = train_networks(images, cfg.train, run_dir, progress, verbose)
        self.config = dataclasses.replace(cfg, train=train_cfg)  # G's channels resolved
        self.model, self.side = model, side
        self.scorer = Scorer(self.config.train, self.config.score).fit(model, images)
        return self

    def score_samples(self, images: Tensor) -> dict[str, Tensor]:
        return self.scorer.score_samples(self.model, images)

    def state_tensors(self) -> dict[str, Tensor]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"scorer.{k}": v for k, v in self.scorer.state_tensors().items()})
        if self.side is not None:
            tensors.update(self.side.weight_tensors())
        return tensors

    def load_state(self, tensors: dict[str, Tensor]) -> CSIFamily:
        import torch

        cfg = self.config
        model = build_model(cfg.train).to(self.device)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.eval()
        self.scorer = Scorer(cfg.train, cfg.score).load_state(
            {k[7:]: v for k, v in tensors.items() if k.startswith("scorer.")}
        )
        self.side = None
        if cfg.train.method != "csi":
            self.side = GenerativeSide(cfg.train).to(self.device)
            self.side.load_weight_tensors(tensors)
            self.side.eval()
        return self
