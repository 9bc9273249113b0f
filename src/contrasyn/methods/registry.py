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
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from contrasyn.budget import Clock
from contrasyn.config import to_dict
from contrasyn.errors import ConfigError
from contrasyn.names import _MODULES, METHOD_NAMES, names_in

_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: the method class answers to the names its module has in
    ``_MODULES``."""
    names = names_in(cls.__module__)
    if not names:
        raise ValueError(f"{cls.__module__} has no method names in registry._MODULES")
    cls.names = names
    for name in names:
        _REGISTRY[name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    """The class registered as ``name``; unknown names get one clear error listing them."""
    if name not in _MODULES:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(METHOD_NAMES)}")
    if name not in _REGISTRY:
        importlib.import_module(_MODULES[name])
    return _REGISTRY[name]


# The model input every method takes, (N, channels, image_size, image_size): a method's own
# section may set it, and so may INPUT_SECTION (the CSI family's train section, where the
# presets keep it) for every method.
INPUT_FIELDS = ("image_size", "channels")
INPUT_SECTION = "train"
# What a detector sets itself (``Detector(seed=...)``, ``--seed``), never a settings section.
OWN_SETTINGS = ("method", "device", "seed")


class Resolved(NamedTuple):
    """What ``fit`` uses: the method's settings and its model input size."""

    config: Any
    input: dict[str, int]


def sections_of_methods() -> dict[str, str]:
    """Every settings section any method reads, and the methods it belongs to."""
    out: dict[str, str] = {}
    for name in METHOD_NAMES:
        cls = method_class(name)
        for section in cls.sections(name):
            out.setdefault(section, ", ".join(cls.names))
    return out


def split_settings(
    name: str, settings: Mapping[str, Any], input: Mapping[str, int | None]
) -> tuple[dict[str, dict[str, Any]], dict[str, int | None]]:
    """Method ``name``'s own sections, and the input size from ``input`` and the settings.

    A section ``name`` does not read is refused in one line, saying whose it is; so is a
    detector's own setting (``seed``, ``device``, ``method``) in a section, and an input
    size given twice with two values. Input fields in ``INPUT_SECTION`` apply to every
    method."""
    cls = method_class(name)
    own = cls.sections(name)
    where = cls.sections_help(name)
    sections: dict[str, dict[str, Any]] = {s: {} for s in own}
    given: dict[str, tuple[int | None, str]] = {
        k: (v, k.replace("_", "-")) for k, v in input.items() if v is not None
    }
    for section, fields in settings.items():
        if not isinstance(fields, Mapping):
            raise ConfigError(f"settings section {section!r} must be a mapping of fields")
        for field, value in fields.items():
            where_set = f"{section}.{field}"
            if field in cls.reserved(section):
                raise ConfigError(
                    f"set {where_set} with the detector's {field} (--{field}), not --set/--config"
                )
            if field in INPUT_FIELDS and (section in own or section == INPUT_SECTION):
                if field in given and given[field][0] != value:
                    raise ConfigError(
                        f"{given[field][1]} {given[field][0]} contradicts {where_set}={value}"
                    )
                given[field] = (value, where_set)
                if section in own:
                    sections[section][field] = value
                continue
            if section in own:
                sections[section][field] = value
                continue
            owners = sections_of_methods()
            if section not in owners:
                raise ConfigError(f"unknown config section {section!r}: {where}")
            raise ConfigError(
                f"setting {where_set} does not apply to method {name!r}: config section "
                f"{section!r} is for method {owners[section]}; {where}"
            )
    return sections, {k: given[k][0] if k in given else None for k in INPUT_FIELDS}


def network_methods() -> tuple[str, ...]:
    """The methods that train F (``Method.trains_network``)."""
    return tuple(n for n in METHOD_NAMES if method_class(n).trains_network)


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
    # Whether the method trains the CSI family's network F: its training is checkpointed in
    # a run folder and resumable, runs on every rank under torchrun, and F gives gradient
    # maps, test-time draws and the ONNX export.
    trains_network: ClassVar[bool] = False

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
    def sections(cls, name: str) -> tuple[str, ...]:
        """The settings sections (``--set SECTION.FIELD=VALUE``) method ``name`` reads: a
        baseline its own name."""
        return (name,)

    @classmethod
    def reserved(cls, section: str) -> tuple[str, ...]:
        """The fields of ``section`` that the detector sets itself (``OWN_SETTINGS``)."""
        return OWN_SETTINGS

    @classmethod
    def sections_help(cls, name: str) -> str:
        """What method ``name`` reads, for messages."""
        return f"method {name}'s settings are {name}.FIELD (e.g. --set {name}.max_train=500)"

    @classmethod
    @abstractmethod
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
        """What ``fit`` uses: ``preset``'s settings with ``settings`` (sections as ``--set``
        writes them), the detector's ``seed``, ``device`` and ``score``, one deterministic
        pass or test-time draws, and ``input`` (``image_size``/``channels``; None: the
        preset's). Raises ``ConfigError`` naming what is wrong."""

    @classmethod
    def preflight(cls, config: Any) -> None:
        """Fail now, before any work, on what ``config`` needs and this machine lacks
        (nothing, unless overridden)."""
        return None

    @classmethod
    def result_settings(cls, name: str, config: Any, input: Mapping[str, int]) -> dict:
        """What a benchmark cell's result depends on besides its key (its configuration
        hash): by default the settings and the input size."""
        return {"settings": to_dict(config), "inputs": dict(input)}

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
    def deterministic(self) -> bool:
        """Whether a score depends only on the image (no random test-time draws)."""
        return True

    @property
    def config_input(self) -> dict[str, int] | None:
        """The model input the settings fix (None: the settings do not hold it)."""
        return None

    @property
    def config_seed(self) -> int:
        """The seed the settings record (a saved model without its own ``seed``)."""
        return 0

    @property
    def probe_safe(self) -> bool:
        """Whether scoring one blank image is cheap and deterministic, so that a load can
        check the state runs (True unless overridden)."""
        return True

    def check_loaded(self) -> None:
        """After ``load_state``: refuse a state that does not fit the settings (a
        ``ConfigError`` naming what); nothing to check unless overridden."""
        return None

    @property
    def max_train(self) -> int | None:
        """The training subsample a detector draws from the images it is given (None: all)."""
        return getattr(self.config, "max_train", None)

    @property
    def length(self) -> str | None:
        """How long training runs, in the method's own terms ("12 epochs"; None: no
        training loop)."""
        epochs = getattr(self.config, "epochs", None)
        return None if epochs is None else f"{epochs} epochs"

    @property
    def steps_setting(self) -> str | None:
        """The setting that gives training's length in optimiser steps (``train.steps``),
        None where the method has none."""
        return None

    @property
    def counts_epochs(self) -> bool:
        """Whether training's length is a number of passes over the training images, so that
        it shrinks with them (12 epochs of 50 images are 24 steps), rather than steps or a
        time budget; False for a method without a training loop."""
        cfg = self.config
        return (
            getattr(cfg, "epochs", None) is not None
            and getattr(cfg, "steps", None) is None
            and self.time_budget is None
        )

    def steps_for(self, n_train: int) -> int | None:
        """The optimiser steps training on ``n_train`` images takes, for progress lines
        (None: not counted in steps)."""
        return None

    @property
    def banks_spare(self) -> bool:
        """Whether ``fit`` takes ``spare``: the images a detector was given but drew out of
        the training subsample (``max_train``) and did not hold out, for a method that banks
        them where that costs little (the CSI family's pixel bank with ``score.pixel_bank``
        "all"). False unless overridden."""
        return False

    @property
    def bank_rows(self) -> int | None:
        """How many training images the fitted state holds one row each of (a bank of their
        features or pixels), which a loaded model's ``n_train`` must equal; None: no bank."""
        return None

    def leave_one_out(self, n: int) -> bool:
        """Whether, fitted on ``n`` images, each of them can be scored against the model
        without itself (``leave_one_out_scores``): true for a method whose fit only stores
        its images (a kNN bank), so that every image trains and every one calibrates the
        threshold. False here: a model that learnt from an image scores it as more normal
        than a new one, so the threshold needs images held out of training."""
        return False

    def leave_one_out_scores(self) -> dict[str, Tensor]:
        """``score_samples`` of each training image against the fitted model without that
        image, in training order (only where ``leave_one_out``)."""
        raise NotImplementedError(f"method {self.name!r} has no leave-one-out scores")

    def settings(self) -> dict[str, Any]:
        """The configuration as a plain dict (saved with models and benchmark runs)."""
        return to_dict(self.config)

    def save_settings(self, run_dir: Path) -> None:
        """A benchmark run folder's record of the settings: ``settings.json``."""
        from contrasyn.checkpoint import atomic_write

        text = json.dumps(self.settings(), indent=2) + "\n"
        atomic_write(run_dir / "settings.json", lambda tmp: Path(tmp).write_text(text))

    @classmethod
    def with_time_budget(
        cls, name: str, settings: Mapping[str, Mapping[str, Any]], seconds: float
    ) -> dict[str, dict[str, Any]]:
        """``settings`` with a time budget of ``seconds`` for the whole fit (``Detector(
        time_budget=...)``, ``--time``); a method without one refuses it."""
        raise ConfigError(
            f"method {name!r} cannot fit by the clock; set its length instead "
            f"({cls.sections_help(name)})"
        )

    @property
    def time_budget(self) -> float | None:
        """Seconds the whole fit may take (its settings' budget), or None: no budget."""
        return None

    @property
    def length_setting(self) -> str | None:
        """The setting that repeats a fitted method's length exactly (``train.steps=N``),
        for the line a fit by the clock ends with; None: nothing to repeat."""
        return None

    @abstractmethod
    def fit(
        self,
        images: Tensor,
        run_dir: Path | None = None,
        progress: bool = False,
        verbose: bool = False,
        clock: Clock | None = None,
    ) -> Method:
        """Train on normal images; ``run_dir`` makes training checkpointed where supported.
        ``clock`` is the fit's time budget (None when ``time_budget`` is), started by the
        detector before the images were read: a budgeted method chooses its length from
        what is left of it. A method whose ``banks_spare`` is true also takes ``spare=``,
        more normal images to bank but not to train on."""

    @abstractmethod
    def score_samples(self, images: Tensor) -> dict[str, Tensor]:
        """Normality (higher = more normal) of each image under every score, on the CPU."""

    @abstractmethod
    def state_tensors(self) -> dict[str, Tensor]:
        """The fitted state as named tensors (``load_state`` restores it)."""

    @abstractmethod
    def load_state(self, tensors: dict[str, Tensor]) -> Method:
        """Restore what ``state_tensors`` gave, on ``self.device``."""
