"""Would the default's pixel part score better against every training image? Validation only,
from a benchmark folder's saved scores.

The score ``feat+head+pix`` (the ``cpu`` preset's when this script was written: ``default``
in its keys) sums three standardised parts, and ``feat+pix``, the preset's score now, two;
``pix`` is raw-pixel kNN against the bank of the images F trained on, which the ``cpu``
preset subsamples to 1,000 (``train.max_train``). Raw pixels cost nothing to bank, and the
``knn`` baseline, which banks every training image, beats ``pix`` (0.9221 against 0.9182
mean test AUROC over the default's 30 cells). This script rebuilds each cell's validation
split and 1,000-image subsample, checks that the ``pix`` it recomputes is the saved one, and
scores the validation images with ``pix`` against all of the class's training images
instead, standardised the same way (leave-one-out over that bank), in both scores, with
``feat`` and ``head`` as saved (their standardisation read back from ``feat+head`` by least
squares, as ``score_weights.py`` does). The paired differences over classes and seeds
(classes fixed, seeds as replicates) go into ``--out``.

    python benchmarks/pixel_bank.py benchmarks/results/fashion-mnist-default-cpu \
        --out benchmarks/results/fashion-mnist-default-cpu/pixel-bank.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from score_weights import standardised  # benchmarks/, the script's folder

from contrasyn.api.metrics import auroc
from contrasyn.api.splits import training_indices
from contrasyn.data import load_dataset
from contrasyn.evaluation.bench import benchmark_task, model_inputs
from contrasyn.evaluation.statistics import compare, summarise
from contrasyn.methods.csi.score import nearest_distance, pixels
from contrasyn.methods.presets import PRESETS


def pixel_part(bank: torch.Tensor, x: torch.Tensor) -> tuple[np.ndarray, float]:
    """Nearest-neighbour pixel distances of ``x`` to ``bank``, and the standard deviation
    of the bank's own leave-one-out distances (the scorer's standardisation of ``pix``)."""
    own = nearest_distance(bank, bank, others=True)
    return nearest_distance(x, bank).numpy(), float(own.std(correction=0))


def cell(ds, normal: int, seed: int, saved: dict[str, np.ndarray], max_train: int) -> dict:
    """One cell's validation AUROC of ``pix`` and of the default score, with the saved
    1,000-image pixel bank and with every training image of the class."""
    cfg = PRESETS["cpu"]
    task = benchmark_task(ds, normal)
    train = pixels(model_inputs(task.train_images, ds.name, cfg))
    val = pixels(model_inputs(task.val_images, ds.name, cfg))
    _, subset = training_indices(len(train), 0.0, max_train, seed)
    small, small_sigma = pixel_part(train[subset], val)
    if not np.allclose(small, saved["pix"], rtol=1e-4, atol=1e-4):
        sys.exit(f"class {normal} seed {seed}: the recomputed pix is not the saved one")
    big, big_sigma = pixel_part(train, val)
    normality = {k: -v for k, v in saved.items() if k != "is_anomaly"}
    parts = standardised(normality)  # on feat's scale: pix times sigma_feat / small_sigma
    feat_sigma = float(np.median(parts["pix"] / normality["pix"])) * small_sigma
    y = saved["is_anomaly"]
    default = parts["feat"] + parts["head"] + parts["pix"]
    with_all = parts["feat"] + parts["head"] - big * (feat_sigma / big_sigma)
    feat_pix = parts["feat"] + parts["pix"]
    feat_pix_all = parts["feat"] - big * (feat_sigma / big_sigma)
    return {
        "normal_class": normal,
        "seed": seed,
        "bank_images": len(subset),
        "train_images": len(train),
        "val_auroc_pix": auroc(y, saved["pix"]),
        "val_auroc_pix_all": auroc(y, big),
        "val_auroc_default_saved": auroc(y, saved["feat+head+pix"]),
        "val_auroc_default": auroc(y, -default),
        "val_auroc_default_pix_all": auroc(y, -with_all),
        "val_auroc_feat+pix_saved": auroc(y, saved["feat+pix"]),
        "val_auroc_feat+pix": auroc(y, -feat_pix),
        "val_auroc_feat+pix_all": auroc(y, -feat_pix_all),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    paths = sorted(args.folder.glob("runs/fashion-mnist/csi/class*/seed*/val_scores.npz"))
    if not paths:
        sys.exit(f"{args.folder}: no val_scores.npz under runs/fashion-mnist/csi/")
    ds = load_dataset("fashion-mnist")
    max_train = PRESETS["cpu"].train.max_train
    rows = []
    for path in paths:
        normal, seed = int(path.parts[-3][5:]), int(path.parts[-2][4:])
        with np.load(path) as f:
            saved = {k: f[k] for k in f.files}
        rows.append(cell(ds, normal, seed, saved, max_train))
        print(rows[-1], flush=True)

    def cells(key: str) -> dict[tuple[int, int], float]:
        return {(r["normal_class"], r["seed"]): r[key] for r in rows}

    summary = {}
    for key in ("val_auroc_pix", "val_auroc_pix_all", "val_auroc_default",
                "val_auroc_default_pix_all", "val_auroc_feat+pix",
                "val_auroc_feat+pix_all"):  # fmt: skip
        summary[key] = summarise(cells(key)).text()
    pairs = {}
    for a, b in (("val_auroc_pix_all", "val_auroc_pix"),
                 ("val_auroc_default_pix_all", "val_auroc_default"),
                 ("val_auroc_feat+pix_all", "val_auroc_feat+pix")):  # fmt: skip
        c = compare(cells(a), cells(b))
        per_class = {k: e.text() for k, e in c.per_class.items()}
        pairs[f"{a} - {b}"] = {"mean": c.overall.text(), "classes_ahead": c.wins,
                               "per_class": per_class}  # fmt: skip
    for k, v in {**summary, **pairs}.items():
        print(k, v if isinstance(v, str) else v["mean"], flush=True)
    command = " ".join(["python benchmarks/pixel_bank.py", *(argv or sys.argv[1:])])
    out = {"command": command, "cells": len(rows), "summary": summary, "pairs": pairs,
           "rows": rows}  # fmt: skip
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
