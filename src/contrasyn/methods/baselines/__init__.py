"""Classic one-class baselines, each written here and registered as a method beside the CSI
family (``contrasyn.methods.registry``), so ``Detector(method="rot")``, ``contrasyn fit
--method rot`` and the benchmark run the same code.

Every baseline is a ``Baseline``: a typed settings dataclass (``config``), ``fit(images)`` and
``anomaly_score(images)`` (higher = more anomalous) on (N, C, H, W) float images in [0, 1],
and its fitted state as tensors. Per-preset settings are below (``BASELINE_PRESETS``); the
benchmark records them with each result.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from contrasyn.budget import with_budget
from contrasyn.config import from_dict, merge
from contrasyn.errors import ConfigError
from contrasyn.methods.presets import get_preset
from contrasyn.methods.registry import INPUT_FIELDS, Method, Resolved, split_settings
from contrasyn.names import BASELINES

__all__ = ["BASELINES", "BASELINE_PRESETS", "Baseline", "input_shape"]

# Per preset and baseline: constructor arguments, and ``max_train`` (the training subsample;
# None = all of the class's training images). ``cpu`` fits one Fashion-MNIST class in a few
# minutes on 2 CPU cores, as the CSI ``cpu`` preset does; ``paper`` follows the papers.
BASELINE_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "knn": {"max_train": None},
        "ocsvm": {"max_train": None, "nu": 0.1},
        "deepsvdd": {"max_train": None, "epochs": 150, "pretrain_epochs": 250},
        "rot": {"max_train": None, "width": 64, "epochs": 100, "mode": "rot+trans"},
        "goad": {"max_train": None, "width": 64, "epochs": 15, "transforms": "geom"},
    },
    "cpu": {
        "knn": {"max_train": None},
        "ocsvm": {"max_train": 2000, "nu": 0.1},
        "deepsvdd": {"max_train": 2000, "epochs": 30, "pretrain_epochs": 10},
        "rot": {"max_train": 1000, "width": 16, "epochs": 12, "mode": "rot+trans"},
        "goad": {"max_train": 1000, "width": 16, "epochs": 2, "transforms": "rot+trans"},
    },
    "demo": {
        "knn": {"max_train": None},
        "ocsvm": {"max_train": 1000, "nu": 0.1},
        "deepsvdd": {"max_train": 2000, "epochs": 10, "pretrain_epochs": 3},
        "rot": {"max_train": 400, "width": 8, "epochs": 3, "mode": "rot+trans"},
        "goad": {"max_train": 300, "width": 8, "epochs": 1, "transforms": "rot+trans"},
    },
    "tiny": {
        "knn": {"max_train": None},
        "ocsvm": {"max_train": 200, "nu": 0.1},
        "deepsvdd": {"max_train": 200, "epochs": 3, "pretrain_epochs": 1, "rep_dim": 32},
        "rot": {"max_train": 100, "width": 4, "epochs": 2, "batch_size": 16},
        "goad": {
            "max_train": 50,
            "width": 4,
            "epochs": 1,
            "batch_size": 4,
            "transforms": "rot+trans",
        },
    },
}


class Baseline(Method):
    """A classic baseline: one score named after the method (minus ``anomaly_score``), its
    settings from ``preset_table`` (``BASELINE_PRESETS`` unless the method has its own),
    per-epoch losses in ``train_loss_`` (and ``pretrain_loss_``)."""

    # preset -> method name -> constructor arguments
    preset_table: dict[str, dict[str, dict[str, Any]]] = BASELINE_PRESETS

    @classmethod
    def preset_config(cls, name: str, preset: str, overrides: dict[str, Any]) -> Any:
        table = cls.preset_table
        if preset not in table:
            raise ConfigError(
                f"preset {preset!r} has no {name} settings; known: {', '.join(table)}"
            )
        config = from_dict(cls.config_class, table[preset][name])
        try:
            return merge(config, overrides)
        except ConfigError as e:
            raise ConfigError(f"method {name!r}: {e}") from e

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
        """A baseline's settings at ``preset`` with its own section; one score, its name;
        the input size given, or the preset's (the CSI family's train section holds it)."""
        if score not in (None, name):
            raise ConfigError(f"method {name!r} has one score, {name!r}; got {score!r}")
        sections, size = split_settings(name, settings, input)
        own = {k: v for k, v in sections[name].items() if k not in INPUT_FIELDS}
        train = get_preset(preset).train
        spec = {k: size[k] if size[k] is not None else getattr(train, k) for k in INPUT_FIELDS}
        return Resolved(cls.preset_config(name, preset, own), spec)

    # Whether fitting is only storing or solving on the images (kNN, OC-SVM: seconds), so any
    # time budget is met without choosing a length.
    instant: bool = False
    # A baseline that fits by the clock has the fields ``steps`` and ``time_budget``; they are
    # left out of its configuration hash while None (rows from before them keep theirs).
    budget_fields: tuple[str, ...] = ()
    # Settings added after results were committed, left out of the configuration hash while at
    # these values (their behaviour before the setting existed), so earlier rows keep theirs.
    late_fields: dict[str, Any] = {}

    @classmethod
    def with_time_budget(
        cls, name: str, settings: Mapping[str, Mapping[str, Any]], seconds: float
    ) -> dict[str, dict[str, Any]]:
        out = {k: dict(v) for k, v in settings.items()}
        if cls.instant:
            return out
        if not cls.budget_fields:
            return super().with_time_budget(name, settings, seconds)
        out[name] = with_budget(name, out.get(name, {}), seconds)
        return out

    @classmethod
    def result_settings(cls, name: str, config: Any, input: Mapping[str, int]) -> dict:
        data = super().result_settings(name, config, input)
        settings = data["settings"]
        for field in cls.budget_fields:
            if settings[field] is None:
                del settings[field]
        for field, value in cls.late_fields.items():
            if settings[field] == value:
                del settings[field]
        return data

    @property
    def time_budget(self) -> float | None:
        return getattr(self.config, "time_budget", None)

    @property
    def length(self) -> str | None:
        steps = getattr(self.config, "steps", None)
        return f"{steps} steps" if steps is not None else super().length

    @property
    def steps_setting(self) -> str | None:
        return f"{self.name}.steps" if "steps" in self.budget_fields else None

    @property
    def length_setting(self) -> str | None:
        steps = getattr(self.config, "steps", None)
        return None if steps is None else f"{self.name}.steps={steps}"

    @abstractmethod
    def anomaly_score(self, images: Tensor) -> Tensor:
        """Higher = more anomalous, (N,) on the CPU."""

    def score_samples(self, images: Tensor) -> dict[str, Tensor]:
        return {self.name: -self.anomaly_score(images)}

    @property
    def losses(self) -> list[dict]:
        return [
            {"phase": phase, "epoch": i + 1, "loss": loss}
            for phase, attr in (("pretrain", "pretrain_loss_"), ("train", "train_loss_"))
            for i, loss in enumerate(getattr(self, attr, []))
        ]


def input_shape(images: Tensor) -> Tensor:
    """(C, H, W) of the training images, saved so a loaded baseline rebuilds its network."""
    return torch.tensor(images.shape[1:])
