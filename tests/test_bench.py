"""The benchmark tables computed from hand-made rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from contrasyn.errors import ConfigError
from contrasyn.evaluation import bench
from contrasyn.evaluation.results import (
    markdown_table,
    mean_interval,
    paired,
    paired_class_table,
    read_jsonl,
    read_rows,
    summary_table,
)
from contrasyn.methods.presets import get_preset


def _row(method: str, c: int, seed: int, auroc: float, **extra) -> dict:
    return {
        "dataset": "d",
        "method": method,
        "normal_class": c,
        "seed": seed,
        "preset": "p",
        "class_name": f"c{c}",
        "score": extra.pop("score", method),
        "auroc": auroc,
        "aupr": 0.5,
        "fpr95": 0.25,
        "auroc_per_class_mean": auroc,
        "train_seconds": 2.0,
        "score_seconds": 1.0,
        **extra,
    }


ROWS = [
    _row("knn", 0, 0, 0.80),
    _row("knn", 1, 0, 0.90),
    _row(
        "csi",
        0,
        0,
        0.70,
        score="feat",
        auroc_feat=0.70,
        auroc_paper=0.60,
        val_auroc_feat=0.8,
        val_auroc_paper=0.5,
    ),
    _row(
        "csi",
        0,
        1,
        0.90,
        score="feat",
        auroc_feat=0.90,
        auroc_paper=0.70,
        val_auroc_feat=0.9,
        val_auroc_paper=0.6,
    ),
    _row(
        "csi",
        1,
        0,
        0.95,
        score="feat",
        auroc_feat=0.95,
        auroc_paper=0.65,
        val_auroc_feat=1.0,
        val_auroc_paper=0.7,
    ),
]


def test_markdown_table_means_stds_and_bold() -> None:
    lines = markdown_table(ROWS).splitlines()
    assert lines[0] == "| class | knn | csi |"
    # class 0: csi mean 0.8 +- 0.1 over seeds equals knn 0.800, both best -> both bold
    assert lines[2] == "| 0 c0 | **0.800** | **0.800 ± 0.100** |"
    assert lines[3] == "| 1 c1 | 0.900 | **0.950** |"
    # the mean over classes of the per-class means: knn 0.85, csi (0.8 + 0.95) / 2 = 0.875
    assert lines[4] == "| **mean** | 0.850 | **0.875** |"


def test_markdown_table_without_bold() -> None:
    lines = markdown_table(ROWS, bold=False).splitlines()
    assert lines[3] == "| 1 c1 | 0.900 | 0.950 |"
    assert lines[4] == "| **mean** | 0.850 | 0.875 |"


def test_markdown_table_incomplete_method_has_no_mean() -> None:
    lines = markdown_table(ROWS[:3]).splitlines()
    assert lines[3] == "| 1 c1 | **0.900** | - |"
    assert lines[4] == "| **mean** | **0.850** | - |"


def test_summary_table_means_and_alternative_scores() -> None:
    lines = summary_table(ROWS).splitlines()
    assert lines[2].startswith(
        "| knn | knn | 2 | 0.8500 | - | 0.8500 | 0.5000 | 0.2500 | 2.0 | 1.0"
    )
    # csi over its three cells: AUROC (0.7 + 0.9 + 0.95) / 3, validation (0.8 + 0.9 + 1) / 3
    assert lines[3].startswith("| csi | feat | 3 | 0.8500 | 0.9000 |")
    assert lines[4].startswith("| csi | paper | | 0.6500 | 0.6000 |")
    assert len(lines) == 5  # no 'csi' score column in these rows -> no line for it


def test_tables_without_rows() -> None:
    assert markdown_table([]) == "(no results)"
    assert summary_table([]) == "(no results)"


# -- statistics: intervals over seeds and paired differences ---------------------------------


def _cells(method: str, values: dict[tuple[int, int], float]) -> list[dict]:
    return [
        {"method": method, "normal_class": c, "seed": s, "auroc": v, "class_name": f"c{c}"}
        for (c, s), v in values.items()
    ]


def test_mean_interval_is_over_classes_and_needs_every_class() -> None:
    rows = _cells("a", {(0, 0): 0.8, (1, 0): 0.9, (0, 1): 0.7, (1, 1): 0.9, (0, 2): 0.6})
    iv = mean_interval(rows, "a")
    # class 0: mean 0.7 over three seeds, class 1: 0.9 over two; the mean of the two
    assert iv.mean == pytest.approx(0.8) and (iv.classes, iv.cells, iv.df) == (2, 5, 3)
    assert mean_interval(rows, "nothing") is None
    # a method without class 1 has no mean over the classes of the rows
    assert mean_interval(rows + _cells("b", {(0, 0): 0.5}), "b") is None


def test_paired_differences_match_cells_and_count_class_wins() -> None:
    a = {(0, 0): 0.90, (0, 1): 0.92, (1, 0): 0.80, (1, 1): 0.84, (2, 0): 0.70}
    b = {(0, 0): 0.88, (0, 1): 0.91, (1, 0): 0.82, (1, 1): 0.83, (3, 0): 0.99}
    p = paired(_cells("a", a) + _cells("b", b), "a", "b")
    # the four common cells (classes 2, 3 unmatched): class 0 +0.02, +0.01; class 1 -0.02, +0.01
    assert p.overall.cells == 4 and p.overall.mean == pytest.approx(np.mean([0.015, -0.005]))
    assert p.per_class[0].mean == pytest.approx(0.015) and p.per_class[1].mean == pytest.approx(
        -0.005
    )
    assert (p.wins, p.classes) == (1, 2)
    table = paired_class_table(_cells("a", a) + _cells("b", b), "a", "b")
    assert "| 0 c0 | +0.0150 [" in table
    assert "(4 cells, 2 degrees of freedom; 1 of 2 classes won)" in table
    assert paired(_cells("a", a), "a", "b") is None


# -- the committed results folders stay resumable ----------------------------------------------


def merge_settings(a: dict, b: dict) -> dict:
    """Settings by section, ``b``'s fields over ``a``'s (as later --set flags win)."""
    return {k: {**a.get(k, {}), **b.get(k, {})} for k in {*a, *b}}


RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
COMMITTED = [
    # folder, methods, overrides file (the recipe its generative cells were made with)
    ("fashion-mnist-cpu", ["knn", "csi"], None),
    (
        "fashion-mnist-variants-cpu",
        ["knn", "ocsvm", "deepsvdd", "rot", "goad", "csi", "csi+g", "full"],
        "recipe-before.yaml",
    ),
    ("fashion-mnist-seeds-cpu", ["csi", "full"], None),
    ("fashion-mnist-equal-time-cpu", ["csi"], None),
]
# the --set flags of a committed folder's command: the cpu preset as it was before it fitted
# by the clock (12 epochs, the feat score), and the folder's own
BEFORE = {"train": {"epochs": 12}, "score": {"score": "feat"}}
SETTINGS = {"fashion-mnist-equal-time-cpu": {"train": {"epochs": 42}, "score": {"score": "feat"}}}
# the --seeds of a committed folder's commands, per method (seed 0 where not named)
SEEDS = {
    ("fashion-mnist-seeds-cpu", "csi"): (0, 1, 2),
    ("fashion-mnist-seeds-cpu", "full"): (0, 1, 2),
    ("fashion-mnist-equal-time-cpu", "csi"): (0, 1, 2),
    ("fashion-mnist-variants-cpu", "rot"): (0, 1, 2),
}


@pytest.mark.parametrize(("folder", "methods", "recipe"), COMMITTED)
def test_committed_folders_resume_without_retraining(folder, methods, recipe, tmp_path) -> None:
    """The README's commands for the committed folders find every cell done: each row's
    configuration hash equals the one the current code computes for the same command."""
    source = RESULTS / folder
    out = tmp_path / folder
    out.mkdir()
    for name in ("results.jsonl", "preset-cpu.json"):
        shutil.copy(source / name, out / name)
    overrides = SETTINGS.get(folder, BEFORE)
    if recipe:
        overrides = merge_settings(BEFORE, yaml.safe_load((source / recipe).read_text()))
    rows = read_rows(out)
    bench._check_folder(out, rows, methods, "cpu", overrides, None)  # raises on a clash
    done = {(r["method"], r["normal_class"], r["seed"]) for r in read_rows(out)}
    wanted = {(m, c, s) for m in methods for c in range(10) for s in SEEDS.get((folder, m), (0,))}
    assert wanted <= done
    assert all(r["config_scheme"] == bench.SCHEME for r in read_rows(out))
    # every row says what it was computed with; resuming on a machine that computes a
    # method in another precision is refused (its cells would be other cells)
    rows = read_rows(out)
    assert all(r["precision"] in ("bf16", "fp32") and r["device"] == "cpu" for r in rows)
    assert all(r["torch"] and r["machine"] for r in rows)
    made = {r["method"]: r["precision"] for r in rows}
    bench.check_precision(out, rows, "cpu", made)
    other = {m: "fp32" if p == "bf16" else "bf16" for m, p in made.items()}
    with pytest.raises(ConfigError, match="results computed in"):
        bench.check_precision(out, rows, "cpu", other)
    if overrides:  # without them (the old preset, recipe, 42 epochs): another configuration
        last = methods[-1]
        with pytest.raises(ConfigError, match=f"{last} results made with another configuration"):
            bench._check_folder(out, read_rows(out), [last], "cpu", {}, None)


@pytest.mark.parametrize("name", ["paper", "cpu", "demo"])
def test_preset_default_scores_rank_every_class_above_chance(name: str) -> None:
    """No preset defaults to a score that ranks a Fashion-MNIST class below chance on the
    committed validation splits: every trained class's ``val_auroc_<score>`` (one
    deterministic pass, in the seeds benchmark) and R = 4 and 10 draws (score diagnosis). Eq. 11
    (``paper``) fails this on Sandal, so a preset that made it the default again fails here."""
    score = get_preset(name).score.score
    key = f"val_auroc_{score}"
    # every committed benchmark folder whose rows have the score (a score added later is in
    # the folders written since), and the draws of the score diagnosis
    folders = sorted(p.parent for p in RESULTS.rglob("results.jsonl"))
    rows = [r for folder in folders for r in read_rows(folder) if key in r]
    diagnosis = read_jsonl(RESULTS / "score-diagnosis" / "diagnosis.jsonl")
    aurocs = {(r["method"], r["normal_class"], "1 pass", r["seed"]): r[key] for r in rows}
    aurocs |= {
        (r["method"], r["normal_class"], r["protocol"], 0): r[key] for r in diagnosis if key in r
    }
    assert {c for _, c, _, _ in aurocs} == set(range(10))
    below = {k: v for k, v in aurocs.items() if v <= 0.5}
    assert not below, f"preset {name!r} defaults to score {score!r}, below chance on {below}"


def test_the_cpu_score_is_the_validation_winner_of_the_ten_minute_cells() -> None:
    """The ``cpu`` preset's score is, on the committed ten-minute cells of both datasets, the
    combined score with the best mean validation AUROC, up to Fashion-MNIST's tie (0.0005):
    ``feat+head+pix`` ties ``feat+pix`` there but loses on digits, where the shift head,
    standardised on images F knows by heart, drowns the other parts."""
    score = get_preset("cpu").score.score
    for folder in ("fashion-mnist-default-cpu", "digits-cpu"):
        rows = [r for r in read_rows(RESULTS / folder) if r["method"] == "csi"]
        assert len(rows) >= 10, folder
        means = {
            s: float(np.mean([r[f"val_auroc_{s}"] for r in rows]))
            for s in ("feat+head", "feat+pix", "feat+head+pix")
        }
        assert means[score] >= max(means.values()) - 0.0005, (folder, means)
