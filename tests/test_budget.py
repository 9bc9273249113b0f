"""Fitting by the clock (contrasyn.budget): durations, the steps a budget buys, a budgeted fit
that repeats exactly from the length it wrote down, and the refusals."""

from __future__ import annotations

import json
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
import torch

import contrasyn.budget as budget
import contrasyn.methods.baselines.rot as rot_module
import contrasyn.methods.csi.trainer as trainer
from contrasyn.api.detector import Detector
from contrasyn.budget import Clock, format_seconds, parse_duration, steps_within
from contrasyn.cli import main
from contrasyn.errors import ConfigError

IMAGES = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(0))
TINY = {"image_size": 8, "channels": 1, "preset": "tiny", "progress": False, "holdout": 0.0}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("600", 600.0), (90, 90.0), ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0),
     ("1.5m", 90.0), (" 2M ", 120.0), (0.5, 0.5)],
)  # fmt: skip
def test_parse_duration(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "ten", "10x", "10m junk", "-5", "0", "0s", True, "nan"])
def test_parse_duration_refuses(bad) -> None:
    with pytest.raises(ConfigError, match="time budget must be"):
        parse_duration(bad)


def test_format_seconds() -> None:
    assert format_seconds(600) == "10:00" and format_seconds(61.4) == "1:01"
    assert format_seconds(-5) == "-0:05"


def test_steps_within_keeps_the_reserve_and_the_margin() -> None:
    # 600 s: 24 s margin (4%), 76 s of other work: 500 s of 0.5 s steps
    assert steps_within(600, 0.5, 76, 600) == 1000
    assert steps_within(600, 0.5, 76 + 0.5, 600) == 999
    with pytest.raises(ConfigError, match="too short for training csi on this machine") as e:
        steps_within(10, 1.0, 9.5, 10, what="training csi")
    assert "--set train.steps=N" in str(e.value)
    with pytest.raises(ConfigError, match=r"--set rot\.steps=N"):
        steps_within(10, 1.0, 9.5, 10, what="training rot", setting="rot.steps")


def test_clock_counts_down(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr(budget.time, "monotonic", lambda: now[0])
    clock = Clock.started(60, after_images=7)
    now[0] = 130.0
    assert clock.left() == 30.0 and clock.after_images == 7
    now[0] = 170.0
    assert clock.left() == -10.0


def _fixed_timings(monkeypatch, module, seconds: dict[str, float]) -> list[str]:
    """Every ``time_per_call`` in ``module`` answers from ``seconds`` by call order (the
    trainer: F's step, then the scoring pass), and the clock never moves."""
    calls: list[str] = []
    order = iter(seconds.values())

    def fake(fn, warm, timed):
        calls.append("call")
        for _ in range(warm + timed):
            fn()  # the probe still runs: it must leave the real run untouched
        return next(order)

    monkeypatch.setattr(module, "time_per_call", fake)
    monkeypatch.setattr(Clock, "left", lambda self: self.seconds)
    return calls


def test_the_budget_sets_the_steps_from_the_timings(monkeypatch) -> None:
    """One step 0.1 s and a scoring pass over a batch of 16 images 0.016 s: the 19
    training images are banked and 5 held out scored after training, and a 5 s save and a
    4% margin are kept."""
    _fixed_timings(monkeypatch, trainer, {"step": 0.1, "score": 0.016})
    det = Detector(method="csi", time_budget=20, **{**TINY, "holdout": 0.2}).fit(IMAGES)
    # 5 held out of 24: 19 train; reserve = (19 + 5) * 0.001 + 5; room = 20 - 5.024 - 0.8
    assert det.config_.train.steps == int((20 - 5.024 - 0.8) / 0.1) == 141
    assert det.config_.train.time_budget == 20.0
    assert det.method_.length == f"{det.config_.train.steps} steps"


def test_a_budgeted_fit_repeats_exactly_from_the_steps_it_chose() -> None:
    """Timing runs on throwaway copies and restores the RNG: the budgeted model is the one
    ``train.steps=N`` trains, weight for weight."""
    timed = Detector(method="csi", time_budget="6s", **TINY).fit(IMAGES)
    steps = timed.config_.train.steps
    assert steps >= 1
    again = Detector(method="csi", settings={"train": {"steps": steps}}, **TINY).fit(IMAGES)
    a, b = timed.method_.state_tensors(), again.method_.state_tensors()
    assert set(a) == set(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


class _StepClock:
    """``time`` for the trainer in which only F's steps take time: ``seconds`` each, the
    first two of training (after the timing beforehand) ``first``, as where kernels are
    built."""

    def __init__(self, monkeypatch, seconds: float, first: float | None = None) -> None:
        self.now, self.steps = 0.0, 0
        monkeypatch.setattr(trainer, "time", self)
        real_step = trainer.FStep.__call__

        def step(f_step, x, lr, name, where):
            self.steps += name != "a timing step"
            self.now += first if first is not None and self.steps <= 2 else seconds
            return real_step(f_step, x, lr, name, where)

        monkeypatch.setattr(trainer.FStep, "__call__", step)

    def perf_counter(self) -> float:
        return self.now


# 6 warm-up steps (24 images, batch 16: one step an epoch): re-timed after the 6th.
WARM6 = {"train": {"warmup_epochs": 6}}


def test_the_length_is_set_again_from_the_real_steps(monkeypatch, tmp_path: Path) -> None:
    """Timed beforehand at 0.01 s a step, the real steps take 0.25 s: at the end of the LR
    warm-up the length follows the real steps (the first 2, at 1 s, left out), and the
    scoring kept for afterwards grows by the same 25x; the new length is in the log and the
    config, and repeats the run weight for weight (the warm-up's rates do not depend on the
    length)."""
    _fixed_timings(monkeypatch, trainer, {"step": 0.01, "score": 0.016})
    _StepClock(monkeypatch, 0.25, first=1.0)
    det = Detector(method="csi", time_budget=20, checkpoint_dir=tmp_path, settings=WARM6, **TINY)
    det.fit(IMAGES)
    # scoring 24 images at 0.001 s, x25 = 0.6 s; room = 20 - 0.6 - 5 - 0.8 = 13.6 s: 54 more
    assert det.config_.train.steps == 6 + 54
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    retimed = [r for r in records if "retimed_steps" in r]
    first = int((20 - 5.024 - 0.8) / 0.01)  # the length timed beforehand
    assert retimed == [{"step": 5, "retimed_steps": 60, "timed_steps": first, "step_seconds": 0.25,
                        "timed_step_seconds": 0.01, "seconds": 3.0}]  # fmt: skip
    assert max(r["step"] for r in records if "loss" in r) == 59
    log = trainer.log_line("csi", 60, retimed[0])
    assert log == "csi step 6: 0.25 s a step (timed beforehand 0.01 s): 60 steps in all"
    monkeypatch.undo()
    again = Detector(method="csi", settings={"train": {"steps": 60, "warmup_epochs": 6}}, **TINY)
    a, b = det.method_.state_tensors(), again.fit(IMAGES).method_.state_tensors()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_steps_faster_than_timed_lengthen_the_run_with_a_slack(monkeypatch, tmp_path) -> None:
    """Timed at 0.5 s, the first length is 28 steps; the real steps take 0.1 s, so at the end
    of the warm-up the rest is planned at 0.11 s a step (10% slack): the clock of these tests
    stands still, so the room is the budget's 14.176 s, 128 steps after the 6 run. The new
    length is saved and logged."""
    _fixed_timings(monkeypatch, trainer, {"step": 0.5, "score": 0.016})
    _StepClock(monkeypatch, 0.1)
    det = Detector(method="csi", time_budget=20, checkpoint_dir=tmp_path, settings=WARM6, **TINY)
    assert int((20 - 5.024 - 0.8) / 0.5) == 28  # the length timed beforehand
    assert det.fit(IMAGES).config_.train.steps == 6 + int((20 - 5.024 - 0.8) / 0.11) == 134
    saved = json.loads((tmp_path / "last.json").read_text())
    assert saved["config"]["steps"] == 134 and saved["step"] == 134
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["retimed_steps"] for r in records if "retimed_steps" in r] == [134]


@pytest.mark.parametrize(
    ("measured", "timed", "planned"),
    [(0.25, 0.01, 0.25), (0.5, 0.5, 0.5), (0.1, 0.5, 0.11), (0.48, 0.5, 0.5),
     (0.1383, 0.1962, 0.15213)],
)  # fmt: skip
def test_planned_step_seconds(measured, timed, planned) -> None:
    """Slower than timed: the measured time; faster: 10% over it, never over the timed one."""
    assert budget.planned_step_seconds(measured, timed) == pytest.approx(planned)


def test_a_budget_spent_by_the_warm_up_ends_the_run_one_step_later(monkeypatch) -> None:
    _fixed_timings(monkeypatch, trainer, {"step": 0.01, "score": 0.016})
    _StepClock(monkeypatch, 5.0)
    det = Detector(method="csi", time_budget=20, settings=WARM6, **TINY).fit(IMAGES)
    assert det.config_.train.steps == 7


def test_a_warm_up_too_short_to_time_keeps_the_first_length(monkeypatch) -> None:
    """4 warm-up steps leave 2 to time, fewer than 3: the length timed beforehand stands."""
    _fixed_timings(monkeypatch, trainer, {"step": 0.1, "score": 0.016})
    _StepClock(monkeypatch, 5.0)
    warm4 = {"train": {"warmup_epochs": 4}}
    det = Detector(method="csi", time_budget=20, settings=warm4, **TINY).fit(IMAGES)
    assert det.config_.train.steps == int((20 - 5.024 - 0.8) / 0.1)


def test_rot_fits_by_the_clock_and_repeats(monkeypatch) -> None:
    timed = Detector(method="rot", time_budget="7s", **TINY).fit(IMAGES)
    steps = timed.config_.steps
    assert steps >= 1 and timed.method_.length_setting == f"rot.steps={steps}"
    again = Detector(method="rot", settings={"rot": {"steps": steps}}, **TINY).fit(IMAGES)
    for name, value in timed.method_.state_tensors().items():
        assert torch.equal(value, again.method_.state_tensors()[name]), name
    assert len(timed.method_.train_loss_) == len(again.method_.train_loss_)


def test_rot_steps_cut_the_last_epoch() -> None:
    """``rot.steps`` is the number of optimiser steps, whatever the epoch length (24
    images, batch 16: one step an epoch)."""
    det = Detector(method="rot", settings={"rot": {"steps": 3}}, **TINY).fit(IMAGES)
    assert len(det.method_.train_loss_) == 3


def test_budget_refusals() -> None:
    with pytest.raises(ConfigError, match="time budget and train.epochs both given"):
        given = {"train": {"epochs": 3}}
        Detector(method="csi", time_budget="1m", settings=given, **TINY).resolve()
    with pytest.raises(ConfigError, match="train.time_budget and train.steps both set"):
        Detector(
            method="csi", settings={"train": {"time_budget": 60, "steps": 3}}, **TINY
        ).resolve()
    with pytest.raises(ConfigError, match="method 'goad' cannot fit by the clock"):
        Detector(method="goad", time_budget="1m", **TINY).resolve()
    with pytest.raises(ConfigError, match="too short for training csi"):
        Detector(method="csi", time_budget=0.5, **TINY).fit(IMAGES)
    # kNN fits in no time: any budget is met
    assert Detector(method="knn", time_budget="1s", **TINY).fit(IMAGES).method_.length is None


def test_a_length_given_replaces_a_presets_budget() -> None:
    """A preset's budget gives way to epochs or steps set by the user (not silently kept)."""
    budgeted = Detector(method="csi", settings={"train": {"time_budget": 60}}, **TINY).resolve()
    assert budgeted.config.train.time_budget == 60
    cpu = Detector(method="csi", preset="cpu").resolve().config.train
    if cpu.time_budget is not None:
        given = Detector(method="csi", preset="cpu", settings={"train": {"epochs": 3}})
        assert given.resolve().config.train.time_budget is None


def test_resuming_keeps_the_length_the_budget_chose(tmp_path: Path, monkeypatch) -> None:
    """A rerun into the same checkpoint folder takes the steps saved there (timing again
    could choose another length and change the schedule half-way)."""
    det = Detector(method="csi", time_budget="6s", checkpoint_dir=tmp_path, **TINY).fit(IMAGES)
    steps = det.config_.train.steps

    def no_timing(self, score_passes):
        raise AssertionError("a resumed budgeted run must not time itself again")

    monkeypatch.setattr(trainer.TrainingRun, "time_steps", no_timing)
    again = Detector(method="csi", time_budget="6s", checkpoint_dir=tmp_path, **TINY).fit(IMAGES)
    assert again.config_.train.steps == steps


def test_cli_fit_by_the_clock(folders, tmp_path: Path) -> None:
    model = tmp_path / "model"
    out = StringIO()
    argv = ["fit", "--data", str(folders["good"]), "--out", str(model), "--preset", "tiny",
            "--method", "csi", "--image-size", "16", "--device", "cpu", "--time", "7s"]  # fmt: skip
    with redirect_stdout(out):
        assert main(argv) == 0
    saved = json.loads((model / "model.json").read_text())["config"]["train"]
    assert saved["time_budget"] == 7.0 and saved["steps"] >= 1
    text = out.getvalue()
    assert "as many steps as fit in 0:07" in text
    assert f"--set train.steps={saved['steps']} repeats it" in text
    assert "fitted by the clock in 0:" in text


def test_benchmark_time_is_in_every_cells_settings() -> None:
    from contrasyn.cli.bench import _with_time

    got = _with_time({"score": {"score": "feat"}}, "knn,csi,rot", "2m")
    assert got == {"score": {"score": "feat"}, "train": {"time_budget": 120.0},
                   "rot": {"time_budget": 120.0}}  # fmt: skip
    assert _with_time({"a": {}}, "csi", None) == {"a": {}}
    assert rot_module.RotConfig(time_budget=5).time_budget == 5
