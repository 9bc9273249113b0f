"""Detection metrics, anomalies positive."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from contrasyn.api.metrics import aupr, auroc, auroc_per_class_mean, evaluate, fpr_at_tpr


def test_auroc_hand_examples() -> None:
    y = [0, 0, 1, 1]
    assert auroc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auroc(y, [0.8, 0.9, 0.1, 0.2]) == 0.0
    # anomaly pairs (a, n): 0.35>0.1 yes, 0.35>0.4 no, 0.8 beats both -> 3/4
    assert auroc(y, [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # a tie counts one half: (1 + 0.5 + 2) / 4
    assert auroc(y, [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.875)
    # boolean labels and numpy inputs are accepted
    assert auroc(np.array([False, True]), np.array([0.0, 1.0])) == 1.0


def test_aupr_hand_example() -> None:
    # ranking by score: a (1/1), n, a (2/3): AP = (1 + 2/3) / 2
    assert aupr([1, 0, 1], [0.9, 0.5, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    assert aupr([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0


def test_fpr_at_tpr_hand_example_where_the_quantile_is_exact() -> None:
    # 21 normals 1..21: keeping 95% of them means the threshold 20 (20/21 >= 0.95)
    normal = np.arange(1.0, 22.0)
    anomal = np.array([0.5, 19.5, 20.0, 20.5, 30.0])
    y = np.r_[np.zeros(21), np.ones(5)]
    s = np.r_[normal, anomal]
    # anomalies accepted (score <= 20): 0.5, 19.5, 20.0
    assert fpr_at_tpr(y, s) == pytest.approx(3 / 5)
    assert fpr_at_tpr(y, s, tpr=1.0) == pytest.approx(4 / 5)
    perfect = np.r_[normal, normal + 100]
    assert fpr_at_tpr(np.r_[np.zeros(21), np.ones(21)], perfect) == 0.0


def test_fpr_at_tpr_uses_the_smallest_threshold_reaching_the_tpr() -> None:
    # normals 1..4, tpr 0.5: threshold 2 keeps 2/4 normals and accepts no anomaly
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([1.0, 2.0, 3.0, 4.0, 2.5, 5.0, 6.0, 7.0])
    assert fpr_at_tpr(y, s, tpr=0.5) == 0.0
    # 20 normals 1..20: 95% is 19 normals -> threshold 19; anomalies at 10.5 and 19.5
    y = np.r_[np.zeros(20), np.ones(4)]
    s = np.r_[np.arange(1.0, 21.0), [10.5, 19.5, 25.0, 30.0]]
    assert fpr_at_tpr(y, s) == pytest.approx(1 / 4)


def test_fpr_at_tpr_agrees_with_roc_curve() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(100), np.ones(100)]
    s = np.r_[rng.normal(0, 1, 100), rng.normal(1.5, 1, 100)]
    # normals positive, with "normality" -s as the score
    fpr, tpr, _ = roc_curve(1 - y, -s)
    expected = fpr[np.searchsorted(tpr, 0.95, side="left")]
    assert fpr_at_tpr(y, s) == pytest.approx(expected)


def test_auroc_per_class_mean_balanced_equals_pooled() -> None:
    # normals 0.2, 0.6; class 1: 0.5, 0.9 (AUROC 3/4); class 2: 0.1, 0.7 (AUROC 2/4)
    labels = np.array([0, 0, 1, 1, 2, 2])
    y = (labels != 0).astype(int)
    s = np.array([0.2, 0.6, 0.5, 0.9, 0.1, 0.7])
    assert auroc_per_class_mean(labels, y, s) == pytest.approx(0.625)
    assert auroc(y, s) == pytest.approx(0.625)


def test_auroc_per_class_mean_unbalanced_differs_from_pooled() -> None:
    # class 1: 0.5, 0.9, 0.95, 0.99 -> (1 + 2 + 2 + 2) / 8; class 2: 0.1 -> 0
    labels = np.array([0, 0, 1, 1, 1, 1, 2])
    y = (labels != 0).astype(int)
    s = np.array([0.2, 0.6, 0.5, 0.9, 0.95, 0.99, 0.1])
    assert auroc_per_class_mean(labels, y, s) == pytest.approx((7 / 8 + 0) / 2)
    assert auroc(y, s) == pytest.approx(7 / 10)


@pytest.mark.parametrize("fn", [auroc, aupr, fpr_at_tpr])
def test_errors(fn) -> None:
    with pytest.raises(ValueError, match="both"):
        fn([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="both"):
        fn([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        fn([0, 1, 1], [0.1, float("nan"), 0.3])
    with pytest.raises(ValueError, match="NaN or infinite"):
        fn([0, 1], [0.1, float("inf")])
    with pytest.raises(ValueError, match="labels"):
        fn([0, 1, 1], [0.1, 0.2])


def test_per_class_mean_errors() -> None:
    with pytest.raises(ValueError):
        auroc_per_class_mean([0, 0], [0, 0], [0.1, 0.2])
    with pytest.raises(ValueError):
        auroc_per_class_mean([0, 1], [0, 1], [0.1, float("nan")])


def test_evaluate_keys_and_values() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    y = (labels != 0).astype(int)
    s = np.array([0.2, 0.6, 0.5, 0.9, 0.1, 0.7])
    out = evaluate(y, s)
    assert set(out) == {"auroc", "aupr", "fpr95"}
    assert out["auroc"] == pytest.approx(0.625)
    assert all(isinstance(v, float) and 0 <= v <= 1 for v in out.values())
    out = evaluate(y, s, labels)
    assert out["auroc_per_class_mean"] == pytest.approx(0.625)
