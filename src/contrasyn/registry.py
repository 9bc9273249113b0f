"""Every method behind one contract, found by name (as timm registers its models).

A ``Method`` is a one-class detector on model input, float images (N, C, H, W) in [0, 1]:
``fit`` on normal images, then ``score_samples`` gives normality scores (higher = more
normal) under every score the method computes, from the same forward passes. Its settings
are one typed dataclass (``config``) with a value per preset; its fitted state is a flat dict
of tensors (``state_tensors`` / ``load_state``), so any method saves to safetensors.

``Detector`` (the practitioner's API), ``contrasyn fit --method`` and the benchmark harness
all build methods here, so ``Detector(method="rot")``, ``contrasyn fit --method rot`` and a
``rot`` benchmark cell are the same object doing the same work.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from contrasyn.config import to_dict
from contrasyn.errors import ConfigError

# name -> the module that registers it; imported on first use, so naming a method costs nothing
_MODULES = {
    "knn": "contrasyn.baselines.knn",
    "ocsvm": "contrasyn.baselines.ocsvm",
    "deepsvdd": "contrasyn.baselines.deepsvdd",
    "rot": "contrasyn.baselines.rot",
    "goad": "contrasyn.baselines.goad",
    "csi": "contrasyn.csi_family",
    "csi+g": "contrasyn.csi_family",
    "full": "contrasyn.csi_family",
}
METHOD_NAMES = tuple(_MODULES)
BASELINES = ("knn", "ocsvm", "deepsvdd", "rot", "goad")
_REGISTRY: dict[str, type[Method]] = {}


def register(*names: str):
    """Class decorator: the method class answers to ``names``."""

    def add(cls: type[Method]) -> type[Method]:
        cls.names = names
        for name in names:
            if name not in _MODULES:
                raise ValueError(f"{name!r} is not in registry._MODULES")
            _REGISTRY[name] = cls
        return cls

    return add


def method_class(name: str) -> type[Method]:
    """The class registered as ``name``; unknown names get one clear error listing them."""
    if name not in _MODULES:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(METHOD_NAMES)}")
    if name not in _REGISTRY:
        importlib.import_module(_MODULES[name])
    return _REGISTRY[name]


def method_config(name: str, preset: str, overrides: dict[str, Any] | None = None) -> Any:
    """The settings of method ``name`` at ``preset``, with ``overrides`` applied (a nested
    dict for the CSI family's ``{"train": .., "score": ..}``; flat for a baseline)."""
    return method_class(name).preset_config(name, preset, overrides or {})


def build_method(
    name: str, config: Any, seed: int = 0, device: str | torch.device = "cpu"
) -> Method:
    """An unfitted method ``name`` with ``config`` (from ``method_config``)."""
    return method_class(name)(config, seed, device, name)


class Method(ABC):
    """The contract every method meets (see the module docstring).

    Subclasses set ``config_class`` (the settings dataclass) and ``preset_config`` (its value
    at a preset); ``score_names`` lists the scores ``score_samples`` returns,
    ``default_score`` the one a detector reports. ``losses`` are per-epoch records for
    ``metrics.jsonl`` (the CSI family writes its own, per step). ``name`` defaults to the
    class's first registered name.
    """

    config_class: ClassVar[type]
    names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        config: Any = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        name: str | None = None,
    ) -> None:
        self.name = name or self.names[0]
        self.config = config if config is not None else self.config_class()
        self.seed, self.device = seed, torch.device(device)

    @classmethod
    @abstractmethod
    def preset_config(cls, name: str, preset: str, overrides: dict[str, Any]) -> Any:
        """The settings of method ``name`` at ``preset`` with ``overrides`` applied."""

    @classmethod
    def generative(cls, name: str) -> bool:
        """Whether method ``name`` trains a generator (its sample grids and quality, the
        report's per-class comparisons of the paper's contribution). False unless
        overridden."""
        return False

    @property
    def losses(self) -> list[dict]:
        return []

    @property
    def score_names(self) -> tuple[str, ...]:
        return (self.name,)

    @property
    def default_score(self) -> str:
        return self.score_names[0]

    @property
    def precision(self) -> str:
        """What the method computes in on its device (``bf16`` or ``fp32``): benchmark rows
        record it, and rows of two precisions are different cells. fp32 unless overridden."""
        return "fp32"

    @property
    def max_train(self) -> int | None:
        """The training subsample a detector draws from the images it is given (None: all)."""
        return getattr(self.config, "max_train", None)

    @property
    def bank_rows(self) -> int | None:
        """How many training images the fitted state holds one row each of (a bank of their
        features or pixels), which a loaded model's ``n_train`` must equal; None: no bank."""
        return None

    def settings(self) -> dict[str, Any]:
        """The configuration as a plain dict (saved with models and benchmark runs)."""
        return to_dict(self.config)

    @abstractmethod
    def fit(
        self,
        images: Tensor,
        run_dir: Path | None = None,
        progress: bool = False,
        verbose: bool = False,
    ) -> Method:
        """Train on normal images; ``run_dir`` makes training checkpointed where supported."""

    @abstractmethod
    def score_samples(self, images: Tensor) -> dict[str, Tensor]:
        """Normality (higher = more normal) of each image under every score, on the CPU."""

    @abstractmethod
    def state_tensors(self) -> dict[str, Tensor]:
        """The fitted state as named tensors (``load_state`` restores it)."""

    @abstractmethod
    def load_state(self, tensors: dict[str, Tensor]) -> Method:
        """Restore what ``state_tensors`` gave, on ``self.device``."""
