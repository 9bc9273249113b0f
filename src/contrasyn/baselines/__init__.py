"""Classic one-class baselines, each written here and run in the same harness as CSI.

Every baseline is a plain object with ``fit(images)`` and ``anomaly_score(images)`` (higher =
more anomalous) on (N, C, H, W) float images in [0, 1]. ``build_baseline`` makes one from a
preset's settings (``BASELINE_PRESETS``), which the benchmark records with each result.
"""

from __future__ import annotations

import copy
from typing import Any

from contrasyn.errors import ConfigError

BASELINES = ("knn", "ocsvm", "deepsvdd", "rot", "goad")

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


def baseline_settings(name: str, preset: str) -> dict[str, Any]:
    """The settings ``build_baseline`` uses (a copy), ``max_train`` included."""
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    if preset not in BASELINE_PRESETS:
        raise ConfigError(
            f"preset {preset!r} has no baseline settings; known: {', '.join(BASELINE_PRESETS)}"
        )
    return copy.deepcopy(BASELINE_PRESETS[preset][name])


def build_baseline(name: str, settings: dict[str, Any], seed: int = 0, device: str = "cpu"):
    """A baseline detector from ``settings`` (without ``max_train``, which the caller applies)."""
    kwargs = {k: v for k, v in settings.items() if k != "max_train"}
    if name == "knn":
        from contrasyn.baselines.knn import PixelKNN

        return PixelKNN(**kwargs)
    if name == "ocsvm":
        from contrasyn.baselines.ocsvm import PixelOCSVM

        return PixelOCSVM(seed=seed, max_train=None, **kwargs)
    if name == "deepsvdd":
        from contrasyn.baselines.deepsvdd import DeepSVDD

        return DeepSVDD(seed=seed, device=device, **kwargs)
    if name == "rot":
        from contrasyn.baselines.rot import RotationDetector

        return RotationDetector(seed=seed, device=device, **kwargs)
    if name == "goad":
        from contrasyn.baselines.goad import GOAD

        return GOAD(seed=seed, device=device, **kwargs)
    raise ConfigError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
