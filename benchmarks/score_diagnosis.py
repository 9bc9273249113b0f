"""Eq. 11 taken apart on trained models: which score ranks, and why eq. 11 fails where it does.

For every CSI-family cell of a benchmark folder whose weights are on this machine (the
``last.safetensors`` of its run), F is loaded, the cell's training subsample rebuilt (and
checked against the checkpoint's data fingerprint), and every score (``paper`` = eq. 11,
its parts ``cos`` and ``norm``, CSI's ``csi``, ``feat``) computed on the cell's validation
split (held-out normal train images and as many other-class train images; never the test
split) under several test-time protocols: one deterministic pass of the 4 rotations, and
R = 1, 4, 10 random draws of T (crop 0.54, CSI's ensemble; the ``paper`` preset's scoring is
R = 10). ``--test`` also scores the whole test split (slower).

    python benchmarks/score_diagnosis.py benchmarks/results/fashion-mnist-seeds-cpu \
        --methods csi --seeds 0 --out benchmarks/results/score-diagnosis

Writes ``OUT/diagnosis.jsonl`` (one record per cell and protocol: AUROC of every score;
rerunning skips what is there) and ``OUT/diagnosis.md`` (per protocol and score: the mean
validation AUROC, the lowest class, and the classes below chance).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from contrasyn.api.metrics import auroc
from contrasyn.api.splits import training_indices
from contrasyn.checkpoint import load_checkpoint
from contrasyn.config import load_config
from contrasyn.data import load_dataset
from contrasyn.errors import ConfigError
from contrasyn.evaluation.bench import _inputs, benchmark_task
from contrasyn.evaluation.results import read_jsonl, read_rows, run_path
from contrasyn.methods.csi.score import Scorer
from contrasyn.methods.csi.trained import load_model
from contrasyn.methods.csi.trainer import data_fingerprint
from contrasyn.methods.csi_config import SCORES, RunConfig

# protocol name -> (augment, ensemble)
PROTOCOLS = {"deterministic": (False, 1), "R1": (True, 1), "R4": (True, 4), "R10": (True, 10)}


def diagnose(out: Path, row: dict, protocols: list[str], test: bool) -> list[dict]:
    run_dir = run_path(out, row)
    cfg = load_config(RunConfig, run_dir / "config.json")
    task = benchmark_task(load_dataset(row["dataset"]), row["normal_class"])
    _, rest = training_indices(len(task.train_images), 0.0, cfg.train.max_train, row["seed"])
    train_x = _inputs(task.train_images[rest], task.dataset, cfg)
    if load_checkpoint(run_dir / "last")[1].get("data_sha256") != data_fingerprint(train_x):
        raise ConfigError(f"{run_dir}: its training images differ from the ones rebuilt here")
    model, _ = load_model(run_dir / "last")
    if cfg.train.channels_last:
        import torch

        model = model.to(memory_format=torch.channels_last)
    parts = {"val": (task.val_images, task.val_is_anomaly)}
    if test:
        parts["test"] = (task.test_images, task.test_is_anomaly)
    records = []
    for name in protocols:
        augment, ensemble = PROTOCOLS[name]
        score_cfg = dataclasses.replace(cfg.score, augment=augment, ensemble=ensemble)
        scorer = Scorer(cfg.train, score_cfg).fit(model, train_x)
        rec = {k: row[k] for k in ("dataset", "method", "normal_class", "seed", "class_name")}
        rec["protocol"] = name
        for part, (images, is_anomaly) in parts.items():
            scores = scorer.score_samples(model, _inputs(images, task.dataset, cfg))
            for s in SCORES:
                rec[f"{part}_auroc_{s}"] = round(auroc(is_anomaly, -scores[s].numpy()), 5)
        print(json.dumps(rec), flush=True)
        records.append(rec)
    return records


def summary(records: list[dict]) -> str:
    """Per protocol and score: mean validation AUROC over cells, the lowest class, and the
    classes ranked below chance."""
    lines = [
        "| protocol | score | cells | mean val AUROC | lowest (class) | classes below 0.5 |",
        "|---|---|---|---|---|---|",
    ]
    for name in PROTOCOLS:
        cells = [r for r in records if r["protocol"] == name]
        if not cells:
            continue
        for s in SCORES:
            values = [r[f"val_auroc_{s}"] for r in cells]
            worst = min(cells, key=lambda r: r[f"val_auroc_{s}"])
            below = sorted({r["normal_class"] for r in cells if r[f"val_auroc_{s}"] < 0.5})
            lines.append(
                f"| {name} | {s} | {len(cells)} | {np.mean(values):.4f} "
                f"| {worst[f'val_auroc_{s}']:.3f} ({worst['normal_class']} "
                f"{worst['class_name']}) | {', '.join(map(str, below)) or '-'} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="a benchmark folder with trained CSI-family runs")
    parser.add_argument("--methods", default="csi")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--test", action="store_true", help="also score the whole test split")
    parser.add_argument("--out", default="benchmarks/results/score-diagnosis")
    args = parser.parse_args(argv)
    results, out = Path(args.results), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "diagnosis.jsonl"
    done = {(r["method"], r["normal_class"], r["seed"], r["protocol"]) for r in read_jsonl(path)}
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    protocols = args.protocols.split(",")
    for row in read_rows(results):
        if row["method"] not in methods or row["seed"] not in seeds:
            continue
        todo = [p for p in protocols if (row["method"], row["normal_class"], row["seed"], p)
                not in done]  # fmt: skip
        if not todo or not (run_path(results, row) / "last.safetensors").exists():
            continue
        records = diagnose(results, row, todo, args.test)
        with path.open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
    table = summary(read_jsonl(path))
    (out / "diagnosis.md").write_text(
        "Validation AUROC of every score under each test-time protocol (deterministic: one "
        "pass of the 4 rotations; RN: N random draws of T, crop 0.54):\n\n" + table + "\n"
    )
    print(table)


if __name__ == "__main__":
    main()
