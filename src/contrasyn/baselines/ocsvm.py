"""One-class SVM on raw pixels (Schölkopf et al. 2001), through scikit-learn.

RBF kernel on flattened [0, 1] images. ``gamma="scale"`` (1 / (n_features * Var(X))) and
``nu=0.1`` are fixed rather than tuned on the test split, as published OC-SVM baselines
often were; a training subsample (``max_train``) keeps the O(n^2) kernel affordable.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.svm import OneClassSVM
from torch import Tensor


class PixelOCSVM:
    """RBF one-class SVM on flattened pixels; anomaly score = minus the decision function."""

    def __init__(
        self,
        nu: float = 0.1,
        gamma: str | float = "scale",
        max_train: int | None = 2000,
        seed: int = 0,
    ) -> None:
        self.nu, self.gamma, self.max_train, self.seed = nu, gamma, max_train, seed

    def fit(self, images: Tensor) -> PixelOCSVM:
        x = images.flatten(1).double().numpy()
        if self.max_train is not None and len(x) > self.max_train:
            keep = np.random.default_rng(self.seed).choice(len(x), self.max_train, replace=False)
            x = x[np.sort(keep)]
        self.svm_ = OneClassSVM(kernel="rbf", nu=self.nu, gamma=self.gamma).fit(x)
        return self

    def anomaly_score(self, images: Tensor) -> Tensor:
        x = images.flatten(1).double().numpy()
        return torch.from_numpy(-self.svm_.decision_function(x)).float()
