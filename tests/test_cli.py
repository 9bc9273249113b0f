"""The command line end to end on the generated dataset, and the benchmark harness behind it."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

import contrasyn.evaluation.bench as bench
from contrasyn.cli import main

SPEC_COLUMNS = [
    "dataset",
    "method",
    "normal_class",
    "seed",
    "preset",
    "auroc",
    "aupr",
    "fpr95",
    "train_seconds",
    "score_seconds",
    "n_train",
    "n_test",
]
# the tiny preset, made smaller still so the run takes seconds on a shared 2-core machine
FAST = [
    "--set",
    "train.epochs=1",
    "--set",
    "train.image_size=16",
    "--set",
    "train.width=2",
    "--set",
    "train.max_train=32",
]


def _bench_args(out: Path, classes: str = "0", methods: str = "knn,csi") -> list[str]:
    return [
        "benchmark",
        "--dataset",
        "synthetic",
        "--preset",
        "tiny",
        "--classes",
        classes,
        "--methods",
        methods,
        "--out",
        str(out),
        "--val-normal",
        "20",
        "--quiet",
        *FAST,
    ]


def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    assert main(_bench_args(out)) == 0
    return out


def test_benchmark_writes_results(bench_out: Path) -> None:
    rows = _csv(bench_out / "results.csv")
    header = list(rows[0])
    assert header[:5] == SPEC_COLUMNS[:5]
    assert set(SPEC_COLUMNS) <= set(header)
    assert [
        (r["dataset"], r["method"], r["normal_class"], r["seed"], r["preset"]) for r in rows
    ] == [
        ("synthetic", "knn", "0", "0", "tiny"),
        ("synthetic", "csi", "0", "0", "tiny"),
    ]
    for r in rows:
        for key in ("auroc", "aupr", "fpr95"):
            assert 0.0 <= float(r[key]) <= 1.0
        assert float(r["train_seconds"]) >= 0 and float(r["score_seconds"]) >= 0
        assert int(r["n_test"]) == 600  # the whole synthetic test split
    knn, csi = rows
    assert int(knn["n_train"]) == 200 - 20  # class 0 minus the held-out validation images
    assert int(csi["n_train"]) == 32  # train.max_train
    assert float(knn["auroc"]) > 0.7  # raw pixels are well above chance on this data
    for name in ("paper", "csi", "feat"):
        assert 0.0 <= float(csi[f"auroc_{name}"]) <= 1.0
        assert 0.0 <= float(csi[f"val_auroc_{name}"]) <= 1.0
    assert csi["score"] == "feat" and float(csi["auroc"]) == float(csi["auroc_feat"])
    # JSON lines hold the same rows
    jsonl = [json.loads(x) for x in (bench_out / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in jsonl] == ["knn", "csi"]
    assert jsonl[1]["auroc"] == pytest.approx(float(csi["auroc"]))
    assert "triangle_up" in (bench_out / "table.md").read_text()


def test_benchmark_rows_record_what_they_were_computed_with(bench_out: Path) -> None:
    import torch

    rows = [json.loads(x) for x in (bench_out / "results.jsonl").read_text().splitlines()]
    for r in rows:  # the tiny preset trains in fp32; knn never uses bf16
        assert (r["precision"], r["device"], r["torch"]) == ("fp32", "cpu", torch.__version__)
        assert r["machine"] == bench._cpu_model()


def test_benchmark_refuses_a_folder_computed_in_another_precision(
    bench_out: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Where this machine would compute csi in bf16, the folder's fp32 csi rows are other
    cells: resuming is refused in one line, before anything is written; knn alone resumes."""
    import shutil

    from contrasyn.methods.csi import CSIFamily

    out = tmp_path / "copy"
    shutil.copytree(bench_out, out)
    monkeypatch.setattr(CSIFamily, "precision", property(lambda self: "bf16"))
    before = (out / "environment.json").read_text()
    assert main(_bench_args(out)) == 2
    err = capsys.readouterr().err
    assert "holds 'tiny' csi results computed in fp32; here csi computes in bf16" in err
    assert (out / "environment.json").read_text() == before
    assert main(_bench_args(out, methods="knn")) == 0


def test_benchmark_run_folder(bench_out: Path) -> None:
    run = bench_out / "runs" / "synthetic" / "csi" / "class0" / "seed0"
    for name in (
        "config.json",
        "last.json",
        "last.safetensors",
        "metrics.jsonl",
        "test_scores.npz",
    ):
        assert (run / name).is_file(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["epochs"] == 1 and cfg["train"]["width"] == 2 and cfg["train"]["seed"] == 0
    assert (bench_out / "preset-tiny.json").is_file()


def test_rerun_skips_done_cells(bench_out: Path, monkeypatch) -> None:
    before = (bench_out / "results.jsonl").read_text()
    calls = []

    def must_not_run(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr(bench, "run_cell", must_not_run)
    t0 = time.perf_counter()
    assert main(_bench_args(bench_out)) == 0
    assert time.perf_counter() - t0 < 10
    assert calls == []
    assert (bench_out / "results.jsonl").read_text() == before
    assert len(_csv(bench_out / "results.csv")) == 2


def test_rerun_with_more_cells_runs_only_the_new_ones(
    bench_out: Path, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "copy"
    out.mkdir()
    for name in ("results.jsonl", "results.csv"):
        (out / name).write_bytes((bench_out / name).read_bytes())
    real, ran = bench.run_cell, []

    def counting(task, method, *args, **kwargs):
        ran.append((task.normal_classes, method))
        return real(task, method, *args, **kwargs)

    monkeypatch.setattr(bench, "run_cell", counting)
    assert main(_bench_args(out, classes="0,1", methods="knn")) == 0
    assert ran == [((1,), "knn")]
    rows = _csv(out / "results.csv")
    assert [(r["method"], r["normal_class"]) for r in rows] == [
        ("knn", "0"),
        ("csi", "0"),
        ("knn", "1"),
    ]


def test_benchmark_runs_every_baseline(tmp_path: Path) -> None:
    out = tmp_path / "baselines"
    methods = "knn,ocsvm,deepsvdd,rot,goad"
    assert main(_bench_args(out, methods=methods)) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["method"] for r in rows] == methods.split(",")
    for r in rows:
        assert r["score"] == r["method"] and 0 <= float(r["auroc"]) <= 1
        assert 0 <= float(r[f"val_auroc_{r['method']}"]) <= 1
    # the tiny preset's settings, recorded beside each learned baseline's scores
    settings = json.loads((out / "runs/synthetic/deepsvdd/class0/seed0/settings.json").read_text())
    assert settings["epochs"] == 3 and settings["max_train"] == 200
    assert {r["n_train"] for r in rows if r["method"] == "goad"} == {"50"}
    # each method's rows carry a hash of what they depend on: another CSI width leaves every
    # baseline's rows valid (resumed, nothing to do); another input size does not
    assert main([*_bench_args(out, methods="knn,ocsvm,goad"), "--set", "train.width=4"]) == 0
    assert main([*_bench_args(out, methods="knn"), "--set", "train.channels=1"]) == 2
    assert main([*_bench_args(out, methods="goad"), "--set", "goad.epochs=2"]) == 2


def test_demo_falls_back_to_digits_and_writes_the_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--root", str(tmp_path / "no-fmnist"), "--out", str(out), "--quiet"]
    assert main([*args, "--methods", "knn,ocsvm"]) == 0
    text = capsys.readouterr().out
    assert "using digits" in text and "| class | knn | ocsvm |" in text
    assert str(out / "report.html") in text and (out / "report.html").is_file()
    rows = _csv(out / "results.csv")
    assert [(r["method"], r["normal_class"], r["preset"]) for r in rows] == [
        ("knn", "0", "demo"),
        ("ocsvm", "0", "demo"),
        ("knn", "1", "demo"),
        ("ocsvm", "1", "demo"),
    ]
    assert all(float(r["auroc"]) > 0.8 for r in rows)  # digits 0 and 1: easy in raw pixels


def test_benchmark_verbose_prints_losses(tmp_path: Path, capsys) -> None:
    args = [a for a in _bench_args(tmp_path / "v", methods="deepsvdd,csi") if a != "--quiet"]
    assert main([*args, "--verbose"]) == 0
    out = capsys.readouterr().out
    # the tiny preset: Deep SVDD pre-trains 1 epoch and trains 3; CSI logs every step
    assert "deepsvdd losses: pretrain 1 " in out and ", train 3 " in out
    assert "csi step 1/2 epoch " in out and "csi step 2/2 epoch 1.00" in out
    with pytest.raises(SystemExit) as stop:
        main([*args, "--verbose", "--quiet"])
    assert stop.value.code == 2


def test_data_info_digits(capsys) -> None:
    assert main(["data", "info", "digits"]) == 0
    text = capsys.readouterr().out
    assert "digits" in text
    assert "classes      10" in text
    lines = [
        line.split()
        for line in text.splitlines()
        if "train" in line and "test" in line and line.startswith("  ")
    ]
    assert [parts[1] for parts in lines] == [str(d) for d in range(10)]


def test_data_list(capsys) -> None:
    assert main(["data", "list"]) == 0
    names = capsys.readouterr().out.split()
    assert "synthetic" in names and "digits" in names and "fashion-mnist" in names


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--dataset", "nope"], "nope"),
        (["--classes", "a,b"], "--classes"),
        (["--classes", "9"], "out of range"),
        (["--methods", "knn,magic"], "magic"),
        (["--set", "train.epochs"], "--set"),
        (["--set", "train.epoch=1"], "epoch"),
        (["--preset", "huge"], "huge"),
        (["--config", "/nonexistent/cfg.yaml"], "not found"),
        (["--device", "nonsense"], "not a device name"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--device", "cpu", "--set", "train.device=mps"], "contradicts"),
        (["--set", "train.device=nonsense"], "not a device name"),
        (["--set", "model.depth=2"], "unknown override section"),
    ],
)
def test_input_errors_exit_2_with_one_line(tmp_path: Path, capsys, args, needle) -> None:
    argv = [
        "benchmark",
        "--dataset",
        "synthetic",
        "--preset",
        "tiny",
        "--classes",
        "0",
        "--methods",
        "knn",
        "--out",
        str(tmp_path / "out"),
        "--val-normal",
        "20",
        "--quiet",
        *args,
    ]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("contrasyn: error:") and needle in err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out" / "results.csv").exists()


def test_data_info_unknown_dataset(capsys) -> None:
    assert main(["data", "info", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown dataset" in err


def test_argparse_errors_and_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["benchmark", "--dataset", "synthetic"])  # --out is required
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert "contrasyn" in capsys.readouterr().out


@pytest.mark.parametrize("classes", [",", ""])
def test_empty_classes_exit_2(tmp_path: Path, capsys, classes: str) -> None:
    argv = [
        "benchmark",
        "--dataset",
        "synthetic",
        "--classes",
        classes,
        "--methods",
        "knn",
        "--out",
        str(tmp_path / "out"),
        "--val-normal",
        "20",
        "--quiet",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("contrasyn: error:") and "--classes" in err


def test_benchmark_device_flag_sets_every_cell_device(tmp_path: Path) -> None:
    out = tmp_path / "cpu"
    assert main([*_bench_args(out, methods="knn"), "--device", "cpu"]) == 0
    env = json.loads((out / "environment.json").read_text())
    assert env[-1]["device"] == "cpu"
    assert json.loads((out / "preset-tiny.json").read_text())["train"]["device"] == "cpu"
    # the same results: --device is not part of a cell's configuration, so a rerun resumes
    assert main([*_bench_args(out, methods="knn"), "--set", "train.device=cpu"]) == 0
    assert len(_csv(out / "results.csv")) == 1


def test_threads_flag_sets_torch_threads_for_the_run(tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # so that --threads 1 is a change wherever the suite runs
    try:
        assert main([*_bench_args(tmp_path / "t", methods="knn"), "--threads", "1"]) == 0
        env = json.loads((tmp_path / "t" / "environment.json").read_text())
        assert env[-1]["torch_threads"] == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def gan_bench(tmp_path_factory) -> Path:
    """A csi+g run at the smallest settings, for `contrasyn quality`."""
    out = tmp_path_factory.mktemp("gan")
    assert main(_bench_args(out, methods="csi+g")) == 0
    return out


def test_quality_takes_the_folder_positionally(gan_bench: Path, capsys) -> None:
    val = ["--val-normal", "20"]  # as the benchmark was given
    assert main(["quality", str(gan_bench), *val]) == 0
    captured = capsys.readouterr()
    assert str(gan_bench / "quality.csv") in captured.out and "deprecated" not in captured.err
    rows = _csv(gan_bench / "quality.csv")
    assert [r["method"] for r in rows] == ["csi+g"] and float(rows[0]["fd_rand"]) > 0
    # the old spelling still works, with a warning
    assert main(["quality", "--results", str(gan_bench), *val]) == 0
    assert "--results is deprecated" in capsys.readouterr().err
    assert main(["quality", str(gan_bench), "--results", str(gan_bench), *val]) == 0


def test_quality_folder_errors(tmp_path: Path, capsys) -> None:
    assert main(["quality"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "contrasyn: error: quality needs the benchmark folder: contrasyn quality DIR"
    assert main(["quality", str(tmp_path / "a"), "--results", str(tmp_path / "b")]) == 2
    assert "two benchmark folders given" in capsys.readouterr().err
    assert main(["quality", str(tmp_path)]) == 2
    assert "no trained csi+g or full runs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["quality", "--help"])
    assert info.value.code == 0
    assert "--results" not in capsys.readouterr().out  # deprecated: read, not shown


def test_benchmark_prints_intervals_and_paired_differences(tmp_path: Path, capsys) -> None:
    args = [a for a in _bench_args(tmp_path / "s", methods="knn,ocsvm") if a != "--quiet"]
    args += ["--seeds", "0,1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Mean AUROC over classes [95% interval; classes fixed, seeds as replicates]" in out
    assert "| knn | fp32 | 2 | 0." in out and "| A \\ B | knn | ocsvm |" in out
    table = (tmp_path / "s" / "table.md").read_text()
    assert "paired differences" in table and "| ocsvm |" in table


def test_benchmark_no_report_leaves_the_report_alone(tmp_path: Path) -> None:
    out = tmp_path / "shared"
    assert main([*_bench_args(out, methods="knn"), "--no-report"]) == 0
    assert (out / "results.jsonl").is_file() and not (out / "report.html").exists()


def _writes_lock_held(out: Path) -> bool:
    """Whether some holder has ``out``'s shared-writes lock (flock: another open of the file,
    even in this process, cannot take it)."""
    from filelock import FileLock, Timeout

    from contrasyn.api.lock import WRITES_LOCK_NAME

    probe = FileLock(str(out / WRITES_LOCK_NAME), timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return True
    probe.release()
    return False


def test_benchmark_rewrites_shared_files_only_under_the_writes_lock(
    tmp_path: Path, monkeypatch
) -> None:
    """Several processes may fill one folder (one per group of classes): each reads and
    rewrites results.jsonl, the tables and environment.json holding the folder's writes
    lock, and trains without it."""
    out = tmp_path / "b"
    seen: list[tuple[str, bool]] = []

    def spy(name, real):
        def wrapper(*args, **kwargs):
            seen.append((name, _writes_lock_held(out)))
            return real(*args, **kwargs)

        monkeypatch.setattr(bench, name, wrapper)

    for name in ("read_rows", "write_tables", "environment", "run_cell"):
        spy(name, getattr(bench, name))
    assert main(_bench_args(out, classes="0,1", methods="knn")) == 0
    assert [name for name, _ in seen if name == "run_cell"] == ["run_cell"] * 2
    assert {name for name, _ in seen} == {"read_rows", "write_tables", "environment", "run_cell"}
    assert all(held == (name != "run_cell") for name, held in seen), seen
    assert len(json.loads((out / "environment.json").read_text())) == 1
    assert len(_csv(out / "results.csv")) == 2


def test_benchmark_keeps_the_row_of_a_process_that_finished_the_cell_first(
    tmp_path: Path, monkeypatch
) -> None:
    from contrasyn.data import load_dataset

    out = tmp_path / "b"
    real = bench.run_cell

    def raced(*args, **kwargs):
        row = real(*args, **kwargs)
        key = {"dataset": "synthetic", "method": "knn", "normal_class": 0, "seed": 0}
        other = {**key, "preset": "tiny", **row, "auroc": 0.123, "note": "the other process"}
        with (out / "results.jsonl").open("a") as f:
            f.write(json.dumps(other) + "\n")
        return row

    monkeypatch.setattr(bench, "run_cell", raced)
    lines: list[str] = []
    rows = bench.run_benchmark(
        load_dataset("synthetic"), [0], ["knn"], [0], "tiny", {}, out, 20, False,
        log=lines.append, report=False,
    )  # fmt: skip
    assert [r.get("note") for r in rows] == ["the other process"]
    assert any("another process finished this cell first" in line for line in lines)


def test_shared_writes_waits_then_names_the_lock(tmp_path: Path) -> None:
    from filelock import FileLock

    from contrasyn.api.lock import WRITES_LOCK_NAME, shared_writes
    from contrasyn.errors import LockError

    holder = FileLock(str(tmp_path / WRITES_LOCK_NAME), timeout=0)
    holder.acquire()
    start = time.perf_counter()
    with pytest.raises(LockError, match=f"{WRITES_LOCK_NAME}: still held by another process"):
        with shared_writes(tmp_path, timeout=0.3):
            pass
    assert time.perf_counter() - start >= 0.3  # it waited before giving up
    holder.release()
    with shared_writes(tmp_path):
        assert _writes_lock_held(tmp_path)
    assert not _writes_lock_held(tmp_path)


def test_help_names_where_the_paper_preset_departs_from_the_paper(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "scored with feat, not eq. 11 (--set score.score=paper for eq. 11)" in text
    assert "F trained with CSI's LARS" in text and "bf16 where the hardware has it" in text
