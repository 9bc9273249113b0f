"""benchmarks/compare.py: methods from several folders side by side, and ``--common``, which
compares a folder that is still filling over the cells it has."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import compare  # noqa: E402


def _folder(
    path: Path, method: str, cells: dict[tuple[int, int], float], precision: str = "fp32"
) -> Path:
    path.mkdir()
    rows = [
        {"dataset": "d", "method": method, "normal_class": c, "seed": s, "class_name": f"c{c}",
         "auroc": v, "precision": precision}
        for (c, s), v in cells.items()
    ]  # fmt: skip
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_common_compares_only_the_cells_every_label_has(tmp_path: Path) -> None:
    # "a" has classes 0 and 1 on seeds 0 and 1; the still-filling "b" has class 0, seed 0.
    a = _folder(tmp_path / "a", "csi", {(0, 0): 0.9, (0, 1): 0.8, (1, 0): 0.5, (1, 1): 0.6})
    b = _folder(tmp_path / "b", "csi", {(0, 0): 0.95})
    adds = ["--add", f"{a}:csi", "--add", f"{b}:csi=long"]
    out = tmp_path / "all.md"
    compare.main([*adds, "--out", str(out)])
    assert "| csi | fp32 | 2 | 0.7000 [" in out.read_text()  # all four cells
    compare.main([*adds, "--common", "--out", str(out)])
    text = out.read_text()
    assert "Only the 1 cells every label has" in text
    assert "| csi | fp32 | 1 | 0.9000 (one seed: no interval) |" in text
    assert "| long | fp32 | 1 | 0.9500 (one seed: no interval) |" in text
    assert "| long | +0.0500" in text  # long - csi over the one shared cell


def test_val_auroc_compares_each_row_s_own_score_on_validation(tmp_path: Path) -> None:
    """Methods report different scores; ``--metric val_auroc`` reads each row's
    ``val_auroc_<its score>``, and a row without it is refused by name."""
    a = _folder(tmp_path / "a", "csi", {(0, 0): 0.9})
    b = _folder(tmp_path / "b", "rot", {(0, 0): 0.8})
    for folder, score, value in ((a, "feat+head+pix", 0.91), (b, "rot", 0.95)):
        row = json.loads((folder / "results.jsonl").read_text())
        row |= {"score": score, f"val_auroc_{score}": value, "val_auroc_feat": 0.1}
        (folder / "results.jsonl").write_text(json.dumps(row) + "\n")
    out = tmp_path / "val.md"
    compare.main(["--add", f"{a}:csi", "--add", f"{b}:rot", "--metric", "val_auroc",
                  "--out", str(out)])  # fmt: skip
    text = out.read_text()
    assert "| csi | fp32 | 1 | 0.9100 (one seed: no interval) |" in text
    assert "| rot | +0.0400 (one seed: no interval), 1/1 |" in text
    (b / "results.jsonl").write_text(json.dumps({**row, "score": "knn"}) + "\n")
    with pytest.raises(SystemExit, match="a rot row .class 0, seed 0. has no val_auroc_knn"):
        compare.main(["--add", f"{a}:csi", "--add", f"{b}:rot", "--metric", "val_auroc",
                      "--out", str(out)])  # fmt: skip


def test_a_label_given_twice_for_one_cell_is_refused(tmp_path: Path) -> None:
    a = _folder(tmp_path / "a", "csi", {(0, 0): 0.9})
    b = _folder(tmp_path / "b", "csi", {(0, 0): 0.95})
    with pytest.raises(SystemExit, match="a second"):
        compare.main(["--add", f"{a}:csi", "--add", f"{b}:csi", "--out", str(tmp_path / "x")])


def test_a_label_mixing_precisions_is_refused(tmp_path: Path) -> None:
    """bf16 and fp32 rows of one method are different cells: one label may not pair both."""
    a = _folder(tmp_path / "a", "csi", {(0, 0): 0.9}, precision="bf16")
    b = _folder(tmp_path / "b", "csi", {(1, 0): 0.95}, precision="fp32")
    with pytest.raises(SystemExit, match="label 'csi' mixes rows computed in bf16, fp32"):
        compare.main(["--add", f"{a}:csi", "--add", f"{b}:csi", "--out", str(tmp_path / "x")])
    compare.main(["--add", f"{a}:csi", "--add", f"{b}:csi=csi-fp32", "--out", str(tmp_path / "x")])
    assert "| csi | bf16 | 1 |" in (tmp_path / "x").read_text()


def test_a_deterministic_method_pairs_with_every_seed(tmp_path: Path) -> None:
    # knn: one run per class; csi: two seeds. knn - csi: 0.9 - (0.8, 0.7), 0.6 - (0.5, 0.4)
    a = _folder(tmp_path / "a", "knn", {(0, 0): 0.9, (1, 0): 0.6})
    b = _folder(tmp_path / "b", "csi", {(0, 0): 0.8, (0, 1): 0.7, (1, 0): 0.5, (1, 1): 0.4})
    adds = ["--add", f"{a}:knn", "--add", f"{b}:csi", "--out", str(tmp_path / "x")]
    compare.main([*adds, "--deterministic", "knn"])
    text = (tmp_path / "x").read_text()
    assert "knn: deterministic" in text
    assert "| knn | fp32 | 2 | 0.7500 [" in text  # the one run stands for both seeds
    assert "| knn | +0.1500 [" in text and "2/2" in text  # an interval from csi's two seeds
    compare.main(adds)  # without it only seed 0 pairs: no interval
    assert "| knn |  | +0.1000 (one seed: no interval), 2/2 |" in (tmp_path / "x").read_text()
    with pytest.raises(SystemExit, match="--deterministic csi: rows for several seeds"):
        compare.main([*adds, "--deterministic", "csi"])


RESULTS = BENCHMARKS / "results"


def test_the_committed_default_against_rot_with_classes_fixed(tmp_path: Path) -> None:
    """The README's verdict: on the committed folders the ``cpu`` default (``csi``) minus
    Rot+Trans is -0.0039 [-0.0069, -0.0009] (classes fixed, seeds as replicates, 20 degrees
    of freedom), 4 of 10 classes: Rot+Trans beats the default."""
    out = tmp_path / "c.md"
    compare.main([
        "--add", f"{RESULTS / 'fashion-mnist-seeds-cpu'}:csi",
        "--add", f"{RESULTS / 'fashion-mnist-variants-cpu'}:rot",
        "--pairs", "csi:rot", "--out", str(out),
    ])  # fmt: skip
    text = out.read_text()
    assert "| csi |  | -0.0039 [-0.0069, -0.0009], 4/10 |" in text
    assert "-0.0039 [-0.0069, -0.0009] (30 cells, 20 degrees of freedom; 4 of 10" in text
    assert "| csi | bf16 | 3 | 0.9358 [" in text and "| rot | fp32 | 3 | 0.9397 [" in text


def test_record_precision_reads_the_machine_of_the_invocation_that_ran_each_row(
    tmp_path: Path,
) -> None:
    """benchmarks/record_precision.py: the earliest environment entry whose command covers a
    row is the one that computed it; an entry without a CPU model is matched by platform to a
    speed measurement; ``auto`` is bf16 only where bf16 was native; a baseline is fp32."""
    import record_precision

    folder = tmp_path / "f"
    cells = [("csi", 0, 0), ("csi", 0, 1), ("rot", 0, 1)]
    rows = [
        {"dataset": "d", "method": m, "normal_class": c, "seed": s, "preset": "cpu",
         "score": m, "auroc": 0.9, "aupr": 0.9, "fpr95": 0.1, "auroc_per_class_mean": 0.9,
         "train_seconds": 1.0, "score_seconds": 1.0}
        for m, c, s in cells
    ]  # fmt: skip
    folder.mkdir()
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for m, c, s in cells:
        run = folder / "runs" / "d" / m / f"class{c}" / f"seed{s}"
        run.mkdir(parents=True)
        if m == "csi":
            (run / "config.json").write_text(json.dumps({"train": {"precision": "auto"}}))

    def entry(seeds: str, methods: str, platform: str, cpu: str | None) -> dict:
        command = f"contrasyn benchmark --classes all --methods {methods} --seeds {seeds}"
        return {"command": command, "platform": platform, "cpu": cpu, "device": "cpu",
                "versions": {"torch": "2.13.0+cpu"}}  # fmt: skip

    old, new = "Linux-old", "Linux-new"
    entries = [
        entry("0", "csi", old, None),  # before the cpu field: matched by platform
        entry("0,1", "csi,rot", new, "AMD EPYC (avx2 avx512f avx512_bf16)"),
    ]
    (folder / "environment.json").write_text(json.dumps(entries))
    measured = {old: {"platform": old, "bf16_native": False, "cpu_capability": "AVX2"}}
    assert record_precision.record(folder, measured, None) == 3
    got = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]
    assert [r["precision"] for r in got] == ["fp32", "bf16", "fp32"]
    assert got[0]["machine"].startswith("AVX2 CPU, no native bf16 (model not recorded")
    assert got[1]["machine"] == got[2]["machine"] == "AMD EPYC (avx2 avx512f avx512_bf16)"
    assert {(r["device"], r["torch"]) for r in got} == {("cpu", "2.13.0+cpu")}
    assert record_precision.record(folder, measured, None) == 0  # recorded rows stay
    # a row no entry covers needs an entry named as alike
    (folder / "environment.json").write_text(json.dumps(entries[:1]))
    for r in got:
        del r["precision"]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in got))
    with pytest.raises(SystemExit, match="no environment.json entry runs csi class 0 seed 1"):
        record_precision.record(folder, measured, None)
    assert record_precision.record(folder, measured, None, like=0) == 3


def test_a_row_is_taken_under_another_score_it_computed(tmp_path: Path) -> None:
    """``csi@feat+pix=default`` pairs the rows' ``auroc_feat+pix`` (and on validation their
    ``val_auroc_feat+pix``) beside the same rows as run; a row without the score is refused."""
    a = _folder(tmp_path / "a", "csi", {(0, 0): 0.9, (0, 1): 0.8})
    rows = [json.loads(line) for line in (a / "results.jsonl").read_text().splitlines()]
    for row, other in zip(rows, (0.95, 0.84), strict=True):
        row |= {"score": "feat+head+pix", "auroc_feat+pix": other, "aupr": 0.5,
                "val_auroc_feat+head+pix": 0.7, "val_auroc_feat+pix": other - 0.1}  # fmt: skip
    (a / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "x.md"
    compare.main(["--add", f"{a}:csi=run,csi@feat+pix=default", "--out", str(out)])
    text = out.read_text()
    assert "| default | fp32 | 2 | 0.8950 [" in text and "| run | fp32 | 2 | 0.8500 [" in text
    assert "| default | +0.0450 [" in text  # default - run, over both cells
    compare.main(["--add", f"{a}:csi@feat+pix", "--metric", "val_auroc", "--out", str(out)])
    assert "| csi@feat+pix | fp32 | 2 | 0.7950 [" in out.read_text()
    rows[1].pop("auroc_feat+pix")
    (a / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit, match="a csi row .class 0, seed 1. has no auroc_feat\\+pix"):
        compare.main(["--add", f"{a}:csi@feat+pix", "--out", str(out)])


def test_speed_gives_each_label_s_median_fit_and_scoring_rate(tmp_path: Path) -> None:
    """``--speed``: the medians of ``train_seconds`` and ``n_test / score_seconds`` per label,
    each deterministic run counted once (not once per seed it is paired with), and a row
    without timings left out of the medians rather than read as zero."""
    a = _folder(tmp_path / "a", "csi", {(0, 0): 0.9, (0, 1): 0.8, (1, 0): 0.7})
    b = _folder(tmp_path / "b", "knn", {(0, 0): 0.6, (1, 0): 0.5})
    timings = {"a": [(100.0, 10.0), (300.0, 20.0), (200.0, 40.0)], "b": [(1.0, 5.0), None]}
    for folder in (a, b):
        rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
        for row, t in zip(rows, timings[folder.name], strict=True):
            row["machine"] = f"cpu-{folder.name}"
            if t is not None:
                row |= {"train_seconds": t[0], "score_seconds": t[1], "n_test": 1000}
        (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "speed.md"
    compare.main(["--add", f"{a}:csi", "--add", f"{b}:knn", "--deterministic", "knn",
                  "--speed", "--out", str(out)])  # fmt: skip
    text = out.read_text()
    assert "| csi | 3 | 200.0 | 50 | cpu-a |" in text  # 1000/20 = 50 is the median rate
    assert "| knn | 2 | 1.0 | 200 | cpu-b |" in text  # the untimed row is left out
    compare.main(["--add", f"{a}:csi", "--out", str(out)])
    assert "What the runs cost" not in out.read_text()
