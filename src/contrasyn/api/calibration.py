"""Threshold calibration: where the threshold goes among the held-out normal scores, and
what it then promises.

Calibration (``conformal_rank``, ``Calibration``): with n held-out scores and a target rate
a, the threshold is the k-th smallest held-out anomaly score, k = ceil((n + 1)(1 - a)), the
finite-sample (split-conformal) rule: for new normal images exchangeable with the held-out
ones, the expected false-alarm rate is (n + 1 - k) / (n + 1) <= a. When k > n (fewer than
(1 - a) / a held-out images) no threshold among them can promise a: the largest is used and
the shortfall is reported. The rate realised on new images is itself random: given the
held-out set it is 1 - F(threshold), Beta(n + 1 - k, k) distributed, whose 90% interval is
saved and printed. Drift between the training images and new ones moves the rate outside
these figures: they hold only for images from the same source.

Leave-one-out (``leave_one_out``): a method whose fit only stores its images (a kNN bank)
keeps all n of them in the bank and calibrates on each one's score against the other n - 1,
so nothing is held out of training and n, not a tenth of it, sets the threshold. A new
image's kNN distance to all n bank images is exchangeable with each bank image's distance
to the other n (the n - 1 others and the new image); leaving the new image out of that can
only lengthen it, so the leave-one-out scores sit at or above exchangeable ones and the
rule's expected rate stays at most the target. The excess is one neighbour in n, and small:
for raw-pixel kNN on 400 draws of 50 exchangeable images (4,000 new ones each) the realised
rate averaged 3.87% against the stated 3.92%, inside the stated 90% interval 91.0% of the
time (benchmarks/leave_one_out_calibration.py; tests/test_few_images.py checks it on 200).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from contrasyn.errors import ConfigError

INTERVAL_CONFIDENCE = 0.9  # the confidence of the saved false-alarm interval


def conformal_rank(n: int, rate: float) -> int:
    """k = ceil((n + 1)(1 - rate)): the rank (1 = smallest) of the held-out anomaly score
    that is the threshold, so that the expected false-alarm rate on new exchangeable normal
    images, (n + 1 - k) / (n + 1), is at most ``rate``. Larger than ``n`` when ``n`` is too
    small for ``rate``."""
    return max(1, math.ceil((n + 1) * (1 - rate) - 1e-9))


def min_holdout(rate: float) -> int:
    """The fewest held-out images for which ``conformal_rank(n, rate) <= n``."""
    return max(1, math.ceil((1 - rate) / rate - 1e-9))


class Calibration(NamedTuple):
    """What a threshold promises, from the ``n`` held-out normal images it was placed on.

    ``rank``: how many held-out anomaly scores are <= the threshold; ``expected``: the
    expected false-alarm rate on new exchangeable normal images, (n + 1 - rank) / (n + 1);
    ``low``/``high``: the interval holding the realised rate with probability
    ``confidence`` (the rate is Beta(n + 1 - rank, rank) distributed); ``guaranteed``:
    ``expected <= target``; ``leave_one_out``: the n scores are the training images' own,
    each against the others (module docstring), not n images held out of training."""

    target: float
    n: int
    rank: int
    expected: float
    low: float
    high: float
    confidence: float
    guaranteed: bool
    leave_one_out: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": "conformal",
            "target": self.target,
            "n_holdout": self.n,
            "rank": self.rank,
            "expected_rate": self.expected,
            "interval": [self.low, self.high],
            "confidence": self.confidence,
            "guaranteed": self.guaranteed,
            "scores": "leave-one-out" if self.leave_one_out else "held-out",
        }

    def describe(self) -> str:
        """One sentence: the target, the interval, and what narrows it."""
        pct, target = _percent, _round_percent(self.target)
        images = f"{self.n} held-out image{'s' if self.n != 1 else ''}"
        if self.leave_one_out:
            images = f"{self.n} training images each scored against the others (leave-one-out)"
        text = (
            f"{target} target; with {images} the rate on new normal images is between "
            f"{pct(self.low)} and {pct(self.high)} with {_round_percent(self.confidence)} "
            f"confidence (expected {pct(self.expected)})"
        )
        if not self.guaranteed:
            needed = "images" if self.leave_one_out else "held-out images"
            text += (
                f"; {target} cannot be guaranteed with so few images (at least "
                f"{min_holdout(self.target)} {needed} are needed): the threshold is the highest "
                "of their scores"
            )
        return text

    def advice(self) -> str:
        more = (
            "more images narrow the interval (each one is in the bank and calibrates)"
            if self.leave_one_out
            else "more images or a larger holdout (--holdout) narrow the interval"
        )
        return f"{more}; drift between the training images and new ones moves the rate outside it"


def _percent(x: float) -> str:
    """A rate for people: 0.26%, 1.2%, 13.9%."""
    return f"{x * 100:.2g}%" if x * 100 < 1 else f"{x * 100:.1f}%"


def _round_percent(x: float) -> str:
    """A rate someone chose: 5%, 0.5%, 99%."""
    return f"{x * 100:g}%"


def calibrate(
    holdout_anomaly: np.ndarray, threshold: float, target: float, leave_one_out: bool = False
) -> Calibration:
    """The ``Calibration`` of ``threshold`` over held-out anomaly scores, or leave-one-out
    ones (NaN counts as above every threshold, as it is flagged)."""
    from scipy.stats import beta

    n = len(holdout_anomaly)
    rank = int(np.sum(holdout_anomaly <= threshold))
    alpha = (1 - INTERVAL_CONFIDENCE) / 2
    if rank == 0:  # below every held-out score: at least the rate of the smallest
        expected, low, high = 1.0, float(beta.ppf(alpha, n, 1)), 1.0
    else:
        a, b = n + 1 - rank, rank
        expected = a / (n + 1)
        low, high = float(beta.ppf(alpha, a, b)), float(beta.ppf(1 - alpha, a, b))
    guaranteed = expected <= target + 1e-12
    return Calibration(
        target, n, rank, expected, low, high, INTERVAL_CONFIDENCE, guaranteed, leave_one_out
    )


def conformal_threshold(holdout_anomaly: np.ndarray, rate: float) -> float:
    """The k-th smallest held-out anomaly score, k = ``conformal_rank`` (the largest when
    k > n; see ``Calibration``). Non-finite held-out scores sort last (they are anomalous)."""
    n = len(holdout_anomaly)
    k = min(conformal_rank(n, rate), n)
    ordered = np.sort(np.where(np.isfinite(holdout_anomaly), holdout_anomaly, np.inf))
    threshold = float(ordered[k - 1])
    if not math.isfinite(threshold):
        bad = int((~np.isfinite(holdout_anomaly)).sum())
        raise ConfigError(
            f"{bad} of the {n} held-out images got a non-finite anomaly score, so no finite "
            f"threshold flags only {rate:g} of them: the model is broken (retrain it) or a "
            "larger false-alarm rate is needed"
        )
    return threshold


def fraction_below(holdout_sorted: np.ndarray, anomaly_scores: np.ndarray) -> np.ndarray:
    """For each anomaly score, the fraction c / n of the n held-out anomaly scores (sorted
    ascending) strictly below it; NaN counts as above everything (1.0), as it is flagged."""
    a = np.asarray(anomaly_scores, dtype=np.float64)
    lower = np.searchsorted(holdout_sorted, np.nan_to_num(a, nan=np.inf), side="left")
    return np.where(np.isnan(a), 1.0, lower / len(holdout_sorted))
