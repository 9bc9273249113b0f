"""The practitioner's API: ``Detector``, a scikit-learn-style one-class image detector.

Train on normal images only, then score new ones. Signs follow scikit-learn:

| method              | returns                         | meaning                               |
|---------------------|---------------------------------|---------------------------------------|
| ``score_samples``   | M(x)                            | higher = more normal                  |
| ``anomaly_score``   | -M(x)                           | higher = more anomalous               |
| ``decision_function``| threshold_ - anomaly_score     | < 0 anomalous, >= 0 normal            |
| ``predict``         | +1 / -1                         | +1 normal, -1 anomalous               |

The threshold needs no labelled anomalies: ``holdout`` of the normal training images are
kept out of training and out of the bank; their anomaly scores set ``threshold_`` at the
chosen false-alarm rate (the fraction of normal images that will be flagged). It can be
changed after training (``set_threshold``) without retraining, and is saved with the model.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrasyn import __version__, distributed, quality
from contrasyn.adversarial import GenerativeSide
from contrasyn.checkpoint import DETECTOR_FORMAT, load_checkpoint, save_checkpoint
from contrasyn.config import TRAIN_METHODS, RunConfig, ScoreConfig, TrainConfig, from_dict, to_dict
from contrasyn.data import find_images, load_images, to_model_input
from contrasyn.data.base import ImageDataset
from contrasyn.errors import CheckpointError, ConfigError, DataError
from contrasyn.presets import get_preset
from contrasyn.protocol import OneClassTask
from contrasyn.score import Scorer, import_faiss
from contrasyn.trainer import build_model, resolve_device, train_networks

AVAILABLE_METHODS = TRAIN_METHODS
_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
_SCORE_FIELDS = {f.name for f in dataclasses.fields(ScoreConfig)}

Images = np.ndarray | Tensor | str | Path | list | tuple | ImageDataset | OneClassTask


def _route(overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat keyword overrides to nested config overrides: ``epochs=5`` -> train, ``ensemble=2``
    -> score; a name in both (``batch_size``) goes to train unless written ``score__name``."""
    nested: dict[str, dict[str, Any]] = {"train": {}, "score": {}}
    for key, value in overrides.items():
        section, sep, name = key.partition("__")
        if sep and section in nested:
            nested[section][name] = value
        elif key in _TRAIN_FIELDS:
            nested["train"][key] = value
        elif key in _SCORE_FIELDS:
            nested["score"][key] = value
        else:
            raise ConfigError(
                f"unknown setting {key!r}: not a field of TrainConfig or ScoreConfig "
                "(see src/contrasyn/config.py); prefix train__ or score__ to choose"
            )
    return nested


def _to_uint8(images: Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


class Detector:
    """One-class image anomaly detector.

    ``method``: ``full`` (the paper's method: CSI plus an adversarial autoencoder whose
    synthetic images join the contrastive training), ``csi+g`` (CSI plus a GAN) or ``csi``
    (CSI alone); default: the preset's (``full``). Parameters are stored as given
    (scikit-learn style); fitted state ends in ``_``.
    ``preset`` names a configuration (``cpu``, ``paper``, ``tiny``); any field of
    ``TrainConfig``/``ScoreConfig`` can be overridden by keyword (``epochs=5``). ``score``
    picks the outlier score (``feat``, ``paper``, ``csi``; default: the preset's).
    ``false_alarm_rate`` (default 0.05) or ``contamination`` (the same quantile, PyOD's
    name) sets the threshold from the held-out normal images. ``image_size``/``channels``
    default to the preset's; images of other sizes are brought to it by ``resize``;
    ``skip_bad`` skips unreadable image files with a warning instead of failing.
    ``checkpoint_dir`` makes training checkpointed and resumable; ``progress`` shows a
    progress bar on a terminal, ``verbose`` prints the losses every ``log_every`` steps.
    ``deterministic`` (default)
    scores each image by one pass of its K rotations, so a score depends only on the image
    (not on the batch it came in) and equals the ONNX export's; ``False`` uses the preset's
    ensemble of R random test-time draws of T (CSI's protocol, as the benchmarks do). On
    Fashion-MNIST class 0 (cpu preset, validation split) the deterministic ``feat`` score
    was 0.940 AUROC against 0.935 for R = 2 draws.
    """

    def __init__(
        self,
        method: str | None = None,
        preset: str = "cpu",
        score: str | None = None,
        false_alarm_rate: float = 0.05,
        contamination: float | None = None,
        holdout: float = 0.1,
        deterministic: bool = True,
        resize: str = "resize",
        skip_bad: bool = False,
        device: str = "auto",
        seed: int = 0,
        checkpoint_dir: str | Path | None = None,
        progress: bool = True,
        verbose: bool = False,
        **overrides: Any,
    ) -> None:
        self.method = method
        self.preset = preset
        self.score = score
        self.false_alarm_rate = false_alarm_rate
        self.contamination = contamination
        self.holdout = holdout
        self.deterministic = deterministic
        self.resize = resize
        self.skip_bad = skip_bad
        self.device = device
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.progress = progress
        self.verbose = verbose
        self.overrides = overrides

    # -- configuration -------------------------------------------------------------------

    def resolved_config(self) -> RunConfig:
        """The configuration ``fit`` will use (preset + overrides + this detector's settings);
        raises ``ConfigError`` for an unknown method, setting or threshold rate."""
        self._rate()
        if self.method is not None and self.method not in AVAILABLE_METHODS:
            raise ConfigError(
                f"method {self.method!r} is not available; "
                f"available: {', '.join(AVAILABLE_METHODS)}"
            )
        nested = _route(self.overrides)
        nested["train"].update(device=self.device, seed=self.seed)
        if self.method is not None:
            nested["train"]["method"] = self.method
        nested["score"].setdefault("seed", self.seed)
        if self.score is not None:
            nested["score"]["score"] = self.score
        if self.deterministic:
            given = sorted({"augment", "ensemble"} & set(nested["score"]))
            if given:
                raise ConfigError(
                    f"{', '.join(given)} set with deterministic=True (one pass, no random "
                    "draws); pass deterministic=False to use test-time draws"
                )
            nested["score"].update(augment=False, ensemble=1)
        return get_preset(self.preset, nested)

    @property
    def flag_rate(self) -> float:
        """The fraction of normal images the threshold flags: ``contamination`` when set
        (PyOD's name), else ``false_alarm_rate``."""
        return self.contamination if self.contamination is not None else self.false_alarm_rate

    def _rate(self) -> float:
        rate = self.flag_rate
        if not 0 < rate < 1:
            raise ConfigError(f"false_alarm_rate/contamination must be in (0, 1), got {rate}")
        return float(rate)

    # -- input ---------------------------------------------------------------------------

    def _images(self, X: Images, cfg: TrainConfig) -> tuple[Tensor, list[Path] | None]:
        """Model input (N, C, S, S) in [0, 1] from any accepted kind of input, plus the
        file paths when the input was files (so results can name them)."""
        paths = None
        if isinstance(X, OneClassTask | ImageDataset):
            X = X.train_images
        if isinstance(X, str | Path):
            X = find_images(X) if Path(X).is_dir() else [Path(X)]
        if isinstance(X, list | tuple):
            arrays, paths = load_images(
                X, cfg.image_size, cfg.channels, self.resize, skip_bad=self.skip_bad
            )
            X = arrays
        if isinstance(X, np.ndarray):
            if X.ndim == 3:
                X = X[..., None]
            if X.dtype != np.uint8:
                raise DataError(
                    f"numpy images must be uint8 (N, H, W[, C]) as stored, got {X.dtype}; "
                    "pass floats in [0, 1] as a torch tensor (N, C, H, W)"
                )
            policy = "pad" if self.resize == "pad" else "resize"
            return to_model_input(X, cfg.image_size, cfg.channels, policy), paths
        if isinstance(X, Tensor):
            expected = (cfg.channels, cfg.image_size, cfg.image_size)
            if X.ndim != 4 or tuple(X.shape[1:]) != expected:
                raise DataError(
                    f"tensor images must be (N, {', '.join(map(str, expected))}), "
                    f"got {tuple(X.shape)}"
                )
            if not torch.is_floating_point(X) or X.min() < 0 or X.max() > 1:
                raise DataError("tensor images must be floats in [0, 1]")
            return X.float().cpu(), paths
        raise DataError(
            f"cannot read images from a {type(X).__name__}: pass a folder, image paths, a uint8 "
            "array (N, H, W, C), a float tensor (N, C, H, W) in [0, 1], or an ImageDataset"
        )

    # -- fitting -------------------------------------------------------------------------

    def fit(self, X: Images, y: None = None) -> Detector:
        """Train on normal images ``X``; ``y`` is ignored (one-class: all of X is normal)."""
        cfg = self.resolved_config()
        rate = self._rate()
        if cfg.score.index == "faiss":
            import_faiss()  # missing: say so now, not after training
        images, _ = self._images(X, cfg.train)
        n = len(images)
        n_hold = int(round(self.holdout * n))
        if not 0 < self.holdout < 1 or n_hold < 1 or n - n_hold < 2:
            raise DataError(
                f"{n} training image(s) with holdout={self.holdout}: need at least 2 to train "
                "and 1 held out for the threshold"
            )
        if n_hold < 20:
            warnings.warn(f"the threshold rests on only {n_hold} held-out images", stacklevel=2)
        order = np.random.default_rng(self.seed).permutation(n)
        hold, rest = order[:n_hold], np.sort(order[n_hold:])
        if cfg.train.max_train is not None and len(rest) > cfg.train.max_train:
            rest = np.sort(
                np.random.default_rng(self.seed).choice(rest, cfg.train.max_train, replace=False)
            )
        train_x = images[torch.as_tensor(rest)]
        model, side = train_networks(
            train_x, cfg.train, self.checkpoint_dir, self.progress, self.verbose
        )
        if not distributed.is_main():
            return self  # under torchrun, ranks > 0 only train; rank 0 builds the bank
        scorer = Scorer(cfg.train, cfg.score).fit(model, train_x)
        self.config_ = cfg
        self.model_ = model
        self.generator_ = side
        self.scorer_ = scorer
        self.n_train_ = len(train_x)
        self.holdout_scores_ = scorer.score_samples(model, images[torch.as_tensor(hold)])[
            cfg.score.score
        ].numpy()
        self.set_threshold(rate)
        return self

    def set_threshold(
        self, false_alarm_rate: float | None = None, contamination: float | None = None
    ) -> Detector:
        """Move the threshold without retraining: flag this fraction of normal images."""
        self._check_fitted()
        if false_alarm_rate is not None or contamination is not None:
            self.false_alarm_rate = (
                false_alarm_rate if false_alarm_rate is not None else (self.false_alarm_rate)
            )
            self.contamination = contamination
        rate = self._rate()
        anomaly = -self.holdout_scores_
        self.threshold_ = float(np.quantile(anomaly, 1 - rate, method="inverted_cdf"))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "scorer_") and distributed.launched() and not distributed.is_main():
            raise ConfigError(
                f"rank {distributed.rank()} only trained: under torchrun the fitted detector "
                "(bank, threshold) is rank 0's"
            )
        if not hasattr(self, "scorer_"):
            raise ConfigError("this Detector is not fitted: call fit() or Detector.load() first")

    # -- scoring -------------------------------------------------------------------------

    def score_samples(self, X: Images) -> np.ndarray:
        """Normality M(x) of each image: higher = more normal (scikit-learn's sign)."""
        self._check_fitted()
        images, _ = self._images(X, self.config_.train)
        scores = self.scorer_.score_samples(self.model_, images)
        return scores[self.config_.score.score].numpy()

    def anomaly_score(self, X: Images) -> np.ndarray:
        """-M(x): higher = more anomalous."""
        return -self.score_samples(X)

    def decision_function(self, X: Images) -> np.ndarray:
        """``threshold_ - anomaly_score``: negative for anomalies, >= 0 for normal images."""
        anomaly = self.anomaly_score(X)
        return self.threshold_ - anomaly

    def predict(self, X: Images) -> np.ndarray:
        """+1 for normal, -1 for anomalous (scikit-learn's outlier convention)."""
        return np.where(self.decision_function(X) >= 0, 1, -1)

    # -- the generator (csi+g, full) -------------------------------------------------------

    def _generator(self) -> GenerativeSide:
        self._check_fitted()
        if self.generator_ is None:
            raise ConfigError(
                f"method {self.config_.train.method!r} has no generator (use csi+g or full)"
            )
        return self.generator_

    def sample(self, n: int = 64, seed: int = 0) -> np.ndarray:
        """``n`` synthetic images G(h), h ~ N(0, I), as uint8 (n, H, W, C) like the input."""
        return _to_uint8(quality.sample(self._generator().G, n, seed))

    def reconstruct(self, X: Images) -> np.ndarray:
        """G(E(x)) of each image (``full`` only), as uint8 (n, H, W, C): normal images come
        back close, anomalies are pulled towards the normal class (the paper's Figure 2)."""
        side = self._generator()
        if side.E is None:
            raise ConfigError("reconstruction needs the encoder E: method 'full'")
        images, _ = self._images(X, self.config_.train)
        return _to_uint8(quality.reconstructions(side.G, side.E, images))

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write ``path/model.safetensors`` (weights, bank, held-out scores) and
        ``path/model.json`` (config, threshold, versions), each atomically."""
        self._check_fitted()
        path = Path(path)
        tensors = {f"model.{k}": v for k, v in self.model_.state_dict().items()}
        tensors.update({f"scorer.{k}": v for k, v in self.scorer_.state_tensors().items()})
        tensors["holdout_scores"] = torch.as_tensor(self.holdout_scores_)
        if self.generator_ is not None:
            tensors.update(self.generator_.weight_tensors())
        meta = {
            "format": DETECTOR_FORMAT,
            "method": self.config_.train.method,
            "preset": self.preset,
            "config": to_dict(self.config_),
            "threshold": self.threshold_,
            "false_alarm_rate": self.false_alarm_rate,
            "contamination": self.contamination,
            "resize": self.resize,
            "n_train": self.n_train_,
            "n_holdout": len(self.holdout_scores_),
        }
        save_checkpoint(path / "model", tensors, meta)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Detector:
        """A fitted Detector from a folder written by ``save``; loads on any device."""
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: no such model folder")
        dev = resolve_device(device)
        tensors, meta = load_checkpoint(path / "model", dev)
        if meta.get("format") != DETECTOR_FORMAT:
            raise CheckpointError(
                f"{path}: not a contrasyn detector (format {meta.get('format')!r})"
            )
        try:
            cfg = from_dict(RunConfig, meta["config"])
            det = cls(
                method=meta["method"],
                preset=meta["preset"],
                score=cfg.score.score,
                false_alarm_rate=meta["false_alarm_rate"],
                contamination=meta["contamination"],
                deterministic=not cfg.score.augment,
                resize=meta["resize"],
                device=device,
                seed=cfg.train.seed,
            )
            model = build_model(cfg.train).to(dev)
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            if cfg.train.channels_last:
                model = model.to(memory_format=torch.channels_last)
            scorer = Scorer(cfg.train, cfg.score).load_state(
                {k[7:]: v for k, v in tensors.items() if k.startswith("scorer.")}
            )
            holdout = tensors["holdout_scores"].cpu().numpy()
            side = None
            if cfg.train.method != "csi":
                side = GenerativeSide(cfg.train).to(dev)
                side.load_weight_tensors(tensors)
                side.eval()
        except (KeyError, RuntimeError, TypeError, ConfigError) as e:
            raise CheckpointError(f"{path}: model files are inconsistent ({e})") from e
        det.config_ = cfg
        det.model_ = model.eval()
        det.generator_ = side
        det.scorer_ = scorer
        det.n_train_ = meta["n_train"]
        det.holdout_scores_ = holdout
        det.threshold_ = float(meta["threshold"])
        return det

    def __repr__(self) -> str:
        fitted = f", threshold_={self.threshold_:.4g}" if hasattr(self, "threshold_") else ""
        return (
            f"Detector(method={self.method!r}, preset={self.preset!r}, "
            f"score={self.score!r}{fitted}, contrasyn {__version__})"
        )
