"""Can the trained generative side score? The autoencoder's reconstruction error beside ``feat``.

A ``full`` run trains E and G as an autoencoder of the normal class: after the cpu recipe its
reconstructions of other classes come out as the normal class (the report's grids). This asks
whether that signal ranks anomalies, alone or added to F's ``feat`` score, on each cell's
validation split (never the test split), for every ``full`` cell of a benchmark folder whose
weights are on this machine:

- ``rec``: the mean squared error between an image and G(E(image)), in G's channels;
- ``latent_nn``: the distance from E(image) to the nearest E(training image);
- ``feat+W*rec`` and ``feat+W*latent_nn``: the sum of the two anomaly scores, each standardised
  by its mean and standard deviation on 500 normal train images the run never trained on (the
  ones outside its training subsample), for weights W = 0.25, 0.5, 1.

``feat`` is F's score as the ``cpu`` preset computes it (one deterministic pass of the 4
rotations), so its column equals the benchmark row's ``val_auroc_feat``.

    python benchmarks/generative_scores.py benchmarks/results/fashion-mnist-seeds-cpu \
        --seeds 0 --out benchmarks/results/generative-scores-cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from _throughput import write_json  # benchmarks/, the script's folder

from contrasyn.api.metrics import auroc
from contrasyn.api.splits import training_indices
from contrasyn.config import load_config
from contrasyn.data import load_dataset
from contrasyn.evaluation.bench import _inputs, benchmark_task
from contrasyn.evaluation.results import read_rows, run_path
from contrasyn.methods.csi.score import Scorer
from contrasyn.methods.csi.trained import load_generator, load_model
from contrasyn.methods.csi_config import RunConfig

WEIGHTS = (0.25, 0.5, 1.0)
REFERENCE = 500  # unseen normal train images that standardise each score


@torch.no_grad()
def autoencoder_scores(stem: Path, bank: torch.Tensor, *parts: torch.Tensor) -> list[dict]:
    """``rec`` and ``latent_nn`` anomaly scores of each of ``parts`` (F's input layout)."""
    side, _ = load_generator(stem)
    E = side.E
    if E is None:
        raise SystemExit(f"{stem}: not a 'full' run (it has no encoder)")

    def batches(x: torch.Tensor):
        grey = side.from_model(x)
        return [grey[i : i + 256] for i in range(0, len(grey), 256)]

    def latent(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([E(b) for b in batches(x)])

    bank_z = latent(bank)
    out = []
    for x in parts:
        rec = torch.cat([((side.G(E(b)) - b) ** 2).flatten(1).mean(1) for b in batches(x)])
        nearest = torch.cdist(latent(x), bank_z).min(1).values
        out.append({"rec": rec.numpy(), "latent_nn": nearest.numpy()})
    return out


def cell(results: Path, row: dict) -> dict:
    run_dir = run_path(results, row)
    cfg = load_config(RunConfig, run_dir / "config.json")
    task = benchmark_task(load_dataset(row["dataset"]), row["normal_class"])
    _, rest = training_indices(len(task.train_images), 0.0, cfg.train.max_train, row["seed"])
    unseen = np.setdiff1d(np.arange(len(task.train_images)), rest)[:REFERENCE]
    train_x = _inputs(task.train_images[rest], task.dataset, cfg)
    ref_x = _inputs(task.train_images[unseen], task.dataset, cfg)
    val_x = _inputs(task.val_images, task.dataset, cfg)
    y = task.val_is_anomaly

    model, _ = load_model(run_dir / "last")
    score_cfg = dataclasses.replace(cfg.score, score="feat", augment=False, ensemble=1)
    scorer = Scorer(cfg.train, score_cfg).fit(model, train_x)
    feat_val, feat_ref = (-scorer.score_samples(model, x)["feat"].numpy() for x in (val_x, ref_x))
    val, ref = autoencoder_scores(run_dir / "last", train_x, val_x, ref_x)

    def standard(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return (values - reference.mean()) / (reference.std() + 1e-12)

    record = {k: row[k] for k in ("normal_class", "class_name", "seed")}
    record["feat"] = auroc(y, feat_val)
    for name in ("rec", "latent_nn"):
        record[name] = auroc(y, val[name])
        for w in WEIGHTS:
            combined = standard(feat_val, feat_ref) + w * standard(val[name], ref[name])
            record[f"feat+{w}*{name}"] = auroc(y, combined)
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in record.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="a benchmark folder with trained 'full' runs")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", default="benchmarks/results/generative-scores-cpu.json")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results, seeds = Path(args.results), {int(s) for s in args.seeds.split(",")}
    rows = sorted(
        (r for r in read_rows(results) if r["method"] == "full" and r["seed"] in seeds),
        key=lambda r: (r["seed"], r["normal_class"]),
    )
    cells = []
    for row in rows:
        if (run_path(results, row) / "last.safetensors").exists():
            cells.append(cell(results, row))
            print(cells[-1], flush=True)
    scores = [k for k in cells[0] if k not in ("normal_class", "class_name", "seed")]
    mean = {k: round(float(np.mean([c[k] for c in cells])), 5) for k in scores}
    write_json(
        Path(args.out),
        {"command": " ".join(["python benchmarks/generative_scores.py", *argv]),
         "results": str(results), "cells": cells, "mean_val_auroc": mean},
    )  # fmt: skip
    print("mean validation AUROC:", mean)


if __name__ == "__main__":
    main()
