"""Detection metrics with anomalies as the positive class (docs/METHOD.md, "Task and protocol").

Inputs everywhere: ``is_anomaly`` (1 = anomalous, 0 = normal) and an *anomaly* score (higher =
more anomalous). Conventions:
- ``auroc``: pooled over all anomalous classes (Deep SVDD's convention), the headline number;
- ``auroc_per_class_mean``: the mean of one AUROC per anomalous class against the normal
  images (CSI's ``one_class_mean``); equal to the pooled one when classes are balanced;
- ``aupr``: average precision with anomalies positive;
- ``fpr95``: the fraction of anomalies accepted as normal when the threshold keeps 95% of the
  normal images (the normal class is the "positive" of the usual OOD FPR@95%TPR).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def _check(is_anomaly: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(is_anomaly).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    if y.all() or not y.any():
        raise ValueError("metrics need both normal and anomalous samples")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} scores are NaN or infinite")
    return y, s


def auroc(is_anomaly: np.ndarray, score: np.ndarray) -> float:
    y, s = _check(is_anomaly, score)
    return float(roc_auc_score(y, s))


def aupr(is_anomaly: np.ndarray, score: np.ndarray) -> float:
    y, s = _check(is_anomaly, score)
    return float(average_precision_score(y, s))


def fpr_at_tpr(is_anomaly: np.ndarray, score: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of anomalies scored at or below the threshold that keeps ``tpr`` of normals."""
    y, s = _check(is_anomaly, score)
    threshold = np.quantile(s[~y], tpr, method="inverted_cdf")
    return float((s[y] <= threshold).mean())


def auroc_per_class_mean(labels: np.ndarray, is_anomaly: np.ndarray, score: np.ndarray) -> float:
    """Mean over anomalous classes c of AUROC(normal images vs images of class c)."""
    y, s = _check(is_anomaly, score)
    labels = np.asarray(labels).ravel()
    values = []
    for c in np.unique(labels[y]):
        keep = ~y | (labels == c)
        values.append(roc_auc_score(y[keep], s[keep]))
    return float(np.mean(values))


def evaluate(is_anomaly: np.ndarray, score: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """All metrics of one task as a dict of floats."""
    out = {
        "auroc": auroc(is_anomaly, score),
        "aupr": aupr(is_anomaly, score),
        "fpr95": fpr_at_tpr(is_anomaly, score),
    }
    if labels is not None:
        out["auroc_per_class_mean"] = auroc_per_class_mean(labels, is_anomaly, score)
    return out
