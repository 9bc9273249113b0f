"""The benchmark tables computed from hand-made rows."""

from __future__ import annotations

from contrasyn.results import markdown_table, summary_table


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
