"""Do G's samples X~ help as extra bank entries or as calibration images? Validation for the
bank, the test split's normal images for the threshold; from a benchmark folder's trained
generative runs (their ``last.safetensors``, kept where they were trained).

The paper uses X~ only inside L_JOINT. Two other uses are cheap once G is trained:
- **bank**: score against the features (and pixels) of the training images *and* as many
  samples X~ as there are training images, every part standardised over that larger bank
  as the scorer does (leave-one-out). With 50 real images the bank is thin; if G's samples
  were realistic inliers, anomalies would stay far from both and normal images would find a
  closer neighbour.
- **calibration**: set the threshold at a 5% false-alarm rate on the anomaly scores of n
  samples X~ (the conformal rank on n = the training images' count) instead of on normal
  images, and read the rate it gives on the test split's normal images and the share of
  anomalies it flags. A conformal threshold is honest only for images drawn as the normal
  ones are; X~ are not, so this measures how far off it lands, beside the share a threshold
  at exactly 5% of the test split's normal images would flag.

Each run's validation scores are recomputed with the training bank first and checked
against the saved ``val_scores.npz`` (the weights are the run's). Paired differences over
classes and seeds (classes fixed, seeds as replicates) go into ``--out``.

    D=benchmarks/results/fashion-mnist-few-images-cpu/train-200
    python benchmarks/synthetic_inliers.py $D --out $D/synthetic-inliers.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from contrasyn.api.calibration import conformal_threshold
from contrasyn.api.metrics import auroc
from contrasyn.api.splits import training_indices
from contrasyn.config import load_config
from contrasyn.data import load_dataset
from contrasyn.evaluation.bench import benchmark_task, model_inputs
from contrasyn.evaluation.results import read_rows, run_path
from contrasyn.evaluation.statistics import compare, summarise
from contrasyn.methods.csi.adversarial import sample
from contrasyn.methods.csi.score import Scorer
from contrasyn.methods.csi.trained import load_generator, load_model
from contrasyn.methods.csi_config import RunConfig

RATE = 0.05


def cell(ds, row: dict, run_dir: Path) -> dict:
    """One run's validation AUROC with and without X~ in the bank, and the test split's
    false alarms and detections under a threshold set on X~."""
    cfg = load_config(RunConfig, run_dir / "config.json")
    score = cfg.score.score
    task = benchmark_task(
        ds, row["normal_class"], None, row.get("max_test"), row.get("train_images"), row["seed"]
    )
    _, rest = training_indices(len(task.train_images), 0.0, cfg.train.max_train, row["seed"])
    train = model_inputs(task.train_images[rest], task.dataset, cfg)
    val = model_inputs(task.val_images, task.dataset, cfg)
    model, _ = load_model(run_dir / "last")
    side, _ = load_generator(run_dir / "last")
    synthetic = side.to_model(sample(side.sampler, len(train), row["seed"] + 2))
    with np.load(run_dir / "val_scores.npz") as f:
        saved_val, y_val = f[score], f["is_anomaly"]
    with np.load(run_dir / "test_scores.npz") as f:
        saved_test, y_test = f[score], f["is_anomaly"]

    if not np.array_equal(y_val, task.val_is_anomaly):
        sys.exit(f"{run_dir}: the validation split rebuilt here is not the saved one")
    plain = Scorer(cfg.train, cfg.score).fit(model, train)
    anomaly = -plain.score_samples(model, val)[score].numpy()
    if not np.allclose(anomaly, saved_val, rtol=1e-3, atol=1e-3):
        sys.exit(f"{run_dir}: the recomputed validation scores are not the saved ones")
    enlarged = Scorer(cfg.train, cfg.score).fit(model, torch.cat([train, synthetic]))
    anomaly_big = -enlarged.score_samples(model, val)[score].numpy()

    # the threshold from X~ under the run's own scorer, read on the saved test scores
    synthetic_anomaly = -plain.score_samples(model, synthetic)[score].numpy()
    threshold = conformal_threshold(synthetic_anomaly, RATE)
    normal, anomalous = saved_test[y_test == 0], saved_test[y_test == 1]
    return {
        "normal_class": row["normal_class"],
        "seed": row["seed"],
        "train_images": len(train),
        "val_auroc_saved": auroc(y_val, saved_val),
        "val_auroc": auroc(y_val, anomaly),
        "val_auroc_bank_with_samples": auroc(y_val, anomaly_big),
        "test_false_alarms_threshold_on_samples": float((normal > threshold).mean()),
        "test_detected_threshold_on_samples": float((anomalous > threshold).mean()),
        "test_false_alarms_target": RATE,
        # what a threshold with exactly the target rate on these normal images flags
        "test_detected_at_target": float((anomalous > np.quantile(normal, 1 - RATE)).mean()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--method", default="full")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    found = [
        (r, run_path(args.folder, r)) for r in read_rows(args.folder) if r["method"] == args.method
    ]
    found = [(r, d) for r, d in found if (d / "last.safetensors").exists()]
    if not found:
        sys.exit(f"{args.folder}: no {args.method} run with its weights (last.safetensors)")
    datasets: dict = {}
    rows = []
    for r, run_dir in sorted(found, key=lambda x: (x[0]["seed"], x[0]["normal_class"])):
        ds = datasets.setdefault(r["dataset"], load_dataset(r["dataset"]))
        rows.append(cell(ds, r, run_dir))
        print(rows[-1], flush=True)

    def cells(key: str) -> dict[tuple[int, int], float]:
        return {(r["normal_class"], r["seed"]): r[key] for r in rows}

    keys = ("val_auroc", "val_auroc_bank_with_samples", "test_false_alarms_threshold_on_samples",
            "test_detected_threshold_on_samples", "test_detected_at_target")  # fmt: skip
    summary = {k: float(np.mean(list(cells(k).values()))) for k in keys}
    if len({r["seed"] for r in rows}) > 1:
        summary |= {f"{k} interval": summarise(cells(k)).text() for k in keys[:2]}
        c = compare(cells("val_auroc_bank_with_samples"), cells("val_auroc"))
        summary["val_auroc_bank_with_samples - val_auroc"] = {
            "mean": c.overall.text(), "classes_ahead": c.wins,
            "per_class": {k: e.text() for k, e in c.per_class.items()},
        }  # fmt: skip
    else:
        base = cells(keys[0])
        diff = [v - base[k] for k, v in cells(keys[1]).items()]
        summary["val_auroc_bank_with_samples - val_auroc, per cell"] = [round(d, 4) for d in diff]
    for k, v in summary.items():
        print(k, v, flush=True)
    command = " ".join(["python benchmarks/synthetic_inliers.py", *(argv or sys.argv[1:])])
    out = {"command": command, "cells": len(rows), "summary": summary, "rows": rows}
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
