"""The detector's readable scores and PyOD's names for them, from the held-out normal images.

``anomaly_probability`` is the fraction of the held-out normal images (never trained on) whose
anomaly score is lower than an image's: the same scale for every model, and an image is
flagged exactly when it reaches ``threshold_probability_``. ``predict_proba``,
``decision_scores_``, ``labels_`` and ``offset_`` are the same facts under PyOD's and
scikit-learn's names. ``ReadableScores`` is a part of ``Detector`` (its only subclass), which
provides the fitted state these read: ``holdout_scores_``, ``threshold_``, ``calibration_``,
``anomaly_score`` and the checks that it is fitted.
"""

from __future__ import annotations

import numpy as np

from contrasyn.api.calibration import fraction_below
from contrasyn.api.inputs import Images
from contrasyn.errors import ConfigError


class ReadableScores:
    """Scores read against the held-out normal images (module docstring)."""

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
