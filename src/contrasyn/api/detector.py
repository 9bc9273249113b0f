"""The practitioner's API: ``Detector``, a scikit-learn-style one-class image detector.

Train on normal images only, then score new ones.

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
interval its realised false-alarm rate lies in (``contrasyn.api.calibration``). A method
whose fit only stores its images (``knn``, ``dn2``) holds none out: all of them enter the
bank, and each one's score against the others (leave-one-out) calibrates the threshold, so
50 images give 50 calibration scores instead of 5 (``leave_one_out_``).

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
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from contrasyn import distributed
from contrasyn.api import saved
from contrasyn.api.calibration import Calibration, calibrate, conformal_threshold
from contrasyn.api.inputs import Images, image_folders, read_images
from contrasyn.api.maps import to_uint8
from contrasyn.api.readable import ReadableScores
from contrasyn.api.splits import (
    calibration_split,
    holdout_count,
    spare_indices,
    training_indices,
)
from contrasyn.budget import Clock, parse_duration
from contrasyn.config import check_holdout, check_rate, check_seed
from contrasyn.device import resolve_device
from contrasyn.errors import ConfigError
from contrasyn.methods.csi.adversarial import reconstructions, sample
from contrasyn.methods.presets import get_preset
from contrasyn.methods.registry import Method, Resolved, build_method, method_class, network_methods
from contrasyn.names import METHOD_NAMES
from contrasyn.version import __version__

AVAILABLE_METHODS = METHOD_NAMES
# The anomaly map of the evaluate report and ``contrasyn score --maps`` (chosen by the
# pointing game, benchmarks/pointing_game.py).
MAP_DEFAULTS = {"method": "occlusion", "patch": None, "stride": None, "fill": "blur"}


class Plan(NamedTuple):
    """What a fit will do (``Detector.plan``)."""

    config: Any
    input: dict[str, int]
    length: str | None
    steps: int | None
    checkpoints: bool


class Detector(ReadableScores):
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
    ``score`` picks the CSI family's outlier score (``feat``, ``head``, ``pix`` and their
    sums ``feat+head``, ``feat+pix``, ``feat+head+pix``, ``paper``, ``csi``, ``cos``,
    ``norm``; default: the preset's). ``false_alarm_rate`` (default 0.05) or
    ``contamination`` (the same rate, PyOD's name) sets the threshold from the held-out
    normal images (``holdout``; 0 keeps none and leaves no threshold, as the benchmark does,
    which has its own validation split): the conformal order statistic of their anomaly
    scores, so that at most this fraction of new normal images is expected to be flagged;
    ``calibration_`` gives the 90% interval of the rate itself (module docstring). Images of
    other sizes are brought to the input size by ``resize``; ``skip_bad`` skips unreadable
    image files with a warning instead of failing.
    ``time_budget`` ("10m", "90s", seconds) fits by the clock: the whole ``fit``, from
    reading the images to the held-out scores, ends within it; the method times its steps
    here and chooses its length, written into ``config_`` (``train.steps``: set it to repeat
    the run exactly). It replaces a preset's own budget; kNN and OC-SVM need none.
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
        time_budget: str | float | None = None,
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
        self.time_budget = time_budget

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
        cls = method_class(name)
        if self.time_budget is not None:
            settings = cls.with_time_budget(name, settings, parse_duration(self.time_budget))
        return cls.resolve(
            name,
            self.preset,
            settings,
            seed=self.seed,
            device=self.device,
            score=self.score,
            deterministic=self.deterministic,
            input={"image_size": self.image_size, "channels": self.channels},
        )

    def plan(self, n_images: int) -> Plan:
        """What ``fit`` on ``n_images`` images will do, before any work: the settings and
        input size (``resolve``), the training length in the method's terms, its optimiser
        steps (None where it does not count them), and whether it keeps training checkpoints
        in ``checkpoint_dir`` (the methods that train a network)."""
        config, spec = self.resolve()
        method = build_method(self.method_name, config)
        _, rest = training_indices(n_images, self.holdout, method.max_train, self.seed)
        steps = method.steps_for(len(rest))
        return Plan(config, spec, method.length, steps, method.trains_network)

    @property
    def flag_rate(self) -> float:
        """The fraction of normal images the threshold flags: ``contamination`` when set
        (PyOD's name), else ``false_alarm_rate``."""
        return self.contamination if self.contamination is not None else self.false_alarm_rate

    def _rate(self) -> float:
        return check_rate(self.flag_rate)

    # -- input ---------------------------------------------------------------------------

    def _images(self, X: Images, spec: dict[str, int]) -> tuple[Tensor, list[Path] | None]:
        """Model input of ``spec`` from any accepted input (``inputs.read_images``)."""
        return read_images(X, spec, self.resize, self.skip_bad)

    # -- fitting -------------------------------------------------------------------------

    def fit(self, X: Images, y: None = None, *, started: float | None = None) -> Detector:
        """Train on normal images ``X``; ``y`` is ignored (one-class: all of X is normal).

        ``holdout`` of the images (drawn with ``seed``) are kept for the threshold; from the
        rest the method's ``max_train`` are drawn (same seed) to train on. A time budget
        counts from ``started`` (``time.monotonic()``; default: now, before ``X`` is read):
        the command line passes the moment it began decoding the files."""
        start = time.monotonic() if started is None else started
        cfg, spec = self.resolve()
        rate = self._rate()
        method_class(self.method_name).preflight(cfg)
        images, _ = self._images(X, spec)
        n = len(images)
        n_hold = holdout_count(n, self.holdout)
        method = build_method(self.method_name, cfg, self.seed, resolve_device(self.device))
        hold, rest, loo = calibration_split(method, n, self.holdout, self.seed)
        train_x = images[torch.as_tensor(rest)]
        run_dir = Path(self.checkpoint_dir) if self.checkpoint_dir is not None else None
        budget = method.time_budget
        clock = None if budget is None else Clock(budget, start, after_images=len(hold))
        spare = {"spare": images[spare_indices(n, hold, rest)]} if method.banks_spare else {}
        method.fit(train_x, run_dir, self.progress, self.verbose, clock, **spare)
        if not distributed.is_main():
            return self  # under torchrun, ranks > 0 only train; rank 0 builds the bank
        self.method_ = method
        self.config_ = method.config
        self.input_ = spec
        self.data_folders_ = image_folders(X)
        self.n_train_ = len(train_x)
        self.leave_one_out_ = loo
        if loo:
            self.holdout_scores_ = method.leave_one_out_scores()[self.score_name_].numpy()
        elif n_hold:
            held = images[torch.as_tensor(hold)]
            self.holdout_scores_ = method.score_samples(held)[self.score_name_].numpy()
        else:
            self.holdout_scores_ = np.zeros(0)
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
        return calibrate(-self.holdout_scores_, self.threshold_, self._rate(), self.leave_one_out_)

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
        from contrasyn.api import evaluate as ev_module
        from contrasyn.data.labelled import labelled_images

        self._check_fitted()
        images, labels, groups, paths, normal_group, data = labelled_images(
            lambda x: self._images(x, self.input_),
            X,
            y,
            groups,
            normal_dir,
            abnormal_dirs,
            mask_dir,
        )
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
        return to_uint8(sample(self._generator().sampler, n, seed))

    def reconstruct(self, X: Images) -> np.ndarray:
        """G(E(x)) of each image (``full`` only), as uint8 (n, H, W, C): normal images come
        back close, anomalies are pulled towards the normal class (the paper's Figure 2)."""
        side = self._generator()
        if side.E is None:
            raise ConfigError("reconstruction needs the encoder E: method 'full'")
        images, _ = self._images(X, self.input_)
        return to_uint8(reconstructions(side, images))

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``path/model.safetensors`` (weights, bank, held-out scores) and
        ``path/model.json`` (config, threshold and its calibration, versions), each
        atomically, with the command line's guards (``contrasyn.api.saved.save``)."""
        return saved.save(self, Path(path), overwrite)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Detector:
        """A fitted Detector from a folder written by ``save``; loads on any device, never
        unpickles, and validates everything first (``contrasyn.api.saved.load``)."""
        return saved.load(cls, Path(path), device)

    def __repr__(self) -> str:
        fitted = ""
        if getattr(self, "threshold_", None) is not None:
            fitted = f", threshold_={self.threshold_:.4g}"
        return (
            f"Detector(method={self.method!r}, preset={self.preset!r}, "
            f"score={self.score!r}{fitted}, contrasyn {__version__})"
        )
