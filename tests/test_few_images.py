"""The few-images regime: the benchmark's training-set size axis."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from contrasyn.api.detector import Detector
from contrasyn.cli import main
from contrasyn.data import load_dataset
from contrasyn.data.protocol import index_sha
from contrasyn.errors import ConfigError, DataError
from contrasyn.evaluation import bench

# a csi cell of two steps on 16-pixel images: the benchmark's path, in seconds
STEPS = {"train": {"steps": 2, "image_size": 16, "width": 2}}


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic")


def test_a_training_subset_is_seeded_nested_and_leaves_the_other_splits(synthetic) -> None:
    whole = bench.benchmark_task(synthetic, 0, 20)
    a50 = bench.benchmark_task(synthetic, 0, 20, train_images=50, seed=1)
    a100 = bench.benchmark_task(synthetic, 0, 20, train_images=100, seed=1)
    b50 = bench.benchmark_task(synthetic, 0, 20, train_images=50, seed=2)
    assert whole.train_index is None and len(whole.train_images) == 180
    assert len(a50.train_images) == 50 and len(np.unique(a50.train_index)) == 50
    np.testing.assert_array_equal(a50.train_images, whole.train_images[a50.train_index])
    assert set(a50.train_index) < set(a100.train_index)  # one seed's sizes are nested
    assert not np.array_equal(a50.train_index, b50.train_index)  # seeds draw their own
    again = bench.benchmark_task(synthetic, 0, 20, train_images=50, seed=1)
    np.testing.assert_array_equal(again.train_index, a50.train_index)
    for task in (a50, b50):  # validation and test splits as without the axis
        np.testing.assert_array_equal(task.val_images, whole.val_images)
        np.testing.assert_array_equal(task.test_images, whole.test_images)
    with pytest.raises(DataError, match="cannot train on 181 images; the class has 180"):
        bench.benchmark_task(synthetic, 0, 20, train_images=181)


def test_cells_at_a_size_train_on_their_seed_s_subset_and_pair(synthetic, tmp_path) -> None:
    out = tmp_path / "b"
    rows = bench.run_benchmark(
        synthetic, [0], ["knn", "csi"], [0, 1], "tiny", STEPS, out, 20, False,
        log=lambda m: None, report=False, train_images=12,
    )  # fmt: skip
    assert len(rows) == 4
    assert {(r["n_train"], r["train_images"]) for r in rows} == {(12, 12)}
    for seed in (0, 1):
        subset = index_sha(bench.benchmark_task(synthetic, 0, 20, None, 12, seed).train_index)
        assert {r["train_subset"] for r in rows if r["seed"] == seed} == {subset}
    assert len({r["train_subset"] for r in rows}) == 2
    sha = bench.config_sha("csi", "tiny", STEPS)
    assert {r["config_sha"] for r in rows if r["method"] == "csi"} != {sha}
    # the whole class into the same folder is another configuration: refused, not mixed
    with pytest.raises(ConfigError, match="made with another configuration"):
        bench.run_benchmark(
            synthetic, [0], ["csi"], [0], "tiny", STEPS, out, 20, False,
            log=lambda m: None, report=False,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("method", "overrides", "remedy"),
    [
        ("csi", {}, r"give it steps \(--set train\.steps=N\) or a time budget"),
        ("rot", {}, r"give it steps \(--set rot\.steps=N\) or a time budget"),
        ("goad", {}, "it has no length in steps or time: leave it out"),
    ],
)
def test_a_size_refuses_a_length_in_epochs(method, overrides, remedy) -> None:
    with pytest.raises(ConfigError, match=f"{method} trains for .* epochs.*; {remedy}"):
        bench.check_lengths([method], "tiny", overrides, 50)


@pytest.mark.parametrize(
    "overrides",
    [{"train": {"steps": 5}}, {"train": {"time_budget": 60.0}}, {"rot": {"steps": 5}}],
)
def test_steps_or_a_time_budget_pass_at_a_size(overrides) -> None:
    methods = ["rot"] if "rot" in overrides else ["csi", "full"]
    bench.check_lengths([*methods, "knn", "ocsvm"], "tiny", overrides, 50)


def test_the_command_writes_a_folder_per_size(tmp_path: Path, capsys) -> None:
    out = tmp_path / "few"
    args = ["benchmark", "--dataset", "synthetic", "--preset", "tiny", "--classes", "1"]
    args += ["--methods", "knn", "--val-normal", "20", "--quiet", "--out", str(out)]
    assert main([*args, "--train-images", "10,30"]) == 0
    for size in (10, 30):
        text = (out / f"train-{size}/results.jsonl").read_text()
        rows = [json.loads(line) for line in text.splitlines()]
        assert [(r["n_train"], r["train_images"]) for r in rows] == [(size, size)]
    assert not (out / "results.jsonl").exists()
    assert main([*args, "--train-images", "10,0"]) == 2
    assert "--train-images takes comma-separated image counts of at least 1, got '10,0'" in (
        capsys.readouterr().err
    )


def _fits_on_50_images(method: str, reps: int = 200):
    """``reps`` fits of ``method`` on 50 noise images, each with the rate it flags among 4,000
    new images of the same source: (calibrations, realised rates, warnings)."""
    rng = np.random.default_rng(0)
    cals, realised, warned = [], [], []
    for rep in range(reps):
        normal = rng.beta(2.0, 5.0, size=(50 + 4000, 1, 8, 8)).astype(np.float32)
        det = Detector(method=method, preset="tiny", image_size=8, channels=1, seed=rep)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            det.fit(normal[:50])
        warned.append([str(w.message) for w in caught])
        cals.append(det.calibration_)
        realised.append(float(np.mean(det.predict(normal[50:]) == -1)))
    return cals, np.array(realised), warned


def test_a_fit_on_50_images_states_a_false_alarm_interval_that_holds() -> None:
    """A method that learns from its images (OC-SVM here) holds 5 of 50 out for the
    threshold, too few for a 5% rate (the conformal rule needs 19): the fit says so in its
    warning, places the threshold at the highest held-out score and states the 90% interval
    of the rate that gives. Over many fits the rate realised on new normal images lies
    inside the stated interval about 90% of the time, and averages the stated rate."""
    cals, realised, warned = _fits_on_50_images("ocsvm")
    assert {(c.n, c.rank, c.guaranteed, c.leave_one_out) for c in cals} == {(5, 5, False, False)}
    assert all(any("at least 19 held-out images are needed" in m for m in w) for w in warned)
    inside = [c.low <= r <= c.high for c, r in zip(cals, realised, strict=True)]
    assert 0.84 <= np.mean(inside) <= 0.96, np.mean(inside)
    assert abs(realised.mean() - cals[0].expected) < 0.03, (realised.mean(), cals[0].expected)


def test_knn_on_50_images_calibrates_leave_one_out_and_keeps_its_promise() -> None:
    """kNN only stores its images: all 50 enter the bank and each one's distance to the
    other 49 calibrates the threshold, so a 5% rate is guaranteed (rank 49 of 50, expected
    2 / 51) without a warning, and over many fits the realised rate lies inside the stated
    90% interval about 90% of the time (held out, the same fits had 5 scores and an
    expected 1 / 6)."""
    cals, realised, warned = _fits_on_50_images("knn")
    # rank 49, or 50 where the two largest tie (two images each other's nearest neighbour)
    assert {(c.n, c.guaranteed, c.leave_one_out) for c in cals} == {(50, True, True)}
    assert {c.rank for c in cals} == {49, 50}
    assert np.mean([c.rank == 49 for c in cals]) > 0.5
    assert not any(warned)
    inside = [c.low <= r <= c.high for c, r in zip(cals, realised, strict=True)]
    assert 0.84 <= np.mean(inside) <= 0.96, np.mean(inside)
    # conservative by at most one neighbour in 50: the mean rate near, not above, 2 / 51
    assert abs(realised.mean() - 2 / 51) < 0.01, realised.mean()
    assert realised.mean() <= 0.05


@pytest.mark.parametrize("k", [1, 2])
def test_leave_one_out_scores_are_those_of_a_bank_without_the_image(k: int) -> None:
    rng = np.random.default_rng(1)
    normal = rng.random((30, 8, 8)).astype(np.float32)
    normal[7] = normal[3]  # a twin: its leave-one-out distance is 0, not its own row's
    kw = {"method": "knn", "preset": "tiny", "image_size": 8, "channels": 1}
    det = Detector(**kw, settings={"knn": {"k": k}}).fit(normal)
    assert det.leave_one_out_ and det.method_.bank_rows == det.n_train_ == 30
    for i in (0, 3, 29):
        without = Detector(**kw, settings={"knn": {"k": k}}, holdout=0)
        without.fit(np.delete(normal, i, 0))
        expected = without.anomaly_score(normal[i : i + 1])[0]
        # the one inner-product search leaves ~sqrt(fp32 eps * |x|^2) ~ 3e-3 near 0
        assert -det.holdout_scores_[i] == pytest.approx(expected, abs=5e-3)
    assert (abs(det.holdout_scores_[3]) < 5e-3) == (k == 1)


def test_a_leave_one_out_threshold_saves_loads_and_is_checked(tmp_path: Path) -> None:
    from contrasyn.api.detector import Detector
    from contrasyn.errors import CheckpointError

    normal = np.random.default_rng(2).random((40, 8, 8)).astype(np.float32)
    det = Detector(method="knn", preset="tiny", image_size=8, channels=1).fit(normal)
    det.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["calibration"]["scores"] == "leave-one-out" and meta["n_holdout"] == 40
    loaded = Detector.load(tmp_path / "m")
    assert loaded.leave_one_out_ and loaded.calibration_ == det.calibration_
    assert "40 training images each scored against the others" in loaded.calibration_.describe()
    assert "--holdout" not in loaded.calibration_.advice()  # the holdout does not matter
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(tmp_path / "m" / "model.safetensors"))
    for scores, holdout, words in (
        ("guessed", 40, "calibration.scores must be held-out or leave-one-out, got 'guessed'"),
        ("leave-one-out", 39, "39 leave-one-out scores for 40 training images"),
    ):
        # model.json and its copy in the weights file edited together, as a user could
        bad = json.loads(json.dumps(meta))
        bad["calibration"]["scores"], bad["n_holdout"] = scores, holdout
        text = json.dumps(bad)
        held = {**tensors, "holdout_scores": tensors["holdout_scores"][:holdout]}
        save_file(held, str(tmp_path / "bad.safetensors"), metadata={"contrasyn": text})
        (tmp_path / "bad.safetensors").replace(tmp_path / "m" / "model.safetensors")
        (tmp_path / "m" / "model.json").write_text(text)
        with pytest.raises(CheckpointError, match=words):
            Detector.load(tmp_path / "m")
    # a bank that is a subsample, or too small for k neighbours besides the image: held out
    sub = Detector(method="knn", preset="tiny", image_size=8, channels=1,
                   settings={"knn": {"max_train": 20}}).fit(normal)  # fmt: skip
    assert not sub.leave_one_out_ and sub.calibration_.n == 4 and sub.method_.bank_rows == 20
    with pytest.warns(UserWarning, match="with 1 held-out image"):
        few = Detector(method="knn", preset="tiny", image_size=8, channels=1,
                       settings={"knn": {"k": 3}}).fit(normal[:3, None])  # fmt: skip
    assert not few.leave_one_out_ and few.method_.bank_rows == 2
    # a held-out calibration (a method that trains) saves as one
    with pytest.warns(UserWarning, match="with 4 held-out images"):
        ocsvm = Detector(method="ocsvm", preset="tiny", image_size=8, channels=1).fit(normal)
    assert not ocsvm.leave_one_out_ and ocsvm.calibration_.n == 4
    assert ocsvm.calibration_.as_dict()["scores"] == "held-out"


@pytest.mark.parametrize("n", [50, 200, 6000])
def test_the_default_at_every_size_is_the_validation_winner_csi(n: int) -> None:
    """At 50 images `full` tied `csi` on validation (+0.0001 [-0.0028, +0.0031], 30 cells,
    benchmarks/results/README.md), its steps costing more than twice `csi`'s, and at 200 it
    lost (-0.0093 [-0.0146, -0.0041], 30 cells), so the default trains `csi`, without the
    generative side, at every size: a fit of a few images must not switch to the paper's
    method, nor run its generative networks. At 50 images the validation winner is `csi`
    under the preset's `feat+pix` (0.9344; minus Rot+Trans +0.0041 [+0.0003, +0.0079], 30
    cells), the score the default keeps at every size. At 200 images `csi` is the validation
    winner again (0.9379; Rot+Trans 0.9354, `full` 0.9285), there under `feat+head+pix` in
    3-minute fp32 fits; the default's ten-minute fits keep `feat+pix`, which wins at that
    length on digits."""
    plan = Detector().plan(n)
    assert plan.config.train.method == "csi"
    assert plan.config.score.score == "feat+pix"
    assert plan.config.train.time_budget == 600
