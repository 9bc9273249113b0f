"""The few-images regime: the benchmark's training-set size axis."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

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


def test_a_fit_on_50_images_states_a_false_alarm_interval_that_holds() -> None:
    """50 images at the default holdout keep 5 for the threshold, too few for a 5% rate (the
    conformal rule needs 19): the fit says so in its warning, places the threshold at the
    highest held-out score and states the 90% interval of the rate that gives. Over many
    fits the rate realised on new normal images lies inside the stated interval about 90%
    of the time, and averages the stated expected rate."""
    from contrasyn.api.detector import Detector

    rng = np.random.default_rng(0)
    inside, realised, warned = [], [], []
    for rep in range(200):
        normal = rng.beta(2.0, 5.0, size=(50 + 4000, 1, 8, 8)).astype(np.float32)
        det = Detector(method="knn", preset="tiny", image_size=8, channels=1, seed=rep)
        with pytest.warns(UserWarning) as caught:
            det.fit(normal[:50])
        warned.append(str(caught[0].message))
        cal = det.calibration_
        assert (cal.n, cal.rank, cal.guaranteed) == (5, 5, False)
        rate = float(np.mean(det.predict(normal[50:]) == -1))
        realised.append(rate)
        inside.append(cal.low <= rate <= cal.high)
    assert all("at least 19 held-out images are needed" in w for w in warned)
    assert 0.84 <= np.mean(inside) <= 0.96, np.mean(inside)
    assert abs(np.mean(realised) - cal.expected) < 0.03, (np.mean(realised), cal.expected)
