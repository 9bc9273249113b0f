"""Which of the CSI family's scores a preset should report: every score, paired on the same
cells, in the result rows of benchmark folders that trained the same configuration.

Every CSI-family row holds each score's AUROC on validation (``val_auroc_<score>``) and on
the test split (``auroc_<score>``), all from the same forward passes, so a score can be
chosen without retraining. For each folder this prints, for every candidate, the mean over
classes with its interval and the paired difference from ``--against`` (classes fixed, seeds
as replicates: ``contrasyn.evaluation.statistics``), on validation, where the choice is
made, and on the test split, which only reports it.

    python benchmarks/score_choice.py benchmarks/results/fashion-mnist-default-cpu \
        benchmarks/results/digits-cpu --against feat+head+pix \
        --out benchmarks/results/score-choice-default.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _throughput import write_json  # benchmarks/, the script's folder

from contrasyn.evaluation.results import read_rows
from contrasyn.evaluation.statistics import compare, summarise
from contrasyn.methods.csi_config import COMBINED

CANDIDATES = ("feat", "head", "pix", *COMBINED)
SPLITS = {"validation": "val_auroc_", "test": "auroc_"}


def cells(rows: list[dict], column: str) -> dict[tuple[int, int], float]:
    """(class, seed) -> the column's value, over the rows that have it."""
    return {
        (int(r["normal_class"]), int(r["seed"])): float(r[column])
        for r in rows
        if r.get(column) not in (None, "")
    }


def folder_table(rows: list[dict], against: str) -> dict:
    """Per split, per candidate score: its mean and its paired difference from ``against``."""
    out: dict = {}
    for split, prefix in SPLITS.items():
        base = cells(rows, prefix + against)
        table = {}
        for score in CANDIDATES:
            values = cells(rows, prefix + score)
            if not values:
                continue
            entry = {"mean": summarise(values).text()}
            if score != against:
                diff = compare(values, base)
                entry[f"minus {against}"] = diff.overall.text()
                entry["classes_ahead"] = f"{diff.wins}/{diff.classes}"
                entry["per_class"] = {str(c): round(e.mean, 4) for c, e in diff.per_class.items()}
            table[score] = entry
        out[split] = table
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--against", default="feat+head+pix", choices=CANDIDATES)
    parser.add_argument("--method", default="csi", help="the rows' method (default: csi)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = {"command": " ".join(["python benchmarks/score_choice.py", *(argv or sys.argv[1:])])}
    for folder in args.folders:
        rows = [r for r in read_rows(folder) if r["method"] == args.method]
        if not rows:
            sys.exit(f"{folder}: no {args.method} rows in results.jsonl")
        table = folder_table(rows, args.against)
        result[str(folder)] = {"cells": len(rows), **table}
        print(f"{folder} ({len(rows)} cells)")
        for split, scores in table.items():
            for score, entry in scores.items():
                diff = entry.get(f"minus {args.against}", "")
                ahead = f", {entry['classes_ahead']}" if diff else ""
                print(f"  {split:<10} {score:<14} {entry['mean']:<28} {diff}{ahead}")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
