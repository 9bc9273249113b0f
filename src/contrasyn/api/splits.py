"""Which of a fit's images train the method and which calibrate its threshold.

``Detector.fit`` holds out ``holdout`` of the normal images (drawn with the seed) for the
threshold, then draws at most the method's ``max_train`` of the rest to train on; a method
whose fit only stores its images (``Method.leave_one_out``) keeps every image and calibrates
on each one's score against the others instead. The benchmark draws its training subsample
with ``training_indices`` too (holdout 0), so a cell and a ``Detector`` train on the same
images.
"""

from __future__ import annotations

import numpy as np
import torch

from contrasyn.errors import DataError
from contrasyn.methods.registry import Method


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


def calibration_split(
    method: Method, n: int, holdout: float, seed: int
) -> tuple[list[int], list[int], bool]:
    """(held out, trained on, leave-one-out) for ``n`` images: with a threshold to place, a
    method that only stores its images (``Method.leave_one_out``) and keeps them all takes
    every one and calibrates on each one's score against the others (module docstring);
    otherwise ``training_indices``, which must leave at least 2 to train on."""
    n_hold = holdout_count(n, holdout)
    if n_hold and (method.max_train is None or method.max_train >= n) and method.leave_one_out(n):
        return [], list(range(n)), True
    if n - n_hold < 2:
        held = f": {n_hold} held out for the threshold leave(s) {n - n_hold}" if n_hold else ""
        raise DataError(
            f"{n} training image(s) with holdout={holdout}{held}; training needs at "
            "least 2 (more images, a smaller holdout, or holdout=0 for no threshold)"
        )
    hold, rest = training_indices(n, holdout, method.max_train, seed)
    return hold, rest, False


def spare_indices(n: int, hold, rest) -> torch.Tensor:
    """The images of ``n`` neither held out (``hold``) nor trained on (``rest``): those the
    training subsample (``max_train``) left out, sorted, for a method that banks them
    (``Method.banks_spare``)."""
    used = np.zeros(n, dtype=bool)
    used[np.asarray(hold, dtype=np.int64)] = True
    used[np.asarray(rest, dtype=np.int64)] = True
    return torch.from_numpy(np.flatnonzero(~used))
