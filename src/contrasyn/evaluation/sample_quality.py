"""Sample quality of a benchmark folder's generative runs (``contrasyn quality``).

For every run whose method trains a generator (``Method.generative``): the Fréchet distance
of as many samples G(h) as training images to those images, against its real-versus-real
floor; how well F's score tells the samples from normal test images; whether the samples
copy training images (``memorisation``, with ``nearest.png``); and the sample and
reconstruction grids. It reads what the harness (``bench``) wrote and rebuilds each run's
training images from the dataset, checked against the run's data fingerprint.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from contrasyn.api.metrics import auroc
from contrasyn.api.splits import training_indices
from contrasyn.config import load_config
from contrasyn.data.base import ImageDataset
from contrasyn.errors import ConfigError
from contrasyn.evaluation.bench import benchmark_task, model_inputs, save_generator_grids
from contrasyn.evaluation.results import (
    KEY,
    cell_key,
    markdown_table,
    read_jsonl,
    read_rows,
    run_path,
    write_csv,
)
from contrasyn.methods.csi_config import RunConfig
from contrasyn.methods.registry import method_class
from contrasyn.textfiles import write_text


def run_quality(
    out: str | Path,
    spaces: Sequence[str] = ("fd-rand",),
    inception: str | Path | None = None,
    val_normal: int | None = None,
    log=print,
    recompute: bool = False,
) -> list[dict]:
    """Sample quality of every generative run (``csi+g``, ``full``) in a benchmark folder.

    For each run: the Fréchet distance(s) between as many samples G(h) as training images and
    those training images (rebuilt from the dataset and checked against the run's data
    fingerprint), ``samples.png`` (8 x 16 samples) and, for ``full``, ``reconstructions.png``
    (normal test images, their G(E(x)), anomalous test images, theirs: the paper's Figure 2).
    Also ``synthetic_vs_normal_auroc``: how well F's score tells samples from normal test
    images (0.5: F takes G's images for normal ones; near 1: for anomalies). Writes
    ``quality.jsonl``, ``quality.csv`` and ``quality.md``; returns the rows. A run measured
    by an earlier call (same feature spaces, grids present) is kept unless ``recompute``.
    """
    from contrasyn.checkpoint import load_checkpoint
    from contrasyn.data import load_dataset
    from contrasyn.evaluation.quality import feature_space, memorisation_ratio, sample_distance
    from contrasyn.methods.csi.adversarial import sample
    from contrasyn.methods.csi.resume import data_fingerprint
    from contrasyn.methods.csi.score import Scorer
    from contrasyn.methods.csi.trained import load_generator, load_model

    out = Path(out)
    feature_nets = {name: feature_space(name, inception) for name in spaces}
    datasets: dict[str, ImageDataset] = {}
    # rows of an earlier call: kept for runs done before or without weights
    earlier = {cell_key(q): q for q in read_jsonl(out / "quality.jsonl")}
    rows = []
    for r in read_rows(out):
        if not method_class(r["method"]).generative(r["method"]):
            continue
        run_dir = run_path(out, r)
        kept = earlier.get(cell_key(r))
        measured = kept and all(n.replace("-", "_") in kept for n in spaces)
        if measured and not recompute and (run_dir / "samples.png").exists():
            rows.append(kept)
            continue
        if not (run_dir / "last.safetensors").exists():
            log(
                f"{run_dir}: no weights (not committed, or not trained here); "
                + ("its earlier quality row is kept" if kept else "skipped")
            )
            if kept:
                rows.append(kept)
            continue
        cfg = load_config(RunConfig, run_dir / "config.json")
        if r["dataset"] not in datasets:
            datasets[r["dataset"]] = load_dataset(r["dataset"])
        task = benchmark_task(
            datasets[r["dataset"]], r["normal_class"], val_normal, r.get("max_test"),
            r.get("train_images"), r["seed"],
        )  # fmt: skip
        _, rest = training_indices(len(task.train_images), 0.0, cfg.train.max_train, r["seed"])
        train_x = model_inputs(task.train_images[rest], task.dataset, cfg)
        if load_checkpoint(run_dir / "last")[1].get("data_sha256") != data_fingerprint(train_x):
            raise ConfigError(
                f"{run_dir}: its training images differ from the ones rebuilt here "
                "(another --val-normal?)"
            )
        side, _ = load_generator(run_dir / "last")
        row = {k: r[k] for k in KEY} | {"class_name": r.get("class_name"), "n": len(train_x)}
        for name, net in feature_nets.items():
            key = name.replace("-", "_")
            row[key], row[f"{key}_floor"] = sample_distance(
                side.sampler, train_x, net, seed=r["seed"]
            )
            row[f"{key}_ratio"] = row[key] / row[f"{key}_floor"]
        # Where G's images sit in F's space: the AUROC of F's score (the run's default)
        # telling synthetic images from the normal test images; 0.5 = F takes them for normal.
        model, _ = load_model(run_dir / "last")
        scorer = Scorer(cfg.train, cfg.score).fit(model, train_x)
        is_normal = np.asarray(task.test_is_anomaly) == 0
        normal_x = model_inputs(task.test_images[is_normal], task.dataset, cfg)
        synthetic = side.to_model(sample(side.sampler, len(normal_x), r["seed"] + 1))
        scored = [
            scorer.score_samples(model, x)[cfg.score.score].numpy() for x in (normal_x, synthetic)
        ]
        is_synthetic = np.r_[np.zeros(len(normal_x)), np.ones(len(synthetic))]
        row["synthetic_vs_normal_auroc"] = auroc(is_synthetic, -np.concatenate(scored))
        # Does G copy its training images? Its samples' nearest training image, against
        # how near one comes to an unseen normal test image (1: as new as a real image).
        train_g = side.from_model(train_x)  # in G's channels
        row["memorisation"] = memorisation_ratio(
            side.from_model(synthetic), train_g, side.from_model(normal_x)
        )
        save_nearest_grid(side, train_g, r["seed"], run_dir / "nearest.png")
        save_generator_grids(side, task, cfg, run_dir, r["seed"])
        rows.append(row)
        log(
            f"{r['dataset']} class {r['normal_class']} {r['method']}: "
            + ", ".join(f"{n} {row[n.replace('-', '_')]:.4g}" for n in feature_nets)
        )
    _write_quality(out, rows, [n.replace("-", "_") for n in spaces])
    if rows:
        from contrasyn.evaluation.report import write_report

        write_report(out, next(iter(datasets.values())) if len(datasets) == 1 else None, log)
    return rows


def save_nearest_grid(side, train, seed: int, path: Path, n: int = 16) -> None:
    """``nearest.png``: ``n`` samples G(h) above the training image (``train``, in G's
    channels) nearest each in pixels, to see by eye whether G copies them."""
    from contrasyn.evaluation.quality import nearest_rows, save_grid
    from contrasyn.methods.csi.adversarial import sample

    samples = sample(side.sampler, n, seed)
    _, index = nearest_rows(samples, train)
    save_grid([samples, train[index]], path)


def _write_quality(out: Path, rows: list[dict], metrics: list[str]) -> None:
    write_text(out / "quality.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    if rows:
        write_csv(out / "quality.csv", rows)
    parts = []
    if rows:
        table = markdown_table(rows, "synthetic_vs_normal_auroc", bold=False)
        parts.append(
            "AUROC of F's score telling G's samples from normal test images "
            f"(0.5: F takes them for normal images):\n\n{table}\n"
        )
        measured = [r for r in rows if "memorisation" in r]
        if measured:
            table = markdown_table(measured, "memorisation", fmt=".3g", bold=False)
            parts.append(
                "Memorisation: the median pixel distance of G's samples to their nearest "
                "training image over that of unseen normal test images (1: samples as new as "
                f"a real image; near 0: copies of training images; nearest.png shows "
                f"them):\n\n{table}\n"
            )
    for metric in metrics:
        table = markdown_table(rows, metric, lower_is_better=True, fmt=".4g")
        parts.append(
            f"Fréchet distance of samples to training images, {metric} "
            f"(lower is better):\n\n{table}\n"
        )
        measured = [r for r in rows if f"{metric}_ratio" in r]
        if measured:
            floor = markdown_table(measured, f"{metric}_floor", fmt=".4g", bold=False)
            ratio = markdown_table(measured, f"{metric}_ratio", lower_is_better=True, fmt=".3g")
            parts.append(
                f"Its floor, {metric} between two disjoint halves of the training images (as "
                f"far apart as two samples of the class itself are):\n\n{floor}\n\n"
                f"The ratio of the two (1: as close as real images are to each other):\n\n"
                f"{ratio}\n"
            )
    write_text(out / "quality.md", "\n".join(parts))
