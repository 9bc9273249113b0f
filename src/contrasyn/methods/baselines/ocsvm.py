"""One-class SVM on raw pixels (Schölkopf et al. 2001), trained by scikit-learn.

RBF kernel on flattened [0, 1] images. ``gamma="scale"`` (1 / (n_features * Var(X))) and
``nu=0.1`` are fixed rather than tuned on the test split, as published OC-SVM baselines
often were; a training subsample (``max_train``) keeps the O(n^2) kernel affordable.
Scoring evaluates the fitted decision function itself from the support vectors, dual
coefficients, offset and gamma (``sum_i a_i exp(-gamma ||x - s_i||^2) + b``), so a saved
model is four tensors, never a pickled scikit-learn object.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sklearn.svm import OneClassSVM
from torch import Tensor

from contrasyn.config import at_least, check_fields, positive
from contrasyn.methods.baselines import Baseline
from contrasyn.methods.registry import register


@dataclass
class OCSVMConfig:
    nu: float = 0.1
    gamma: str | float = "scale"
    max_train: int | None = 2000

    def __post_init__(self) -> None:
        check_fields(self, "ocsvm", ("nu",), lambda v: 0 < v <= 1, "in (0, 1]")
        check_fields(
            self, "ocsvm", ("gamma",), lambda v: v in ("scale", "auto") or positive(v),
            "'scale', 'auto' or a number > 0",
        )  # fmt: skip
        check_fields(self, "ocsvm", ("max_train",), at_least(1), ">= 1")


@register
class PixelOCSVM(Baseline):
    """RBF one-class SVM on flattened pixels; anomaly score = minus the decision function."""

    config_class = OCSVMConfig
    instant = True

    def fit(
        self, images: Tensor, run_dir=None, progress=False, verbose=False, clock=None
    ) -> PixelOCSVM:
        x = images.flatten(1).double().numpy()
        svm = OneClassSVM(kernel="rbf", nu=self.config.nu, gamma=self.config.gamma).fit(x)
        self.support_ = torch.from_numpy(svm.support_vectors_)
        self.dual_coef_ = torch.from_numpy(svm.dual_coef_[0])
        self.intercept_ = torch.tensor(float(svm.intercept_[0]), dtype=torch.float64)
        self.gamma_ = torch.tensor(float(svm._gamma), dtype=torch.float64)
        return self

    def anomaly_score(self, images: Tensor, chunk: int = 1024) -> Tensor:
        x = images.flatten(1).double()
        out = [
            (torch.exp(-self.gamma_ * torch.cdist(q, self.support_) ** 2) @ self.dual_coef_)
            for q in x.split(chunk)
        ]
        return -(torch.cat(out) + self.intercept_).float()

    def state_tensors(self) -> dict[str, Tensor]:
        return {
            "support": self.support_,
            "dual_coef": self.dual_coef_,
            "intercept": self.intercept_,
            "gamma": self.gamma_,
        }

    def load_state(self, tensors: dict[str, Tensor]) -> PixelOCSVM:
        self.support_ = tensors["support"].double().cpu()
        self.dual_coef_ = tensors["dual_coef"].double().cpu()
        self.intercept_, self.gamma_ = tensors["intercept"].double(), tensors["gamma"].double()
        return self
