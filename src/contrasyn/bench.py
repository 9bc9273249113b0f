"""The benchmark harness: every (task, method, seed) cell in one protocol, resumable.

Each finished cell appends one row to ``results.jsonl`` (the source of truth) and the CSV
``results.csv`` and Markdown ``table.md`` are rewritten from it, so a killed benchmark
rerun with the same arguments skips what is done. Columns follow SPEC.md ("Results files");
methods with several scores add ``auroc_<score>`` and ``val_auroc_<score>`` columns.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from contrasyn import distributed
from contrasyn.baselines import BASELINES, baseline_settings, build_baseline
from contrasyn.config import LATER_FIELDS, TRAIN_METHODS, RunConfig, merge, save_config, to_dict
from contrasyn.data import default_resize_policy, to_model_input
from contrasyn.data.base import ImageDataset
from contrasyn.errors import ConfigError
from contrasyn.metrics import auroc, evaluate
from contrasyn.protocol import OneClassTask, one_class_task, subsample_test
from contrasyn.score import SCORES, Scorer, import_faiss
from contrasyn.trainer import resolve_device, train_networks

METHODS = (*BASELINES, *TRAIN_METHODS)
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


def _inputs(images: np.ndarray, dataset: str, cfg: RunConfig) -> torch.Tensor:
    return to_model_input(
        images, cfg.train.image_size, cfg.train.channels, default_resize_policy(dataset)
    )


def run_path(out: Path, row: dict) -> Path:
    """Where a cell's run files live: ``out/runs/DATASET/METHOD/classK/seedS``."""
    return (
        out
        / "runs"
        / row["dataset"]
        / row["method"]
        / f"class{row['normal_class']}"
        / f"seed{row['seed']}"
    )


def environment(device: str, command: str | None = None) -> dict:
    """Versions and machine facts recorded with every benchmark invocation."""
    import os
    import platform
    from datetime import datetime, timezone

    import sklearn

    from contrasyn.checkpoint import versions

    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "versions": versions() | {"numpy": np.__version__, "scikit-learn": sklearn.__version__},
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "cuda": torch.cuda.get_device_name() if device.startswith("cuda") else None,
    }


def _losses(detector) -> list[dict]:
    """A learned baseline's per-epoch losses, the records of its ``metrics.jsonl``."""
    return [
        {"phase": phase, "epoch": i + 1, "loss": loss}
        for phase, attr in (("pretrain", "pretrain_loss_"), ("train", "train_loss_"))
        for i, loss in enumerate(getattr(detector, attr, []))
    ]


def _subsample(images: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or len(images) <= limit:
        return images
    keep = np.sort(np.random.default_rng(seed).choice(len(images), limit, replace=False))
    return images[keep]


def run_cell(
    task: OneClassTask,
    method: str,
    seed: int,
    cfg: RunConfig,
    run_dir: Path | None = None,
    progress: bool = True,
    preset: str = "cpu",
    verbose: bool = False,
) -> dict:
    """Train and score one method on one task; returns the metrics row (without the key).
    ``preset`` picks the baselines' settings (``BASELINE_PRESETS``); CSI's are in ``cfg``.
    ``verbose`` prints the training losses as they are logged."""
    row: dict = {}
    side = None  # the generative networks of csi+g / full
    test_x = _inputs(task.test_images, task.dataset, cfg)
    if method in BASELINES:
        settings = baseline_settings(method, preset)
        images = _subsample(task.train_images, settings["max_train"], seed)
        train_x = _inputs(images, task.dataset, cfg)
        if run_dir is not None and method != "knn":
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
        device = str(resolve_device(cfg.train.device))
        detector = build_baseline(method, settings, seed, device)
        t0 = time.perf_counter()
        detector.fit(train_x)
        t1 = time.perf_counter()
        losses = _losses(detector)
        if run_dir is not None and losses:
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in losses))
        if verbose and losses:
            print(
                f"{method} losses: "
                + ", ".join(f"{r['phase']} {r['epoch']} {r['loss']:.4g}" for r in losses),
                flush=True,
            )
        scores = {method: detector.anomaly_score(test_x).numpy()}
        val = (
            {method: detector.anomaly_score(_inputs(task.val_images, task.dataset, cfg)).numpy()}
            if task.val_images is not None
            else None
        )
        default = method
    elif method in TRAIN_METHODS:
        cfg, train_x = _training_set(task, method, seed, cfg)
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.json")
        t0 = time.perf_counter()
        model, side = train_networks(train_x, cfg.train, run_dir, progress, verbose)
        t1 = time.perf_counter()
        scorer = Scorer(cfg.train, cfg.score).fit(model, train_x)
        scores = {k: -v.numpy() for k, v in scorer.score_samples(model, test_x).items()}
        val = None
        if task.val_images is not None:
            val_x = _inputs(task.val_images, task.dataset, cfg)
            val = {k: -v.numpy() for k, v in scorer.score_samples(model, val_x).items()}
        default = cfg.score.score
    else:
        raise ConfigError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    t2 = time.perf_counter()
    if side is not None and run_dir is not None:
        save_generator_grids(side, task, cfg, run_dir, seed)
    row.update(score=default, **evaluate(task.test_is_anomaly, scores[default], task.test_labels))
    row.update(
        train_seconds=round(t1 - t0, 2),
        score_seconds=round(t2 - t1, 2),
        n_train=len(train_x),
        n_test=len(test_x),
    )
    if len(scores) > 1:
        for name in SCORES:
            row[f"auroc_{name}"] = auroc(task.test_is_anomaly, scores[name])
    if val is not None:
        for name, s in val.items():
            row[f"val_auroc_{name}"] = auroc(task.val_is_anomaly, s)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        index = {} if task.test_index is None else {"test_index": task.test_index}
        np.savez_compressed(
            run_dir / "test_scores.npz",
            is_anomaly=task.test_is_anomaly,
            labels=task.test_labels,
            **index,
            **scores,
        )
    return row


def _training_set(
    task: OneClassTask, method: str, seed: int, cfg: RunConfig
) -> tuple[RunConfig, torch.Tensor]:
    """The run configuration and training images of a CSI-family cell."""
    cfg = merge(cfg, {"train": {"seed": seed, "method": method}, "score": {"seed": seed}})
    images = _subsample(task.train_images, cfg.train.max_train, seed)
    return cfg, _inputs(images, task.dataset, cfg)


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file (none if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_rows(out: Path) -> list[dict]:
    return read_jsonl(out / "results.jsonl")


def write_tables(out: Path, rows: list[dict]) -> None:
    """Rewrite ``results.csv`` and ``table.md`` from the rows (all columns kept)."""
    columns = list(COLUMNS) + sorted({k for r in rows for k in r} - set(COLUMNS))
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (out / "table.md").write_text(
        "AUROC per normal class (anomalies positive):\n\n"
        + markdown_table(rows)
        + "\n\nMeans over tasks and seeds:\n\n"
        + summary_table(rows)
        + "\n"
    )


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
        for name in SCORES:
            if f"auroc_{name}" in cells[0] and name != default:
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


def _config_sha(method: str, preset: str, cfg: RunConfig, max_test: int | None = None) -> str:
    """What a result depends on: CSI's run configuration for the CSI family and kNN (the
    input size), a baseline's own settings (and the input size) for the other baselines;
    and the test subsample size, if any."""
    if method in TRAIN_METHODS or method == "knn":
        data, defaults = to_dict(cfg), to_dict(RunConfig())
        for part, names in LATER_FIELDS.items():
            for name in names:
                if data[part][name] == defaults[part][name]:
                    del data[part][name]
        text = json.dumps(data, sort_keys=True)
    else:
        inputs = {"image_size": cfg.train.image_size, "channels": cfg.train.channels}
        text = json.dumps([baseline_settings(method, preset), inputs], sort_keys=True)
    if max_test is not None:
        text += f"|max_test={max_test}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _check_folder(
    out: Path, rows: list[dict], methods: Sequence[str], preset: str, cfg: RunConfig, max_test
) -> dict[str, str]:
    """Each method's config hash; refuses a folder whose rows were made with another one."""
    shas = {m: _config_sha(m, preset, cfg, max_test) for m in methods}
    for method, sha in shas.items():
        clash = {
            r["config_sha"] for r in rows if r["preset"] == preset and r["method"] == method
        } - {sha}
        if clash:
            raise ConfigError(
                f"{out} holds {preset!r} {method} results made with another configuration "
                f"(config {', '.join(sorted(clash))}, now {sha}); use another --out"
            )
    return shas


def benchmark_task(
    ds: ImageDataset, normal: int, val_normal: int | None = None, max_test: int | None = None
) -> OneClassTask:
    """The one-class task of a benchmark cell: ``val_normal`` normal train images (default:
    10% of the class, at most 500) are held out for validation; the whole test split is
    scored unless ``max_test`` asks for a stratified subsample (quick runs only)."""
    n_normal = int((ds.train_labels == normal).sum())
    n_val = min(500, n_normal // 10) if val_normal is None else val_normal
    task = one_class_task(ds, normal, val_normal=n_val, val_seed=0)
    return task if max_test is None else subsample_test(task, max_test)


def run_benchmark(
    ds: ImageDataset,
    classes: Sequence[int],
    methods: Sequence[str],
    seeds: Sequence[int],
    preset: str,
    cfg: RunConfig,
    out: str | Path,
    val_normal: int | None = None,
    progress: bool = True,
    log=print,
    command: str | None = None,
    report: bool = True,
    max_test: int | None = None,
    verbose: bool = False,
) -> list[dict]:
    """Run every cell not already in ``out/results.jsonl``; returns all rows.

    ``val_normal`` normal train images per task are held out for validation (default: 10%
    of the class, at most 500). Rows record a hash of the configuration; resuming into a
    folder whose rows for this preset were made with another configuration is refused.
    ``max_test`` scores a stratified subsample of the test split (recorded in each row).
    Each invocation appends its versions and machine (and ``command``) to
    ``environment.json``; at the end ``report.html`` is rewritten if any cell ran (or there
    is none), unless ``report`` is False.
    """
    out = Path(out)
    if distributed.launched() and not distributed.is_main():
        return _train_alongside(ds, classes, methods, seeds, preset, cfg, out, val_normal, max_test)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_rows(out)
    shas = _check_folder(out, rows, methods, preset, cfg, max_test)
    if cfg.score.index == "faiss" and set(methods) & set(TRAIN_METHODS):
        import_faiss()  # missing: say so now, not after the first training
    save_config(cfg, out / f"preset-{preset}.json")
    device = str(distributed.init(resolve_device(cfg.train.device)))
    env_path = out / "environment.json"
    sessions = json.loads(env_path.read_text()) if env_path.exists() else []
    env_path.write_text(json.dumps([*sessions, environment(device, command)], indent=2) + "\n")
    done = {tuple(r[k] for k in KEY) for r in rows}
    distributed.barrier()  # the other ranks read the same finished cells (_train_alongside)
    log(f"device {device}; {len(done)} cell(s) already done in {out}")
    for c in classes:
        task = benchmark_task(ds, c, val_normal, max_test)
        for method in methods:
            for seed in seeds:
                key = (ds.name, method, int(c), int(seed), preset)
                if key in done:
                    continue
                row = dict(
                    zip(KEY, key, strict=True),
                    class_name=ds.class_names[c],
                    config_sha=shas[method],
                    **({} if max_test is None else {"max_test": max_test}),
                )
                run_dir = run_path(out, row)
                row.update(run_cell(task, method, seed, cfg, run_dir, progress, preset, verbose))
                rows.append(row)
                with (out / "results.jsonl").open("a") as f:
                    f.write(json.dumps(row) + "\n")
                write_tables(out, rows)
                log(
                    f"{ds.name} class {c} ({ds.class_names[c]}) {method} seed {seed}: "
                    f"AUROC {row['auroc']:.4f} ({row['score']}), train {row['train_seconds']} s, "
                    f"score {row['score_seconds']} s"
                )
    write_tables(out, rows)
    ran = len(rows) > len(done)
    if report and rows and (ran or not (out / "report.html").exists()):
        from contrasyn.report import write_report

        write_report(out, ds, log=log)
    return rows


def _train_alongside(
    ds: ImageDataset,
    classes: Sequence[int],
    methods: Sequence[str],
    seeds: Sequence[int],
    preset: str,
    cfg: RunConfig,
    out: Path,
    val_normal: int | None,
    max_test: int | None,
) -> list[dict]:
    """A benchmark on a rank > 0 under ``torchrun``: it takes its part in training every
    unfinished CSI-family cell, in rank 0's order; rank 0 runs the baselines, scores and
    writes. Returns no rows."""
    distributed.init(resolve_device(cfg.train.device))
    rows = read_rows(out)
    _check_folder(out, rows, methods, preset, cfg, max_test)  # fails as rank 0 does
    done = {tuple(r[k] for k in KEY) for r in rows}
    distributed.barrier()  # rank 0 has read the same rows and has not yet written any
    for c in classes:
        task = benchmark_task(ds, c, val_normal, max_test)
        for method in methods:
            for seed in seeds:
                key = (ds.name, method, int(c), int(seed), preset)
                if method in TRAIN_METHODS and key not in done:
                    row = dict(zip(KEY, key, strict=True))
                    cell_cfg, train_x = _training_set(task, method, seed, cfg)
                    train_networks(train_x, cell_cfg.train, run_path(out, row), progress=False)
    return []


def _grid_images(task: OneClassTask, cfg: RunConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` normal test images and ``n`` anomalous ones, cycling over the classes."""
    is_anomaly = np.asarray(task.test_is_anomaly).astype(bool)
    normal = np.flatnonzero(~is_anomaly)[:n]
    others = sorted(set(task.test_labels[is_anomaly].tolist()))
    firsts = [np.flatnonzero(task.test_labels == c) for c in others]
    anomalous = [firsts[i % len(firsts)][i // len(firsts)] for i in range(n)]
    return (
        _inputs(task.test_images[normal], task.dataset, cfg),
        _inputs(task.test_images[anomalous], task.dataset, cfg),
    )


def save_generator_grids(
    side, task: OneClassTask, cfg: RunConfig, run_dir: Path, seed: int
) -> None:
    """``samples.png`` (8 x 16 samples G(h)) and, where there is an encoder,
    ``reconstructions.png`` (normal test images, their G(E(x)), anomalous ones, theirs: the
    paper's Figure 2) in ``run_dir``."""
    from contrasyn.quality import reconstructions, sample, save_grid

    save_grid(list(sample(side.G, 128, seed).split(16)), run_dir / "samples.png")
    if side.E is not None:
        normal, anomalous = _grid_images(task, cfg, 16)
        grid = [normal, reconstructions(side.G, side.E, normal)]
        grid += [anomalous, reconstructions(side.G, side.E, anomalous)]
        save_grid(grid, run_dir / "reconstructions.png")


def run_quality(
    out: str | Path,
    spaces: Sequence[str] = ("fd-rand",),
    inception: str | Path | None = None,
    val_normal: int | None = None,
    log=print,
    recompute: bool = False,
) -> list[dict]:
    """Sample quality of every ``csi+g``/``full`` run in a benchmark folder.

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
    from contrasyn.config import RunConfig, load_config
    from contrasyn.data import load_dataset
    from contrasyn.quality import feature_space, sample, sample_distance
    from contrasyn.trainer import data_fingerprint, load_generator, load_model

    out = Path(out)
    feature_nets = {name: feature_space(name, inception) for name in spaces}
    datasets: dict[str, ImageDataset] = {}
    # rows of an earlier call: kept for runs done before or without weights
    earlier = {tuple(q[k] for k in KEY): q for q in read_jsonl(out / "quality.jsonl")}
    rows = []
    for r in read_rows(out):
        if r["method"] not in ("csi+g", "full"):
            continue
        run_dir = run_path(out, r)
        kept = earlier.get(tuple(r[k] for k in KEY))
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
            datasets[r["dataset"]], r["normal_class"], val_normal, r.get("max_test")
        )
        images = _subsample(task.train_images, cfg.train.max_train, r["seed"])
        train_x = _inputs(images, task.dataset, cfg)
        if load_checkpoint(run_dir / "last")[1].get("data_sha256") != data_fingerprint(train_x):
            raise ConfigError(
                f"{run_dir}: its training images differ from the ones rebuilt here "
                "(another --val-normal?)"
            )
        side, _ = load_generator(run_dir / "last")
        row = {k: r[k] for k in KEY} | {"class_name": r.get("class_name"), "n": len(train_x)}
        for name, net in feature_nets.items():
            row[name.replace("-", "_")] = sample_distance(side.G, train_x, net, seed=r["seed"])
        # Where G's images sit in F's space: the AUROC of F's score (the run's default)
        # telling synthetic images from the normal test images; 0.5 = F takes them for normal.
        model, _ = load_model(run_dir / "last")
        scorer = Scorer(cfg.train, cfg.score).fit(model, train_x)
        is_normal = np.asarray(task.test_is_anomaly) == 0
        normal_x = _inputs(task.test_images[is_normal], task.dataset, cfg)
        synthetic = sample(side.G, len(normal_x), r["seed"] + 1)
        scored = [
            scorer.score_samples(model, x)[cfg.score.score].numpy() for x in (normal_x, synthetic)
        ]
        is_synthetic = np.r_[np.zeros(len(normal_x)), np.ones(len(synthetic))]
        row["synthetic_vs_normal_auroc"] = auroc(is_synthetic, -np.concatenate(scored))
        save_generator_grids(side, task, cfg, run_dir, r["seed"])
        rows.append(row)
        log(
            f"{r['dataset']} class {r['normal_class']} {r['method']}: "
            + ", ".join(f"{n} {row[n.replace('-', '_')]:.4g}" for n in feature_nets)
        )
    _write_quality(out, rows, [n.replace("-", "_") for n in spaces])
    if rows:
        from contrasyn.report import write_report

        write_report(out, next(iter(datasets.values())) if len(datasets) == 1 else None, log)
    return rows


def _write_quality(out: Path, rows: list[dict], metrics: list[str]) -> None:
    (out / "quality.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if rows:
        with (out / "quality.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    parts = []
    if rows:
        table = markdown_table(rows, "synthetic_vs_normal_auroc", bold=False)
        parts.append(
            "AUROC of F's score telling G's samples from normal test images "
            f"(0.5: F takes them for normal images):\n\n{table}\n"
        )
    for metric in metrics:
        table = markdown_table(rows, metric, lower_is_better=True, fmt=".4g")
        parts.append(
            f"Fréchet distance of samples to training images, {metric} "
            f"(lower is better):\n\n{table}\n"
        )
    (out / "quality.md").write_text("\n".join(parts))
