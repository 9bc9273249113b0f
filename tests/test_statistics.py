"""The one model every comparison uses: classes fixed, seeds as replicates (by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contrasyn.evaluation.statistics import compare, summarise

T975 = {2: 4.302652729911275, 3: 3.182446305284263, 4: 2.7764451051977987}  # t(0.975, df)


def test_summarise_by_hand_with_the_pooled_within_class_variance() -> None:
    # class 0: 0.90, 0.92, 0.94 (mean 0.92); class 1: 0.60, 0.64 (mean 0.62)
    cells = {(0, 0): 0.90, (0, 1): 0.92, (0, 2): 0.94, (1, 0): 0.60, (1, 1): 0.64}
    e = summarise(cells)
    assert e.mean == pytest.approx((0.92 + 0.62) / 2)  # classes weigh equally, not cells
    ss = (0.02**2 + 0 + 0.02**2) + (0.02**2 + 0.02**2)
    df = 2 + 1
    var = ss / df / 2**2 * (1 / 3 + 1 / 2)
    half = T975[df] * math.sqrt(var)
    assert (e.df, e.classes, e.cells) == (3, 2, 5)
    assert (e.low, e.high) == pytest.approx((e.mean - half, e.mean + half))
    assert e.text() == f"{e.mean:.4f} [{e.low:.4f}, {e.high:.4f}]"


def test_the_spread_between_classes_never_widens_the_interval() -> None:
    """Classes are fixed: moving one class's values up by any amount moves the mean, never
    the interval's width (a t-interval over all cells would widen with the class spread)."""
    rng = np.random.default_rng(0)
    base = {(c, s): float(rng.normal(0, 0.01)) for c in range(5) for s in range(3)}
    shifted = {(c, s): v + 0.3 * c for (c, s), v in base.items()}
    a, b = summarise(base), summarise(shifted)
    assert b.mean == pytest.approx(a.mean + 0.3 * 2)
    assert b.high - b.low == pytest.approx(a.high - a.low)
    naive = T975[4] * np.std(list(shifted.values()), ddof=1) / math.sqrt(15)
    assert (b.high - b.low) / 2 < naive / 10


def test_compare_pairs_cells_and_pools_the_per_class_intervals() -> None:
    a = {(0, 0): 0.90, (0, 1): 0.94, (1, 0): 0.70, (1, 1): 0.74, (2, 0): 0.5}
    b = {(0, 0): 0.88, (0, 1): 0.90, (1, 0): 0.71, (1, 1): 0.71, (3, 0): 0.9}
    p = compare(a, b)
    # differences: class 0 +0.02, +0.04 (mean 0.03); class 1 -0.01, +0.03 (mean 0.01)
    assert p.overall.mean == pytest.approx(0.02) and p.overall.cells == 4
    assert (p.wins, p.classes) == (2, 2)
    sp2 = (0.01**2 * 2 + 0.02**2 * 2) / 2  # pooled over the two classes, df = 2
    half = T975[2] * math.sqrt(sp2 / 2)  # a class's mean over its 2 seeds
    for c, mean in ((0, 0.03), (1, 0.01)):
        e = p.per_class[c]
        assert (e.mean, e.df) == (pytest.approx(mean), 2)
        assert (e.low, e.high) == pytest.approx((mean - half, mean + half))
    overall_half = T975[2] * math.sqrt(sp2 / 4 * (1 / 2 + 1 / 2))
    assert (p.overall.low, p.overall.high) == pytest.approx(
        (0.02 - overall_half, 0.02 + overall_half)
    )
    assert compare(a, {(5, 0): 1.0}) is None


def test_one_seed_has_no_interval_and_says_so() -> None:
    e = summarise({(0, 0): 0.9, (1, 0): 0.8})
    assert e.mean == pytest.approx(0.85) and e.df == 0 and not e.has_interval
    assert (e.low, e.high) == (None, None) and not e.excludes_zero
    assert e.text() == "0.8500 (one seed: no interval)"
    p = compare({(0, 0): 0.9, (1, 0): 0.8}, {(0, 0): 0.7, (1, 0): 0.9})
    assert p.overall.text("+.4f") == "+0.0500 (one seed: no interval)" and p.wins == 1


def test_excludes_zero_is_the_verdict_of_a_difference() -> None:
    up = compare({(0, 0): 0.9, (0, 1): 0.91}, {(0, 0): 0.8, (0, 1): 0.8})
    level = compare({(0, 0): 0.9, (0, 1): 0.7}, {(0, 0): 0.8, (0, 1): 0.8})
    down = compare({(0, 0): 0.8, (0, 1): 0.8}, {(0, 0): 0.9, (0, 1): 0.91})
    assert up.overall.excludes_zero and up.overall.low > 0
    assert down.overall.excludes_zero and down.overall.high < 0
    assert not level.overall.excludes_zero


def test_no_cells_is_an_error() -> None:
    with pytest.raises(ValueError, match="no cells"):
        summarise({})
