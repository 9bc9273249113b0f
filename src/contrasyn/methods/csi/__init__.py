"""The CSI family as registered methods: ``csi`` (CSI alone), ``csi+g`` (CSI + GAN) and
``full`` (the paper's method), trained by Algorithm 1 (``trainer.train_networks``) and scored
against a bank of training features (``score.Scorer``)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from contrasyn.budget import Clock, format_seconds, with_budget
from contrasyn.config import save_config, to_dict
from contrasyn.device import effective_precision
from contrasyn.errors import ConfigError
from contrasyn.methods.backbone_names import is_pretrained
from contrasyn.methods.csi.adversarial import GenerativeSide
from contrasyn.methods.csi.score import Scorer, import_faiss
from contrasyn.methods.csi.symmetry import describe, fitted_shifts, rotation_ratios
from contrasyn.methods.csi.trained import build_model
from contrasyn.methods.csi.trainer import train_networks
from contrasyn.methods.csi_config import (
    GENERATIVE_FIELDS,
    LATER_FIELDS,
    SCORES,
    RunConfig,
    TrainConfig,
)
from contrasyn.methods.presets import get_preset
from contrasyn.methods.registry import OWN_SETTINGS, Method, Resolved, register, split_settings


@register
class CSIFamily(Method):
    """F (and, for ``csi+g``/``full``, the generative side) trained on normal images; the
    bank of their features scores new ones. ``config`` is a ``RunConfig``."""

    config_class = RunConfig
    trains_network = True

    @classmethod
    def preset_config(cls, name: str, preset: str, overrides: dict[str, Any]) -> RunConfig:
        train = {**overrides.get("train", {}), "method": name}
        return get_preset(preset, {**overrides, "train": train})

    @classmethod
    def sections(cls, name: str) -> tuple[str, ...]:
        return ("train", "score")

    @classmethod
    def reserved(cls, section: str) -> tuple[str, ...]:
        return OWN_SETTINGS if section == "train" else ()  # score.seed is the scorer's own

    @classmethod
    def sections_help(cls, name: str) -> str:
        return (
            f"method {name}'s settings are train.FIELD or score.FIELD (the fields of "
            "TrainConfig and ScoreConfig in contrasyn/methods/csi_config.py; e.g. --set "
            "train.epochs=5)"
        )

    @classmethod
    def resolve(
        cls,
        name: str,
        preset: str,
        settings: Mapping[str, Mapping[str, Any]],
        *,
        seed: int,
        device: str,
        score: str | None,
        deterministic: bool,
        input: Mapping[str, int | None],
    ) -> Resolved:
        sections, size = split_settings(name, settings, input)
        train = {**sections["train"], **{k: v for k, v in size.items() if v is not None}}
        length = sorted({"epochs", "steps"} & set(train))
        if length and train.get("time_budget") is not None:
            raise ConfigError(
                f"train.time_budget and train.{', train.'.join(length)} both set: the budget "
                "chooses the length; give one"
            )
        if length:
            train["time_budget"] = None  # a length given replaces the preset's time budget
        scoring = sections["score"]
        train.update(device=device, seed=seed)
        scoring.setdefault("seed", seed)
        if score is not None:
            if scoring.get("score", score) != score:
                raise ConfigError(f"score {score} contradicts score.score={scoring['score']}")
            scoring["score"] = score
        if deterministic:
            given = sorted({"augment", "ensemble"} & set(scoring))
            if given:
                raise ConfigError(
                    f"{', '.join(given)} set with deterministic=True (one pass, no random "
                    "draws); pass deterministic=False to use test-time draws"
                )
            scoring.update(augment=False, ensemble=1)
        config = cls.preset_config(name, preset, {"train": train, "score": scoring})
        t = config.train
        return Resolved(config, {"image_size": t.image_size, "channels": t.channels})

    @classmethod
    def preflight(cls, config: RunConfig) -> None:
        if config.score.index == "faiss":
            import_faiss()  # missing: say so now, not after training
        if is_pretrained(config.train.backbone):
            from contrasyn.methods.pretrained.backbones import check_installed

            check_installed(config.train.backbone, config.train.backbone_weights)

    @classmethod
    def result_settings(cls, name: str, config: RunConfig, input: Mapping[str, int]) -> dict:
        """The run configuration without what varies per cell (method, seed, device), the
        generative side's fields for ``csi`` (it has none), and fields added to the
        configuration later while at their default (so older rows keep their hash)."""
        data, defaults = to_dict(config), to_dict(RunConfig())
        for part, names in LATER_FIELDS.items():
            for field in names:
                if data[part][field] == defaults[part][field]:
                    del data[part][field]
        drop = {"method", "seed", "device", *(() if cls.generative(name) else GENERATIVE_FIELDS)}
        data["train"] = {k: v for k, v in data["train"].items() if k not in drop}
        data["score"].pop("seed", None)
        return data

    @classmethod
    def with_time_budget(
        cls, name: str, settings: Mapping[str, Mapping[str, Any]], seconds: float
    ) -> dict[str, dict[str, Any]]:
        out = {k: dict(v) for k, v in settings.items()}
        out["train"] = with_budget("train", out.get("train", {}), seconds)
        return out

    @property
    def time_budget(self) -> float | None:
        return self.config.train.time_budget

    @property
    def length_setting(self) -> str | None:
        steps = self.config.train.steps
        return None if steps is None else f"train.steps={steps}"

    @classmethod
    def generative(cls, name: str) -> bool:
        return name != "csi"  # csi+g and full train G (and D; full also E and D')

    @property
    def score_names(self) -> tuple[str, ...]:
        default = self.config.score.score
        available = self.scorer.score_names if hasattr(self, "scorer") else SCORES
        return (default, *(s for s in available if s != default))

    @property
    def max_train(self) -> int | None:
        return self.config.train.max_train

    @property
    def length(self) -> str:
        t = self.config.train
        if t.steps is not None:
            return f"{t.steps} steps"
        if t.time_budget is not None:
            return f"as many steps as fit in {format_seconds(t.time_budget)} (m:ss)"
        return f"{t.epochs} epochs"

    @property
    def steps_setting(self) -> str:
        return "train.steps"

    @property
    def counts_epochs(self) -> bool:
        t = self.config.train
        return t.steps is None and t.time_budget is None

    def steps_for(self, n_train: int) -> int | None:
        t = self.config.train
        if n_train < 1 or (t.steps is None and t.time_budget is not None):
            return None
        return (
            t.steps
            if t.steps is not None
            else t.epochs * max(n_train // min(t.batch_size, n_train), 1)
        )

    @property
    def precision(self) -> str:
        return effective_precision(self.config.train.precision, self.device)

    @property
    def deterministic(self) -> bool:
        return not self.config.score.augment

    @property
    def config_input(self) -> dict[str, int]:
        t = self.config.train
        return {"image_size": t.image_size, "channels": t.channels}

    @property
    def config_seed(self) -> int:
        return self.config.train.seed

    @property
    def probe_safe(self) -> bool:
        score = self.config.score
        return score.index == "exact" and not score.augment

    def check_loaded(self) -> None:
        if self.config.train.method != self.name:
            raise ConfigError(
                f"config.train.method is {self.config.train.method!r}, not {self.name!r}"
            )
        check_bank(self.config, self)

    @property
    def bank_rows(self) -> int:
        return len(self.scorer.bank_z_)

    @property
    def banks_spare(self) -> bool:
        return self.config.score.pixel_bank == "all"

    def save_settings(self, run_dir: Path) -> None:
        """``config.json``, the run configuration (what resuming and ``contrasyn quality``
        read back)."""
        save_config(self.config, run_dir / "config.json")

    def _with_seed(self) -> RunConfig:
        train = dataclasses.replace(self.config.train, seed=self.seed, device=str(self.device))
        return dataclasses.replace(self.config, train=train)

    def fit(
        self,
        images: Tensor,
        run_dir: Path | None = None,
        progress: bool = False,
        verbose: bool = False,
        clock: Clock | None = None,
        spare: Tensor | None = None,
    ) -> CSIFamily:
        """Train F (and the generative side) on ``images`` and bank them; ``spare`` images
        join only the pixel bank (``score.pixel_bank`` "all")."""
        cfg = self._with_seed()
        cfg = dataclasses.replace(cfg, train=self._without_symmetries(cfg.train, images))
        model, side, train_cfg = train_networks(
            images, cfg.train, run_dir, progress, verbose, clock, cfg.score.ensemble
        )
        self.config = dataclasses.replace(cfg, train=train_cfg)  # G's channels resolved
        self.model, self.side = model, side
        extra = spare if self.banks_spare else None
        self.scorer = Scorer(self.config.train, self.config.score).fit(model, images, extra)
        return self

    def _without_symmetries(self, train: TrainConfig, images: Tensor) -> TrainConfig:
        """``train`` with ``num_shifts`` less the rotations that leave these training images
        unchanged (``symmetry``), said in one warning; the saved configuration holds it, so
        the model loads, scores and exports with those shifts."""
        if train.shift_symmetry is None or train.num_shifts == 1 or len(images) < 2:
            return train
        ratios = rotation_ratios(images, train.seed)
        k = fitted_shifts(ratios, train.num_shifts, train.shift_symmetry)
        if k == train.num_shifts:
            return train
        warnings.warn(describe(ratios, train.num_shifts, k, train.shift_symmetry), stacklevel=4)
        return dataclasses.replace(train, num_shifts=k)

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
        model = build_model(cfg.train, pretrained=False).to(self.device)
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


def check_bank(cfg: Any, method: Method) -> None:
    """The CSI family's bank: (N, K, d) projections and (N, K, e) features of the same N
    training images, K = num_shifts, and the K score weights."""
    t = cfg.train
    scorer, k = method.scorer, t.num_shifts
    z, h = scorer.bank_z_, scorer.bank_h_
    d = method.model.backbone.out_dim
    expected = {
        "scorer.bank_z": (z, (None, k, t.proj_dim)),
        "scorer.bank_h": (h, (None, k, d)),
        "scorer.weight_sim": (scorer.weight_sim_, (k,)),
        "scorer.weight_shift": (scorer.weight_shift_, (k,)),
    }
    for key, (tensor, shape) in expected.items():
        if (
            not torch.is_floating_point(tensor)
            or tensor.ndim != len(shape)
            or any(
                want is not None and got != want
                for got, want in zip(tensor.shape, shape, strict=True)
            )
        ):
            words = ", ".join("N" if s is None else str(s) for s in shape)
            raise ConfigError(
                f"tensor {key} is {tuple(tensor.shape)} {tensor.dtype}; method {method.name} "
                f"with this config needs floats ({words})"
            )
    if len(z) != len(h) or len(z) < 1:
        raise ConfigError(
            f"the bank holds {len(z)} projections and {len(h)} feature rows; "
            "they must be the same images, at least one"
        )
