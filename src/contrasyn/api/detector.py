"""The practitioner's API: ``Detector``, a scikit-learn-style one-class image detector.

Train on normal images only, then score new ones. Signs follow scikit-learn:

| method              | returns                         | meaning                               |
|---------------------|---------------------------------|---------------------------------------|
| ``score_samples``   | M(x)                            | higher = more normal                  |
| ``anomaly_score``   | -M(x)                           | higher = more anomalous               |
| ``decision_function``| threshold_ - anomaly_score     | < 0 anomalous, >= 0 normal            |
| ``predict``         | +1 / -1                         | +1 normal, -1 anomalous               |

Readable scores: ``anomaly_probability(X)`` is the fraction of the held-out normal images
(never trained on) whose anomaly score is lower than the image's, in [0, 1], comparable across
models; an image is flagged exactly when it is >= ``threshold_probability_``.

Against scikit-learn's and PyOD's conventions (one table, the README has it too):

| contrasyn | sign / values | scikit-learn | PyOD |
|---|---|---|---|
| ``score_samples(X)`` | higher = more normal | the same | (none) |
| ``anomaly_score(X)`` | higher = more anomalous | ``-score_samples`` | ``decision_function(X)`` |
| ``decision_function(X)`` | < 0 anomalous, >= 0 normal | the same | (the raw anomaly score) |
| ``predict(X)`` | +1 normal, -1 anomalous | the same | 0 / 1: ``predict(X) == -1`` |
| ``anomaly_probability(X)`` | [0, 1], higher = more anomalous | (none) | ``predict_proba[:, 1]`` |
| ``predict_proba(X)`` | (N, 2): [normal, anomalous] | (none) | the same layout |
| ``threshold_`` | on ``anomaly_score`` | ``offset_`` = ``-threshold_`` | the same scale |
| ``decision_scores_`` | held-out normal images' scores | (none) | training images' scores |
| ``labels_`` | 0 normal, 1 anomalous | (none) | the same |

The threshold needs no labelled anomalies: ``holdout`` of the normal training images are
kept out of training and out of the bank; their anomaly scores set ``threshold_`` at the
chosen false-alarm rate (the fraction of normal images that will be flagged). It can be
changed after training (``set_threshold``) without retraining, and is saved with the model.

The threshold is the split-conformal order statistic of the held-out scores, with the
interval its realised false-alarm rate lies in (``contrasyn.api.calibration``).

Non-finite scores (NaN, +-inf: a broken input or model) are flagged anomalous everywhere:
``predict`` gives -1, the CLI writes ``anomaly``, and a warning counts them.

Numpy inputs follow documented shape rules and ambiguous shapes are refused
(``contrasyn.api.inputs``); everything loaded from a model folder is validated
(``contrasyn.api.validate``).

Every method of ``contrasyn.methods.registry`` (the CSI family and the baselines) runs behind this
one estimator; the benchmark harness builds its cells with it too.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrasyn import __version__, distributed
from contrasyn.api.calibration import Calibration, calibrate, conformal_threshold, fraction_below
from contrasyn.api.inputs import channels_last
from contrasyn.api.validate import RESIZE_NAMES, one_line, probe_shapes
from contrasyn.checkpoint import DETECTOR_FORMAT, inside, load_checkpoint, save_checkpoint
from contrasyn.config import (
    MAX_IMAGE_SIZE,
    SEED_LIMIT,
    check_holdout,
    check_rate,
    check_seed,
    from_dict,
    is_int,
    is_real,
    to_dict,
)
from contrasyn.data import find_images, load_images, to_model_input
from contrasyn.data.base import ImageDataset
from contrasyn.data.protocol import OneClassTask
from contrasyn.device import resolve_device
from contrasyn.errors import CheckpointError, ConfigError, DataError
from contrasyn.evaluation import quality
from contrasyn.methods.names import METHOD_NAMES
from contrasyn.methods.registry import Method, Resolved, build_method, method_class, network_methods
from contrasyn.presets import get_preset

AVAILABLE_METHODS = METHOD_NAMES
Images = np.ndarray | Tensor | str | Path | list | tuple | ImageDataset | OneClassTask
# The anomaly map of the evaluate report and ``contrasyn score --maps`` (chosen by the
# pointing game, benchmarks/pointing_game.py).
MAP_DEFAULTS = {"method": "occlusion", "patch": None, "stride": None, "fill": "blur"}


def holdout_count(n: int, holdout: float) -> int:
    """How many of ``n`` images are held out for the threshold: ``round(holdout * n)``, and
    at least one when ``holdout`` > 0 (a threshold needs one: 5 images at 10% hold out 1)."""
    n_hold = int(round(holdout * n))
    return max(n_hold, 1) if holdout > 0 else n_hold


def training_indices(
    n: int, holdout: float, max_train: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``n`` images a detector holds out for its threshold and which it trains on:
    ``holdout_count`` drawn with ``seed``, then at most ``max_train`` of the rest (same
    seed), both sorted. The benchmark (holdout 0) draws its training subsample here too."""
    n_hold = holdout_count(n, holdout)
    order = np.random.default_rng(seed).permutation(n)
    hold, rest = np.sort(order[:n_hold]), np.sort(order[n_hold:])
    if max_train is not None and len(rest) > max_train:
        rest = np.sort(np.random.default_rng(seed).choice(rest, max_train, replace=False))
    return hold, rest


def _image_folders(X: Any) -> tuple[Path, ...]:
    """The folders of image files ``fit`` read (a folder given, or the files' folders), where
    ``save`` must not write; none for arrays, tensors and datasets."""
    if isinstance(X, str | Path):
        return (Path(X),) if Path(X).is_dir() else (Path(X).parent,)
    if isinstance(X, list | tuple) and all(isinstance(x, str | Path) for x in X):
        return tuple(dict.fromkeys(Path(x).parent for x in X))
    return ()


def _to_uint8(images: Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


class Detector:
    """One-class image anomaly detector.

    ``method``: any registered method: ``full`` (the paper's method: CSI plus an adversarial
    autoencoder whose synthetic images join the contrastive training), ``csi+g`` (CSI plus
    a GAN), ``csi`` (CSI alone), or a baseline (``knn``, ``ocsvm``, ``deepsvdd``, ``rot``,
    ``goad``); default: the preset's. Parameters are stored as given (scikit-learn style;
    ``get_params``/``set_params``, so ``sklearn.base.clone`` works); fitted state ends in
    ``_``.
    ``preset`` names a configuration (``cpu``, ``paper``, ``demo``, ``tiny``); ``settings``
    changes any of the method's settings, by section as ``--set SECTION.FIELD=VALUE`` and
    ``--config`` write them: ``{"train": {"epochs": 5}}`` (the fields of
    ``TrainConfig``/``ScoreConfig``, sections ``train`` and ``score``) for the CSI family,
    ``{"rot": {"epochs": 20}}`` for a baseline (its own section); a section the method does
    not read is refused. ``image_size``/``channels`` set the model input for every method
    (default: the preset's).
    ``score`` picks the outlier score (``feat``, ``paper``, ``csi``, ``cos``, ``norm``;
    default: the preset's). ``false_alarm_rate`` (default 0.05) or ``contamination`` (the
    same rate, PyOD's name) sets the threshold from the held-out normal images
    (``holdout``; 0 keeps none and leaves no threshold, as the benchmark does, which has its
    own validation split): the conformal order statistic of their anomaly scores, so that at
    most this fraction of new normal images is expected to be flagged; ``calibration_``
    gives the 90% interval of the rate itself (module docstring). Images of other sizes are
    brought to the input size by ``resize``; ``skip_bad`` skips unreadable image files with a
    warning instead of failing.
    ``checkpoint_dir`` makes the CSI family's training checkpointed and resumable;
    ``progress`` shows a progress bar on a terminal, ``verbose`` prints the losses as they
    are logged. ``deterministic`` (default) scores each image by one pass of its K
    rotations, so a score depends only on the image (not on the batch it came in) and
    equals the ONNX export's; ``False`` uses the preset's ensemble of R random test-time
    draws of T (CSI's protocol). On Fashion-MNIST class 0 (cpu preset, validation split)
    the deterministic ``feat`` score was 0.940 AUROC against 0.935 for R = 2 draws.
    """

    def __init__(
        self,
        method: str | None = None,
        preset: str = "cpu",
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        score: str | None = None,
        image_size: int | None = None,
        channels: int | None = None,
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
    ) -> None:
        self.method = method
        self.preset = preset
        self.settings = settings
        self.score = score
        self.image_size = image_size
        self.channels = channels
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

    # -- scikit-learn's parameter protocol ------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        """The constructor's parameters, from its signature (scikit-learn's rule)."""
        params = inspect.signature(cls.__init__).parameters
        return [name for name in params if name != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Every constructor parameter (``clone`` rebuilds the detector from these)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Detector:
        """Set constructor parameters; an unknown name is refused with the valid ones (a
        method's own settings go in ``settings``, by section)."""
        valid = self._param_names()
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ConfigError(
                f"invalid parameter(s) {', '.join(unknown)} for Detector; valid: "
                f"{', '.join(valid)} (a method's settings go in settings={{SECTION: {{...}}}})"
            )
        for name, value in params.items():
            setattr(self, name, value)
        return self

    # -- configuration -------------------------------------------------------------------

    @property
    def method_name(self) -> str:
        """``method``, or the preset's when None."""
        return self.method or get_preset(self.preset).train.method

    def resolve(self) -> Resolved:
        """What ``fit`` will use: the method's settings (the preset's, with ``settings`` by
        section, this detector's seed, device and score) and its model input size. Raises
        ``ConfigError`` for an unknown method, section, setting or rate, before any work."""
        self._rate()
        check_holdout(self.holdout)
        check_seed(self.seed)
        name = self.method_name
        if name not in AVAILABLE_METHODS:
            raise ConfigError(
                f"method {name!r} is not available; available: {', '.join(AVAILABLE_METHODS)}"
            )
        settings = self.settings if self.settings is not None else {}
        if not isinstance(settings, Mapping):
            raise ConfigError(
                f"settings must be a mapping {{SECTION: {{FIELD: VALUE}}}}, got "
                f"{type(settings).__name__}"
            )
        return method_class(name).resolve(
            name,
            self.preset,
            settings,
            seed=self.seed,
            device=self.device,
            score=self.score,
            deterministic=self.deterministic,
            input={"image_size": self.image_size, "channels": self.channels},
        )

    @property
    def flag_rate(self) -> float:
        """The fraction of normal images the threshold flags: ``contamination`` when set
        (PyOD's name), else ``false_alarm_rate``."""
        return self.contamination if self.contamination is not None else self.false_alarm_rate

    def _rate(self) -> float:
        return check_rate(self.flag_rate)

    # -- input ---------------------------------------------------------------------------

    def _images(self, X: Images, spec: dict[str, int]) -> tuple[Tensor, list[Path] | None]:
        """Model input (N, C, S, S) in [0, 1] from any accepted kind of input, plus the
        file paths when the input was files (so results can name them). Arrays follow the
        shape rules of the module docstring; an empty input is an error."""
        size, channels = spec["image_size"], spec["channels"]
        paths = None
        if isinstance(X, OneClassTask | ImageDataset):
            X = X.train_images
        if isinstance(X, str | Path):
            X = find_images(X) if Path(X).is_dir() else [Path(X)]
        if isinstance(X, list | tuple):
            if not X:
                raise DataError("no images: the list of image paths is empty")
            if not all(isinstance(x, str | Path) for x in X):
                kinds = sorted({type(x).__name__ for x in X if not isinstance(x, str | Path)})
                raise DataError(
                    f"a list must hold image file paths, got {', '.join(kinds)}; stack arrays "
                    "into one array (N, H, W, C) or (N, C, H, W)"
                )
            arrays, paths = load_images(X, size, channels, self.resize, skip_bad=self.skip_bad)
            X = arrays
        if isinstance(X, np.ndarray):
            policy = "pad" if self.resize == "pad" else "resize"
            return to_model_input(channels_last(X), size, channels, policy, floats=True), paths
        if isinstance(X, Tensor):
            expected = (channels, size, size)
            if X.ndim != 4 or tuple(X.shape[1:]) != expected:
                raise DataError(
                    f"tensor images must be the model input (N, {', '.join(map(str, expected))}), "
                    f"got {tuple(X.shape)}; pass other shapes as a numpy array (uint8, or "
                    "floats in [0, 1]: (N, H, W, C), (N, C, H, W), (H, W, C), (N, H, W), (H, W))"
                )
            if len(X) == 0:
                raise DataError(f"no images: the tensor is empty {tuple(X.shape)}")
            if X.device.type == "meta":
                raise DataError(
                    "tensor images are on the meta device (a shape without data); pass "
                    "tensors that hold the images, on the CPU or a GPU"
                )
            if not torch.is_floating_point(X):
                raise DataError(f"tensor images must be floats in [0, 1], got {X.dtype}")
            if not bool(torch.isfinite(X).all()) or X.min() < 0 or X.max() > 1:
                raise DataError("tensor images must be finite floats in [0, 1]")
            return X.float().cpu(), paths
        raise DataError(
            f"cannot read images from a {type(X).__name__}: pass a folder, image paths, a uint8 "
            "or [0, 1] float array (N, H, W, C) or (N, C, H, W), a float tensor (N, C, H, W) "
            "in [0, 1], or an ImageDataset"
        )

    # -- fitting -------------------------------------------------------------------------

    def fit(self, X: Images, y: None = None) -> Detector:
        """Train on normal images ``X``; ``y`` is ignored (one-class: all of X is normal).

        ``holdout`` of the images (drawn with ``seed``) are kept for the threshold; from the
        rest the method's ``max_train`` are drawn (same seed) to train on."""
        cfg, spec = self.resolve()
        rate = self._rate()
        method_class(self.method_name).preflight(cfg)
        images, _ = self._images(X, spec)
        n = len(images)
        n_hold = holdout_count(n, self.holdout)
        if n - n_hold < 2:
            held = f": {n_hold} held out for the threshold leave(s) {n - n_hold}" if n_hold else ""
            raise DataError(
                f"{n} training image(s) with holdout={self.holdout}{held}; training needs at "
                "least 2 (more images, a smaller holdout, or holdout=0 for no threshold)"
            )
        method = build_method(self.method_name, cfg, self.seed, resolve_device(self.device))
        order = np.random.default_rng(self.seed).permutation(n)
        hold, rest = order[:n_hold], np.sort(order[n_hold:])
        if method.max_train is not None and len(rest) > method.max_train:
            rest = np.sort(
                np.random.default_rng(self.seed).choice(rest, method.max_train, replace=False)
            )
        train_x = images[torch.as_tensor(rest)]
        run_dir = Path(self.checkpoint_dir) if self.checkpoint_dir is not None else None
        method.fit(train_x, run_dir, self.progress, self.verbose)
        if not distributed.is_main():
            return self  # under torchrun, ranks > 0 only train; rank 0 builds the bank
        self.method_ = method
        self.config_ = method.config
        self.input_ = spec
        self.data_folders_ = _image_folders(X)
        self.n_train_ = len(train_x)
        self.holdout_scores_ = (
            method.score_samples(images[torch.as_tensor(hold)])[self.score_name_].numpy()
            if n_hold
            else np.zeros(0)
        )
        self.threshold_ = None
        if n_hold:
            self.threshold_ = conformal_threshold(-self.holdout_scores_, rate)
            calibration = self.calibration_
            if not calibration.guaranteed:
                warnings.warn(calibration.describe(), stacklevel=2)
        return self

    @property
    def score_name_(self) -> str:
        """The score this detector reports (the method's default unless ``score`` says)."""
        return self.method_.default_score

    def set_threshold(
        self, false_alarm_rate: float | None = None, contamination: float | None = None
    ) -> Detector:
        """Move the threshold without retraining: flag this fraction of normal images.

        The threshold is the conformal order statistic of the held-out anomaly scores (see
        ``Calibration``); ``calibration_`` says what it promises. A bad rate raises
        ``ConfigError`` and changes nothing."""
        self._check_fitted()
        if not len(self.holdout_scores_):
            raise ConfigError("fitted with holdout=0: no held-out images to place a threshold")
        far, cont = self.false_alarm_rate, self.contamination
        if false_alarm_rate is not None or contamination is not None:
            far = false_alarm_rate if false_alarm_rate is not None else far
            cont = contamination
        check_rate(far, "false_alarm_rate")
        rate = check_rate(cont if cont is not None else far, "false_alarm_rate/contamination")
        threshold = conformal_threshold(-self.holdout_scores_, rate)
        self.false_alarm_rate, self.contamination, self.threshold_ = far, cont, threshold
        return self

    @property
    def calibration_(self) -> Calibration | None:
        """What the threshold promises on new normal images, given the held-out images it was
        placed on (None without a threshold); computed from the saved held-out scores, so a
        model saved before it existed gets it too."""
        self._check_fitted()
        if self.threshold_ is None or not len(self.holdout_scores_):
            return None
        return calibrate(-self.holdout_scores_, self.threshold_, self._rate())

    def _check_fitted(self) -> None:
        if not hasattr(self, "method_") and distributed.launched() and not distributed.is_main():
            raise ConfigError(
                f"rank {distributed.rank()} only trained: under torchrun the fitted detector "
                "(bank, threshold) is rank 0's"
            )
        if not hasattr(self, "method_"):
            raise ConfigError("this Detector is not fitted: call fit() or Detector.load() first")

    # -- the CSI family's fitted networks (None/errors for the baselines) -----------------

    def _family(self) -> Method:
        self._check_fitted()
        if not self.method_.trains_network:
            raise ConfigError(
                f"method {self.method_.name!r} is a baseline: it has no CSI network "
                f"(use {', '.join(network_methods())})"
            )
        return self.method_

    @property
    def model_(self):
        """F, the CSI family's trained network."""
        return self._family().model

    @property
    def scorer_(self):
        """The CSI family's feature bank and scores."""
        return self._family().scorer

    @property
    def generator_(self):
        """G, D (and E, D') of ``csi+g``/``full``; None for ``csi`` and the baselines."""
        self._check_fitted()
        return getattr(self.method_, "side", None)

    # -- scoring -------------------------------------------------------------------------

    def scores(self, X: Images) -> dict[str, np.ndarray]:
        """Normality of each image under every score the method computes (one pass). A
        non-finite score (NaN, +-inf) is kept as it is, with a warning: ``predict`` and the
        CLI flag such an image anomalous."""
        self._check_fitted()
        images, _ = self._images(X, self.input_)
        out = {k: v.numpy() for k, v in self.method_.score_samples(images).items()}
        bad = int((~np.isfinite(out[self.score_name_])).sum())
        if bad:
            warnings.warn(
                f"{bad} of {len(images)} image(s) got a non-finite {self.score_name_} score "
                "(a broken input or model); they are flagged anomalous",
                stacklevel=3,
            )
        return out

    def score_samples(self, X: Images) -> np.ndarray:
        """Normality M(x) of each image: higher = more normal (scikit-learn's sign)."""
        return self.scores(X)[self.score_name_]

    def anomaly_score(self, X: Images) -> np.ndarray:
        """-M(x): higher = more anomalous."""
        return -self.score_samples(X)

    def decision_function(self, X: Images) -> np.ndarray:
        """``threshold_ - anomaly_score``: negative for anomalies, >= 0 for normal images
        (NaN for an image whose score is NaN: anomalous)."""
        self._check_threshold()
        return self.threshold_ - self.anomaly_score(X)

    def _check_threshold(self) -> None:
        self._check_fitted()
        if self.threshold_ is None:
            raise ConfigError("fitted with holdout=0: no threshold (fit with holdout > 0)")

    def is_anomalous(self, anomaly_scores: np.ndarray) -> np.ndarray:
        """The label rule, shared by ``predict`` and the CLI: an anomaly score above the
        threshold, or not finite, is anomalous."""
        self._check_threshold()
        scores = np.asarray(anomaly_scores, dtype=np.float64)
        return ~(np.isfinite(scores) & (scores <= self.threshold_))

    def predict(self, X: Images) -> np.ndarray:
        """+1 for normal, -1 for anomalous (scikit-learn's outlier convention); an image
        whose score is not finite is anomalous."""
        self._check_threshold()
        return np.where(self.is_anomalous(self.anomaly_score(X)), -1, 1)

    # -- readable scores, and PyOD's names --------------------------------------------------

    def _holdout_anomaly_sorted(self) -> np.ndarray:
        """The held-out images' anomaly scores, sorted, non-finite ones as +inf (they are
        anomalous, as ``conformal_threshold`` has it)."""
        self._check_fitted()
        if not len(self.holdout_scores_):
            raise ConfigError(
                "fitted with holdout=0: no held-out normal images to compare scores with "
                "(fit with holdout > 0)"
            )
        held = -np.asarray(self.holdout_scores_, dtype=np.float64)
        return np.sort(np.where(np.isfinite(held), held, np.inf))

    def probability_of(self, anomaly_scores: np.ndarray) -> np.ndarray:
        """``anomaly_probability`` of given anomaly scores (no images needed): the fraction of
        the n held-out normal images whose anomaly score is strictly lower, c / n. NaN counts
        as above everything (1.0), as it is flagged."""
        return fraction_below(self._holdout_anomaly_sorted(), anomaly_scores)

    def anomaly_probability(self, X: Images) -> np.ndarray:
        """A score in [0, 1] that reads the same for every model: the fraction of the n
        held-out normal images (never trained on) whose anomaly score is strictly lower than
        the image's, c / n. 0.5: as anomalous as a typical normal image; 0.99: more anomalous
        than 99% of them; 1.0: more than all of them (or a non-finite score).

        It is the complement of the split-conformal p-value p = (n + 1 - c) / (n + 1) (the
        chance that a new normal image scores at least this high) up to the (n + 1) / n
        factor: anomaly_probability = (n + 1)(1 - p) / n. Its steps are 1 / n. It agrees
        exactly with the threshold: an image is flagged (``predict`` -1) if and only if its
        anomaly_probability >= ``threshold_probability_``. It is the probability that a
        *normal* image scores lower, not the probability that this image is an anomaly
        (that would need the share of anomalies among new images)."""
        self._check_fitted()
        self._holdout_anomaly_sorted()  # no held-out images: say so before scoring
        return self.probability_of(self.anomaly_score(X))

    @property
    def threshold_probability_(self) -> float:
        """The ``anomaly_probability`` at and above which an image is flagged: r / n, r the
        number of held-out anomaly scores <= ``threshold_`` (``calibration_.rank``)."""
        self._check_threshold()
        return self.calibration_.rank / len(self.holdout_scores_)

    def predict_proba(self, X: Images) -> np.ndarray:
        """PyOD's layout: (N, 2), column 0 normal, column 1 anomalous, rows summing to 1;
        column 1 is ``anomaly_probability`` (PyOD scales its training scores linearly or by
        an error function instead; this is the conformal rank among held-out normal
        images)."""
        p = self.anomaly_probability(X)
        return np.stack([1 - p, p], axis=1)

    @property
    def decision_scores_(self) -> np.ndarray:
        """PyOD's ``decision_scores_`` (higher = more anomalous, the scale of ``threshold_``):
        here the anomaly scores of the held-out normal images, not of the images trained on:
        a training image is in the feature bank (its own nearest neighbour), so its score
        says nothing about new images; the held-out ones are what the threshold and
        ``anomaly_probability`` are computed from. Empty with holdout=0."""
        self._check_fitted()
        return -np.asarray(self.holdout_scores_, dtype=np.float64)

    @property
    def labels_(self) -> np.ndarray:
        """PyOD's ``labels_``: 0 normal, 1 anomalous, of ``decision_scores_`` at
        ``threshold_`` (about ``false_alarm_rate`` of them are 1)."""
        self._check_threshold()
        return self.is_anomalous(self.decision_scores_).astype(int)

    @property
    def offset_(self) -> float:
        """scikit-learn's ``offset_``: ``decision_function = score_samples - offset_``, i.e.
        ``-threshold_``."""
        self._check_threshold()
        return -self.threshold_

    # -- labelled evaluation ------------------------------------------------------------------

    def evaluate(
        self,
        X: Images,
        y: np.ndarray | list | None = None,
        groups: list[str] | None = None,
        *,
        normal_dir: str | Path | None = None,
        abnormal_dirs: list[str | Path] | None = None,
        mask_dir: str | Path | None = None,
        out: str | Path | None = None,
        maps: bool = True,
    ) -> Any:
        """Check the detector on labelled images: an ``evaluation.evaluate.Evaluation`` (AUROC,
        AUPR, FPR@95%TPR, the confusion counts, precision, recall and F1 at the saved
        threshold, the best-F1 threshold for reference, the AUROC of each anomalous folder).

        ``X`` a folder in anomalib's ``Folder`` layout (``y`` None: a normal folder, ``good``
        by default, beside one or more anomalous folders; ``normal_dir``/``abnormal_dirs``
        name them, ``mask_dir`` a mask folder to leave out; ``contrasyn.data.labelled``), or any
        images ``score_samples`` takes with ``y`` their labels (1 anomalous, 0 normal) and
        optionally ``groups`` (a name per image, for the per-group AUROC). ``out``: a folder
        that gets ``metrics.json``, ``scores.csv`` and ``report.html`` (with ``report/``);
        ``maps`` draws the anomaly map of every image the report shows. A bad layout is one
        ``DataError``."""
        from contrasyn.api.maps import to_uint8
        from contrasyn.data.labelled import read_labelled_folder
        from contrasyn.evaluation import evaluate as ev_module

        self._check_fitted()
        normal_group, data = "normal", None
        if y is None:
            if not isinstance(X, str | Path):
                raise DataError(
                    "evaluate needs labels: pass y (1 anomalous, 0 normal) with the images, or "
                    "a folder holding a normal folder (good/) and anomalous folders"
                )
            layout = read_labelled_folder(X, normal_dir, abnormal_dirs, mask_dir)
            images, kept = self._images(list(layout.paths), self.input_)
            where = {p: i for i, p in enumerate(layout.paths)}
            index = [where[p] for p in kept]
            labels = layout.is_anomaly[index]
            groups = [layout.groups[i] for i in index]
            paths = [str(p) for p in kept]
            normal_group, data = layout.normal_group, str(X)
        else:
            images, found = self._images(X, self.input_)
            labels = np.asarray(y)
            if found is not None and len(found) != len(labels):
                raise DataError(
                    f"{len(labels)} labels for {len(found)} readable images (skip_bad left "
                    "some out): pass images and labels that match"
                )
            paths = None if found is None else [str(p) for p in found]
            if isinstance(X, str | Path):
                data = str(X)
        scores = -self.score_samples(images)
        result = ev_module.evaluate_scores(self, scores, labels, groups, normal_group, paths)
        result.images = to_uint8(images)
        result.data = data
        if out is not None:
            out = Path(out)
            ev_module.write_files(result, out)
            shown = None
            if maps:
                idx = ev_module.shown_indices(result)
                heat = self._anomaly_map(images[torch.as_tensor(idx)], **MAP_DEFAULTS)
                shown = dict(zip(idx, heat, strict=True))
            ev_module.write_report(result, out, shown)
        return result

    # -- anomaly maps ------------------------------------------------------------------------

    def anomaly_map(
        self,
        X: Images,
        method: str = "occlusion",
        patch: int | None = None,
        stride: int | None = None,
        fill: str = "blur",
    ) -> np.ndarray:
        """Where each image's anomaly score comes from: float32 (N, S, S) at the model input
        size S (``contrasyn.api.maps``). ``occlusion`` (default, every method): per pixel, the mean
        over the ``patch``-pixel windows covering it (moved by ``stride``; default a quarter
        and an eighth of S) of how much the anomaly score falls when the window is replaced by
        ``fill`` (``blur``, ``mean``, ``black``, ``grey``): positive where the region makes
        the image anomalous; it costs one score per window (49 at the defaults).
        ``gradient`` (the CSI family's ``feat`` score): |d anomaly score / d pixel|.
        ``contrasyn.api.maps.map_panel`` draws a map over its image."""
        from contrasyn.api import maps

        self._check_fitted()
        if method not in maps.MAP_METHODS:
            raise ConfigError(
                f"method must be one of {', '.join(maps.MAP_METHODS)}, got {method!r}"
            )
        images, _ = self._images(X, self.input_)
        return self._anomaly_map(images, method, patch, stride, fill)

    def _anomaly_map(
        self, images: Tensor, method: str, patch: int | None, stride: int | None, fill: str
    ) -> np.ndarray:
        from contrasyn.api import maps

        if method == "gradient":
            family = self._family()
            if self.score_name_ != "feat":
                raise ConfigError(
                    f"gradient maps are computed for the feat score, this detector reports "
                    f"{self.score_name_!r}: use method='occlusion'"
                )
            num_shifts = family.config.train.num_shifts
            return maps.gradient_map(family.model, family.scorer, images, num_shifts)
        if patch is None:
            patch, default_stride = maps.default_window(images.shape[-1])
        else:
            default_stride = max(1, patch // 2)
        stride = default_stride if stride is None else stride
        name = self.score_name_

        def anomaly(batch: Tensor) -> np.ndarray:
            return -self.method_.score_samples(batch)[name].numpy()

        return maps.occlusion_map(anomaly, images, patch, stride, fill)

    # -- the generator (csi+g, full) -------------------------------------------------------

    def _generator(self):
        side = self.generator_
        if side is None:
            raise ConfigError(f"method {self.method_.name!r} has no generator (use csi+g or full)")
        return side

    def sample(self, n: int = 64, seed: int = 0) -> np.ndarray:
        """``n`` synthetic images G(h), h ~ N(0, I), as uint8 (n, H, W, C): C is the data's
        own channels (grey data gives grey samples)."""
        return _to_uint8(quality.sample(self._generator().sampler, n, seed))

    def reconstruct(self, X: Images) -> np.ndarray:
        """G(E(x)) of each image (``full`` only), as uint8 (n, H, W, C): normal images come
        back close, anomalies are pulled towards the normal class (the paper's Figure 2)."""
        side = self._generator()
        if side.E is None:
            raise ConfigError("reconstruction needs the encoder E: method 'full'")
        images, _ = self._images(X, self.input_)
        return _to_uint8(quality.reconstructions(side, images))

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``path/model.safetensors`` (weights, bank, held-out scores) and
        ``path/model.json`` (config, threshold and its calibration, versions), each
        atomically. The command line's guards hold here too: a folder that already holds a
        model is replaced only with ``overwrite=True``, and a folder inside the one the
        detector was fitted from (``fit`` on a folder or on image paths) is refused, as its
        files would be found among the training images next time. What would not load back
        (a non-finite threshold, a rate outside (0, 1)) raises ``ConfigError`` too, and
        nothing is written."""
        self._check_fitted()
        path = Path(path)
        for folder in getattr(self, "data_folders_", ()):
            if inside(path, folder):
                raise ConfigError(
                    f"{path} is inside {folder}, which holds the images this detector was "
                    "fitted on: its files would be read as training images next time; save "
                    "the model outside it"
                )
        existing = [n for n in ("model.json", "model.safetensors") if (path / n).exists()]
        if existing and not overwrite:
            raise ConfigError(
                f"{path} already holds a model ({existing[0]}); pass overwrite=True to replace "
                "it, or save elsewhere"
            )
        check_rate(self.false_alarm_rate, "false_alarm_rate")
        if self.contamination is not None:
            check_rate(self.contamination, "contamination")
        if self.threshold_ is not None and not is_real(self.threshold_):
            raise ConfigError(f"threshold_ must be a finite number, got {self.threshold_!r}")
        tensors = dict(self.method_.state_tensors())
        tensors["holdout_scores"] = torch.as_tensor(self.holdout_scores_)
        calibration = self.calibration_
        meta = {
            "format": DETECTOR_FORMAT,
            "method": self.method_.name,
            "preset": self.preset,
            "config": to_dict(self.config_),
            "input": self.input_,
            "score": self.score_name_,
            "threshold": self.threshold_,
            "false_alarm_rate": self.false_alarm_rate,
            "contamination": self.contamination,
            "calibration": None if calibration is None else calibration.as_dict(),
            "resize": self.resize,
            "seed": self.method_.seed,
            "n_train": self.n_train_,
            "n_holdout": len(self.holdout_scores_),
            "deterministic": self.method_.deterministic,
        }
        save_checkpoint(path / "model", tensors, meta)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Detector:
        """A fitted Detector from a folder written by ``save``; loads on any device.

        Everything read is validated first (types, ranges, finiteness, tensor shapes
        against what the method builds): a bad field is one ``CheckpointError`` naming it.
        Nothing is unpickled. ``calibration_`` is recomputed from the held-out scores, so
        models saved before it existed load with their threshold unchanged."""
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
            return cls._from_saved(meta, tensors, device, dev)
        except ConfigError as e:
            raise CheckpointError(
                f"{path}: invalid model ({e}); the folder is damaged or was edited: "
                "retrain, or restore it"
            ) from e

    @classmethod
    def _from_saved(
        cls, meta: dict[str, Any], tensors: dict[str, Tensor], device: str, dev: Any
    ) -> Detector:
        """The one validation of a saved detector (``load``): ``ConfigError`` on any bad
        field or tensor, else the fitted Detector."""

        def field(key: str, ok, words: str, default: Any = ...) -> Any:
            if key not in meta:
                if default is ...:
                    raise ConfigError(f"model.json has no {key!r}")
                return default
            value = meta[key]
            if not ok(value):
                raise ConfigError(f"{key} must be {words}, got {value!r:.60}")
            return value

        name = field("method", lambda v: v in METHOD_NAMES, f"one of {', '.join(METHOD_NAMES)}")
        config_class = method_class(name).config_class
        try:
            cfg = from_dict(config_class, meta.get("config"), "config")
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config: {one_line(e)}") from e
        unfitted = build_method(name, cfg, 0, "cpu")  # what the settings say, nothing built
        preset = field("preset", lambda v: isinstance(v, str), "a preset name")
        default_spec = unfitted.config_input  # None: older baseline saves use the preset's
        spec = field(
            "input",
            lambda v: (
                v is None
                or (
                    isinstance(v, dict)
                    and set(v) == {"image_size", "channels"}
                    and is_int(v["image_size"])
                    and 1 <= v["image_size"] <= MAX_IMAGE_SIZE
                    and v["channels"] in (1, 3)
                    and is_int(v["channels"])
                )
            ),
            f"{{image_size: 1..{MAX_IMAGE_SIZE}, channels: 1 or 3}}",
            None,
        )
        if default_spec is not None and spec is not None and spec != default_spec:
            raise ConfigError(f"input {spec} differs from the config's {default_spec}")
        default_score = unfitted.default_score
        field("score", lambda v: v == default_score, f"{default_score!r} (the config's)", None)
        threshold = field("threshold", lambda v: v is None or is_real(v), "a finite number or null")
        far = field("false_alarm_rate", lambda v: is_real(v) and 0 < v < 1, "a number in (0, 1)")
        contamination = field(
            "contamination", lambda v: v is None or (is_real(v) and 0 < v < 1),
            "null or a number in (0, 1)", None,
        )  # fmt: skip
        resize = field("resize", lambda v: v in RESIZE_NAMES, f"one of {', '.join(RESIZE_NAMES)}")
        seed = field(
            "seed", lambda v: is_int(v) and 0 <= v < SEED_LIMIT, "an integer in [0, 2**63)",
            unfitted.config_seed,
        )  # fmt: skip
        n_train = field("n_train", lambda v: is_int(v) and v >= 0, "a count >= 0")
        # how the bank and the held-out scores were computed: one deterministic pass, or
        # test-time draws (config.score.augment); models saved before it: the config's
        deterministic = unfitted.deterministic
        field(
            "deterministic", lambda v: v is deterministic,
            f"{str(deterministic).lower()}, as config.score.augment has it for method {name}",
            deterministic,
        )  # fmt: skip
        field("calibration", lambda v: v is None or isinstance(v, dict), "a mapping or null", None)

        holdout = tensors.get("holdout_scores")
        if holdout is None or holdout.ndim != 1 or not torch.is_floating_point(holdout):
            raise ConfigError("tensor holdout_scores must be a 1-D float tensor")
        n_hold = field(
            "n_holdout", lambda v: v == len(holdout) and is_int(v),
            f"{len(holdout)} (the held-out scores saved)", len(holdout),
        )  # fmt: skip
        if (threshold is None) != (n_hold == 0):
            raise ConfigError(
                f"threshold {threshold!r} with {n_hold} held-out scores: a threshold needs "
                "held-out scores, and held-out scores come with a threshold"
            )
        for key, tensor in tensors.items():
            if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
                raise ConfigError(f"tensor {key} holds NaN or infinite values")
        state = {k: v for k, v in tensors.items() if k != "holdout_scores"}
        try:
            probe_shapes(name, cfg, state)
        except Exception as e:  # the networks' own shape checks, on the meta device
            raise ConfigError(f"the tensors do not fit the config: {one_line(e)}") from e
        det = cls(
            method=name,
            preset=preset,
            score=default_score if unfitted.trains_network else None,
            false_alarm_rate=float(far),
            contamination=None if contamination is None else float(contamination),
            deterministic=deterministic,
            resize=resize,
            device=device,
            seed=int(seed),
        )
        try:
            method = build_method(name, cfg, int(seed), dev).load_state(state)
            if spec is None:
                spec = default_spec if default_spec is not None else det.resolve().input
            method.check_loaded()
            if method.bank_rows not in (None, n_train):
                raise ConfigError(
                    f"the bank holds {method.bank_rows} training images, n_train says {n_train}"
                )
            if method.probe_safe:
                size, channels = spec["image_size"], spec["channels"]
                probe = method.score_samples(torch.zeros(1, channels, size, size))
                got = probe.get(method.default_score)
                if got is None or tuple(got.shape) != (1,):
                    raise ConfigError(f"scoring one image gave {probe!r:.80}")
        except ConfigError:
            raise
        except Exception as e:  # the state loads but does not run: a bank of another shape
            raise ConfigError(f"the saved state does not run: {one_line(e)}") from e
        det.method_ = method
        det.config_ = cfg
        det.input_ = spec
        det.n_train_ = int(n_train)
        det.holdout_scores_ = holdout.cpu().numpy()
        det.threshold_ = None if threshold is None else float(threshold)
        return det

    def __repr__(self) -> str:
        fitted = ""
        if getattr(self, "threshold_", None) is not None:
            fitted = f", threshold_={self.threshold_:.4g}"
        return (
            f"Detector(method={self.method!r}, preset={self.preset!r}, "
            f"score={self.score!r}{fitted}, contrasyn {__version__})"
        )
