"""Validation AUROC of weighted combined scores, from a benchmark folder's saved scores.

Every CSI-family cell of a benchmark writes ``val_scores.npz`` (each score of the validation
images). The combined scores are sums of standardised parts, so each part's standardisation
(1 / its training standard deviation) is read back exactly from the saved ``feat+head`` and
``feat+pix`` by least squares, and any weighting ``feat + a * head + b * pix`` of the
standardised parts can be scored without retraining. Choices are made on validation only.

    python benchmarks/score_weights.py benchmarks/results/default-search-cpu/scores-sub1000-12ep \
        --out benchmarks/results/default-search-cpu/score-weights.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from contrasyn.api.metrics import auroc
from contrasyn.evaluation.statistics import summarise

WEIGHTS = (0.0, 0.25, 0.5, 1.0)


def standardised(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The parts ``feat``, ``head`` and ``pix`` on one scale: ``feat`` as it is and the other
    two multiplied by their standardisation relative to ``feat``'s (``sigma_feat / sigma``),
    recovered from ``feat+head = feat / s_f + head / s_h + c`` (and ``feat+pix``)."""
    out = {"feat": scores["feat"]}
    for part in ("head", "pix"):
        design = np.stack([scores["feat"], scores[part], np.ones_like(scores["feat"])], 1)
        (a, b, _), *_ = np.linalg.lstsq(design, scores[f"feat+{part}"], rcond=None)
        out[part] = scores[part] * (b / a)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    cells = sorted(args.folder.glob("runs/*/*/class*/seed*/val_scores.npz"))
    if not cells:
        sys.exit(f"{args.folder}: no val_scores.npz under runs/")
    rows = []
    for path in cells:
        with np.load(path) as f:
            data = {k: f[k] for k in f.files}
        # saved as anomaly scores (higher = more anomalous); normality is minus that
        normal = {k: -v for k, v in data.items() if k != "is_anomaly"}
        parts = standardised(normal)
        task, seed = int(path.parts[-3][5:]), int(path.parts[-2][4:])
        for a in WEIGHTS:
            for b in WEIGHTS:
                combined = parts["feat"] + a * parts["head"] + b * parts["pix"]
                value = auroc(data["is_anomaly"], -combined)
                rows.append({"normal_class": task, "seed": seed, "head": a, "pix": b,
                             "val_auroc": value})  # fmt: skip
    table = []
    for a in WEIGHTS:
        for b in WEIGHTS:
            picked = [r for r in rows if r["head"] == a and r["pix"] == b]
            per_class = {r["normal_class"]: r["val_auroc"] for r in picked}
            summary = summarise({(r["normal_class"], r["seed"]): r["val_auroc"] for r in picked})
            rounded = {c: round(v, 4) for c, v in sorted(per_class.items())}
            table.append(
                {
                    "head": a,
                    "pix": b,
                    "mean_val_auroc": round(summary.mean, 4),
                    "per_class": rounded,
                }
            )
    table.sort(key=lambda r: -r["mean_val_auroc"])
    for r in table:
        print(f"head {r['head']:<4} pix {r['pix']:<4} val AUROC {r['mean_val_auroc']:.4f}")
    command = " ".join(["python benchmarks/score_weights.py", *(argv or sys.argv[1:])])
    args.out.write_text(json.dumps({"command": command, "cells": len(cells), "table": table},
                                   indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
