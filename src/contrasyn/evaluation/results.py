"""Results I/O and statistics of a benchmark folder: the rows, the tables, the intervals.

``results.jsonl`` is the source of truth (one row per (dataset, method, class, seed,
preset) cell); ``results.csv`` and ``table.md`` are rewritten from it. The harness
(``bench``) writes rows through this module and the report (``report``) reads them, so
neither imports the other's internals.

Statistics (``table.md``, the report, the benchmark's printout, ``benchmarks/compare.py``)
all come from ``evaluation.statistics`` (classes fixed, seeds as replicates): per method,
the mean over classes with its 95% interval (``mean_interval``); per pair of methods, the paired
differences A - B over the cells both have (same class and seed: the same training subsample
and validation split), their mean over classes with its interval, and the classes won
(``paired``). Every table also names each method's effective precision (bf16 or fp32).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from contrasyn.checkpoint import atomic_write
from contrasyn.evaluation.statistics import Comparison, Estimate, compare, summarise
from contrasyn.textfiles import write_text

KEY = ("dataset", "method", "normal_class", "seed", "preset")
COLUMNS = (
    *KEY,
    "score",
    "auroc",
    "aupr",
    "fpr95",
    "auroc_per_class_mean",
    "train_seconds",
    "score_seconds",
    "n_train",
    "n_test",
)


def cell_key(row: dict) -> tuple:
    """The row's cell: its values of ``KEY``, what ``results.jsonl`` holds one row for."""
    return tuple(row[k] for k in KEY)


def run_path(out: Path, row: dict) -> Path:
    """Where a cell's run files live: ``out/runs/DATASET/METHOD/classK/seedS``."""
    return (
        Path(out)
        / "runs"
        / row["dataset"]
        / row["method"]
        / f"class{row['normal_class']}"
        / f"seed{row['seed']}"
    )


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file (none if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_rows(out: Path) -> list[dict]:
    return read_jsonl(Path(out) / "results.jsonl")


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` through the atomic writer."""
    atomic_write(Path(path), lambda tmp: np.savez_compressed(tmp, **arrays), suffix=".npz")


def write_rows(out: Path, rows: list[dict]) -> None:
    """Rewrite ``results.jsonl`` (all rows) and the tables from it."""
    write_text(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write_tables(out, rows)


def write_csv(path: Path, rows: list[dict], first: Iterable[str] = ()) -> None:
    """Rows as CSV, columns ``first`` then every other key in order of appearance."""
    columns = list(dict.fromkeys([*first, *(k for r in rows for k in r)]))
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def write_tables(out: Path, rows: list[dict]) -> None:
    """Rewrite ``results.csv`` and ``table.md`` from the rows (all columns kept)."""
    write_csv(out / "results.csv", rows, COLUMNS)
    parts = [
        "AUROC per normal class (anomalies positive; mean ± std over seeds):\n\n"
        + markdown_table(rows),
        "Means over tasks and seeds:\n\n" + summary_table(rows),
    ]
    if rows:
        parts.append(
            "Mean AUROC over classes with its 95% interval, and paired differences (row minus "
            "column, over the cells both have: mean over classes [95% interval] and classes "
            "won). Classes are fixed and seeds are the replicates: the interval comes from the "
            "spread between seeds within each class, pooled over classes (docs/METHOD.md, "
            '"Comparing methods"):\n\n' + interval_table(rows) + "\n\n" + paired_matrix(rows)
        )
    write_text(out / "table.md", "\n\n".join(parts) + "\n")


def summary_table(rows: list[dict]) -> str:
    """Per method (and, for methods with several scores, per score): the means over all
    cells of every metric, the validation AUROC used to choose a score, and the times.
    ``cells`` says how many results each mean is over (methods of a partly finished run
    may differ)."""
    if not rows:
        return "(no results)"
    lines = [
        "| method | score | cells | AUROC | val AUROC | AUROC (per-class mean) | AUPR | FPR@95 "
        "| train s | score s |",
        "|---" * 10 + "|",
    ]

    def mean(key: str, cells: list[dict]) -> str:
        values = [r[key] for r in cells if key in r]
        return f"{np.mean(values):.4f}" if len(values) == len(cells) else "-"

    for method in dict.fromkeys(r["method"] for r in rows):
        cells = [r for r in rows if r["method"] == method]
        default = cells[0]["score"]
        lines.append(
            f"| {method} | {default} | {len(cells)} | {mean('auroc', cells)} "
            f"| {mean(f'val_auroc_{default}', cells)}"
            f" | {mean('auroc_per_class_mean', cells)} | {mean('aupr', cells)}"
            f" | {mean('fpr95', cells)} | {float(np.mean([r['train_seconds'] for r in cells])):.1f}"
            f" | {float(np.mean([r['score_seconds'] for r in cells])):.1f} |"
        )
        others = sorted({k[6:] for r in cells for k in r if k.startswith("auroc_")} - {default})
        for name in others:
            if name == "per_class_mean":
                continue
            lines.append(
                f"| {method} | {name} | | {mean(f'auroc_{name}', cells)} "
                f"| {mean(f'val_auroc_{name}', cells)} | | | | | |"
            )
    return "\n".join(lines)


def markdown_table(
    rows: list[dict],
    metric: str = "auroc",
    lower_is_better: bool = False,
    fmt: str = ".3f",
    bold: bool = True,
) -> str:
    """Per-class AUROC (or ``metric``; mean +- std over seeds) for each method, with the mean
    over classes; the best method of each row in bold (unless ``bold`` is False, for a
    metric where neither end is better)."""
    pick = min if lower_is_better else max
    if not rows:
        return "(no results)"
    methods = list(dict.fromkeys(r["method"] for r in rows))
    classes = sorted({r["normal_class"] for r in rows})
    names = {r["normal_class"]: r.get("class_name", str(r["normal_class"])) for r in rows}
    lines = ["| class | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]

    def cell(values: list[float]) -> tuple[float, str]:
        if not values:
            return float("-inf"), "-"
        m = float(np.mean(values))
        text = f"{m:{fmt}}" + (f" ± {np.std(values):{fmt}}" if len(values) > 1 else "")
        return m, text

    per_method_means: dict[str, list[float]] = {m: [] for m in methods}
    for c in classes:
        cells = []
        for m in methods:
            vals = [r[metric] for r in rows if r["method"] == m and r["normal_class"] == c]
            cells.append(cell(vals))
            if vals:
                per_method_means[m].append(float(np.mean(vals)))
        best = pick((v for v, t in cells if t != "-"), default=None) if bold else None
        lines.append(
            f"| {c} {names[c]} | "
            + " | ".join(f"**{t}**" if v == best and t != "-" else t for v, t in cells)
            + " |"
        )
    means = [
        cell(per_method_means[m])
        if len(per_method_means[m]) == len(classes)
        else (float("-inf"), "-")
        for m in methods
    ]
    best = pick((v for v, t in means if t != "-"), default=None) if bold else None
    lines.append(
        "| **mean** | "
        + " | ".join(
            f"**{float(v):{fmt}}**"
            if v == best and t != "-"
            else (f"{v:{fmt}}" if t != "-" else "-")
            for v, t in means
        )
        + " |"
    )
    return "\n".join(lines)


# -- statistics: every interval comes from ``evaluation.statistics`` -------------------------


def _by_cell(rows: list[dict], method: str, metric: str) -> dict[tuple[int, int], float]:
    return {
        (r["normal_class"], r["seed"]): r[metric]
        for r in rows
        if r["method"] == method and metric in r
    }


def mean_interval(rows: list[dict], method: str, metric: str = "auroc") -> Estimate | None:
    """``method``'s mean over classes of ``metric`` with its 95% interval (classes fixed,
    seeds as replicates: ``statistics.summarise``); None unless it has every class of the
    rows."""
    cells = _by_cell(rows, method, metric)
    if not cells or {c for c, _ in cells} != {r["normal_class"] for r in rows}:
        return None
    return summarise(cells)


def paired(rows: list[dict], a: str, b: str, metric: str = "auroc") -> Comparison | None:
    """Paired differences ``a - b`` over their common cells (``statistics.compare``)."""
    return compare(_by_cell(rows, a, metric), _by_cell(rows, b, metric))


def _precisions(rows: list[dict], method: str) -> str:
    """The effective precisions of a method's rows (``-`` for rows made before they were
    recorded)."""
    found = dict.fromkeys(r.get("precision") or "-" for r in rows if r["method"] == method)
    return ", ".join(found)


def interval_table(rows: list[dict], metric: str = "auroc") -> str:
    """Per method: its precision, seeds per class, mean over classes and its 95% interval."""
    lines = [
        f"| method | precision | seeds | mean {metric} [95% interval; classes fixed, seeds "
        "replicate] |",
        "|---|---|---|---|",
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        iv = mean_interval(rows, method, metric)
        seeds = sorted({s for _, s in _by_cell(rows, method, metric)})
        lines.append(
            f"| {method} | {_precisions(rows, method)} | {len(seeds)} "
            f"| {iv.text() if iv else '- (not every class)'} |"
        )
    return "\n".join(lines)


def paired_matrix(rows: list[dict], metric: str = "auroc") -> str:
    """Every pair of methods: mean paired difference (row - column) [95% interval], wins."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["| A \\ B | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for a in methods:
        cells = []
        for b in methods:
            p = None if a == b else paired(rows, a, b, metric)
            cells.append("" if p is None else f"{p.overall.text('+.4f')}, {p.wins}/{p.classes}")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_class_table(rows: list[dict], a: str, b: str, metric: str = "auroc") -> str:
    """Per class, ``a - b``: the mean over seeds [95% interval, pooled over classes]; then
    the mean over classes."""
    p = paired(rows, a, b, metric)
    if p is None:
        return "(no common cells)"
    names = {r["normal_class"]: r.get("class_name", "") for r in rows}
    lines = [f"| class | {a} - {b} [95% interval, pooled within-class spread] |", "|---|---|"]
    lines += [f"| {c} {names[c]} | {iv.text('+.4f')} |" for c, iv in p.per_class.items()]
    o = p.overall
    lines.append(
        f"| **mean over classes** | {o.text('+.4f')} ({o.cells} cells, {o.df} degrees of "
        f"freedom; {p.wins} of {p.classes} classes won) |"
    )
    return "\n".join(lines)
