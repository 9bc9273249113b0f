"""One estimator contract for every method: the registry, each baseline's saved state, the
Detector over every method, scikit-learn's clone, and the benchmark's cells on the same path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone
from sklearn.svm import OneClassSVM

from contrasyn.api.detector import Detector
from contrasyn.api.metrics import auroc
from contrasyn.data import load_dataset, to_model_input
from contrasyn.data.protocol import one_class_task
from contrasyn.errors import ConfigError
from contrasyn.evaluation import bench
from contrasyn.methods.baselines.ocsvm import PixelOCSVM
from contrasyn.methods.baselines.rot import RotationDetector, RotConfig, _labels
from contrasyn.methods.baselines.transforms import apply
from contrasyn.methods.registry import build_method, method_class, method_config
from contrasyn.names import BASELINES, METHOD_NAMES


@pytest.fixture(scope="module")
def task():
    return one_class_task(load_dataset("synthetic"), 0, val_normal=20, val_seed=0)


@pytest.fixture(scope="module")
def images(task):
    return to_model_input(task.train_images[:80], 32, 3), to_model_input(task.test_images, 32, 3)


def test_every_name_resolves_and_unknown_names_are_listed() -> None:
    assert set(METHOD_NAMES) == {
        "knn", "ocsvm", "deepsvdd", "rot", "goad", "dn2", "csi", "csi+g", "full"
    }  # fmt: skip
    for name in METHOD_NAMES:
        method = build_method(name, method_config(name, "tiny"))
        assert method.name == name and name in method_class(name).names
    assert method_config("csi", "tiny").train.method == "csi"  # the name sets the variant
    with pytest.raises(ConfigError, match="available: knn, ocsvm"):
        method_class("gan")
    with pytest.raises(ConfigError, match="method 'rot'.*unknown field"):
        method_config("rot", "tiny", {"epoch": 3})


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_state_round_trip(name, images) -> None:
    train, test = images
    fitted = build_method(name, method_config(name, "tiny"), seed=1).fit(train)
    loaded = build_method(name, method_config(name, "tiny"), seed=1)
    loaded.load_state({k: v.clone() for k, v in fitted.state_tensors().items()})
    a, b = fitted.score_samples(test)[name], loaded.score_samples(test)[name]
    assert a.shape == (len(test),) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_ocsvm_decision_function_is_scikit_learns(images) -> None:
    train, test = images
    det = PixelOCSVM().fit(train)
    svm = OneClassSVM(kernel="rbf", nu=0.1, gamma="scale").fit(train.flatten(1).double().numpy())
    expected = -svm.decision_function(test.flatten(1).double().numpy())
    np.testing.assert_allclose(det.anomaly_score(test).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_rot_scores_every_transformation_in_one_pass_as_one_at_a_time(images) -> None:
    train, test = images
    det = RotationDetector(RotConfig(width=4, epochs=1, batch_size=16)).fit(train[:32])
    ts = det._transforms()
    labels = _labels(ts, "rot+trans", list(range(len(ts))))
    expected = torch.zeros(20)
    with torch.no_grad():
        for t, transform in enumerate(ts):
            for lg, lb in zip(det.net_(apply(test[:20], transform)), labels, strict=True):
                expected -= F.log_softmax(lg, 1)[:, lb[t]]
    torch.testing.assert_close(det.anomaly_score(test[:20], batch_size=7), expected)


@pytest.mark.parametrize(
    ("name", "settings"),
    [("knn", {}), ("rot", {"epochs": 3, "lr": 0.05, "max_train": 120}), ("csi", {"epochs": 6})],
)
def test_detector_runs_every_method_and_saves_it(name, settings, task, tmp_path: Path) -> None:
    section = "train" if name == "csi" else name
    det = Detector(
        method=name, preset="tiny", progress=False, device="cpu", settings={section: settings}
    )
    det.fit(task)
    normality = det.score_samples(task.test_images)
    assert auroc(task.test_is_anomaly, -normality) > 0.6
    assert det.score_name_ == ("feat" if name == "csi" else name)
    det.save(tmp_path / name)
    loaded = Detector.load(tmp_path / name, device="cpu")
    # the same scores (up to the last bits that batch size changes in a convolution)
    np.testing.assert_allclose(
        loaded.score_samples(task.test_images[:30]), normality[:30], rtol=1e-5, atol=1e-5
    )
    assert loaded.threshold_ == det.threshold_ and loaded.method_.name == name
    if name in BASELINES:
        with pytest.raises(ConfigError, match="is a baseline"):
            det.model_  # noqa: B018


def test_baseline_settings_and_input_size() -> None:
    det = Detector(method="rot", preset="tiny", settings={"rot": {"epochs": 5}}, image_size=16)
    cfg, spec = det.resolve()
    assert isinstance(cfg, RotConfig) and cfg.epochs == 5 and cfg.width == 4
    assert spec == {"image_size": 16, "channels": 3}
    with pytest.raises(ConfigError, match="one score"):
        Detector(method="knn", score="feat").resolve()


def test_clone_rebuilds_an_unfitted_detector_with_the_same_parameters() -> None:
    det = Detector(
        method="rot", preset="tiny", seed=3, settings={"rot": {"epochs": 2}}, holdout=0.2
    )
    copy = clone(det)
    assert copy is not det and copy.get_params() == det.get_params()
    assert copy.get_params()["settings"] == {"rot": {"epochs": 2}} and not hasattr(copy, "method_")
    copy.set_params(seed=4, settings={"rot": {"width": 8}})
    assert (copy.seed, copy.settings["rot"]["width"]) == (4, 8)
    assert det.seed == 3 and det.settings == {"rot": {"epochs": 2}}


@pytest.mark.parametrize("name", ["knn", "deepsvdd", "full"])
def test_benchmark_cell_scores_are_the_detectors(name, task, tmp_path: Path) -> None:
    row = bench.run_cell(task, name, 1, "tiny", {}, tmp_path / "cell", progress=False)
    cell = np.load(tmp_path / "cell" / "test_scores.npz")
    det = Detector(
        method=name, preset="tiny", seed=1, holdout=0.0, deterministic=False, progress=False
    ).fit(to_model_input(task.train_images, 32, 3, "pad"))
    for score, normality in det.scores(task.test_images).items():
        np.testing.assert_allclose(cell[score], -normality, rtol=1e-6, atol=1e-6)
    assert row["n_train"] == det.n_train_ and row["score"] == det.score_name_
    assert det.threshold_ is None
    with pytest.raises(ConfigError, match="holdout=0"):
        det.predict(task.test_images[:2])
