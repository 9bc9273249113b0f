"""The benchmark harness: every (task, method, seed) cell in one protocol, resumable.

Every cell is a ``Detector`` (``detector``): the estimator a user's ``fit`` builds, at the
benchmark's preset and overrides, so the published numbers come from the users' code path.
Each finished cell appends one row to ``results.jsonl`` (the source of truth) and the CSV
``results.csv`` and Markdown ``table.md`` are rewritten from it (``evaluation.results``), so
a killed benchmark rerun with the same arguments skips what is done. Methods with several
scores add ``auroc_<score>`` and ``val_auroc_<score>`` columns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from contrasyn import distributed
from contrasyn.api.detector import Detector
from contrasyn.api.lock import shared_writes
from contrasyn.api.metrics import auroc, evaluate
from contrasyn.config import save_config
from contrasyn.data import default_resize_policy, to_model_input
from contrasyn.data.base import ImageDataset
from contrasyn.data.protocol import (
    OneClassTask,
    index_sha,
    one_class_task,
    subsample_test,
    subsample_train,
)
from contrasyn.device import resolve_device
from contrasyn.errors import ConfigError
from contrasyn.evaluation.results import KEY, cell_key, read_rows, run_path, save_npz, write_tables
from contrasyn.methods.csi_config import RunConfig
from contrasyn.methods.presets import get_preset
from contrasyn.methods.registry import (
    OWN_SETTINGS,
    Method,
    build_method,
    method_class,
    sections_of_methods,
)
from contrasyn.names import METHOD_NAMES
from contrasyn.textfiles import write_text

METHODS = METHOD_NAMES
# the row field saying how ``config_sha`` was computed (``config_sha``'s scheme since the first
# one, whose committed rows were rehashed to this one)
SCHEME = 2


def model_inputs(images: np.ndarray, dataset: str, cfg: RunConfig) -> torch.Tensor:
    """A task's uint8 images as the model input of ``cfg`` (its size and channels, the
    dataset's resize policy)."""
    return to_model_input(
        images, cfg.train.image_size, cfg.train.channels, default_resize_policy(dataset)
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
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "cuda": torch.cuda.get_device_name() if device.startswith("cuda") else None,
    }


def _cpu_model() -> str | None:
    """The CPU's model name and its bf16 support (Linux), for every timing recorded."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    lines = info.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if "model name" in ln), "")
    flags = next((ln for ln in lines if ln.startswith("flags")), "").split()
    extras = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model} ({' '.join(extras)})" if model else None


def computed_on(method: Method) -> dict:
    """What a row's numbers were computed with: the effective precision (bf16 or fp32; the
    same ``precision: auto`` trains in bf16 on one CPU and fp32 on another), the device, the
    machine (CPU model or GPU name) and torch's version."""
    device = method.device
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model()
    return {
        "precision": method.precision,
        "device": str(device),
        "machine": machine,
        "torch": torch.__version__,
    }


def _run_config(preset: str, overrides: dict) -> RunConfig:
    """The preset's run configuration with the overrides' sections it has: every cell's
    device, model input size and scoring protocol (one deterministic pass or R draws)."""
    sections = {f.name for f in dataclasses.fields(RunConfig)}
    return get_preset(preset, {k: v for k, v in overrides.items() if k in sections})


def detector(
    method: str,
    preset: str,
    overrides: dict,
    seed: int,
    run_dir: Path | None = None,
    progress: bool = False,
    verbose: bool = False,
) -> Detector:
    """The ``Detector`` of one benchmark cell: the user's estimator at ``preset`` with the
    benchmark's ``overrides`` (the sections ``method`` reads: {"train": .., "score": ..} for
    the CSI family, {"rot": ..} for a baseline), no threshold hold-out (the task has its own
    validation split), the preset's device, input size and scoring (deterministic or R
    draws) and ``run_dir`` for the checkpoints of a method that keeps them."""
    run = _run_config(preset, overrides)
    deterministic = not run.score.augment
    cls = method_class(method)
    settings = {
        section: {
            name: value
            for name, value in overrides[section].items()
            if name not in OWN_SETTINGS
            and not (deterministic and name in ("augment", "ensemble"))  # the preset's pass
        }
        for section in cls.sections(method)
        if section in overrides
    }
    return Detector(
        method=method, preset=preset, settings=settings, seed=seed, holdout=0.0,
        image_size=run.train.image_size, channels=run.train.channels, device=run.train.device,
        deterministic=deterministic, checkpoint_dir=run_dir if cls.trains_network else None,
        progress=progress, verbose=verbose,
    )  # fmt: skip


def check_overrides(overrides: dict) -> None:
    """Sections of ``--config``/``--set``: each one some method's."""
    known = sections_of_methods()
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        listed = "; ".join(f"{s} ({m})" for s, m in known.items())
        raise ConfigError(f"unknown override section(s) {', '.join(unknown)}: use {listed}")


def run_cell(
    task: OneClassTask,
    method: str,
    seed: int,
    preset: str = "cpu",
    overrides: dict | None = None,
    run_dir: Path | None = None,
    progress: bool = True,
    verbose: bool = False,
) -> dict:
    """Fit and score one method on one task, through ``Detector`` exactly as a user's ``fit``
    runs; returns the metrics row (without the key)."""
    overrides = overrides or {}
    cfg = _run_config(preset, overrides)
    det = detector(method, preset, overrides, seed, run_dir, progress, verbose)
    train_x = model_inputs(task.train_images, task.dataset, cfg)
    test_x = model_inputs(task.test_images, task.dataset, cfg)
    t0 = time.perf_counter()
    det.fit(train_x)
    t1 = time.perf_counter()
    scores = {k: -v for k, v in det.scores(test_x).items()}
    val = None
    if task.val_images is not None:
        val_x = model_inputs(task.val_images, task.dataset, cfg)
        val = {k: -v for k, v in det.scores(val_x).items()}
    t2 = time.perf_counter()
    default = det.score_name_
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        det.method_.save_settings(run_dir)
        losses = det.method_.losses
        if losses:
            write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in losses))
        if det.generator_ is not None:
            save_generator_grids(det.generator_, task, cfg, run_dir, seed)
        index = {} if task.test_index is None else {"test_index": task.test_index}
        if val is not None:  # what score choices are made on, kept to compare them later
            save_npz(run_dir / "val_scores.npz", is_anomaly=task.val_is_anomaly, **val)
        save_npz(
            run_dir / "test_scores.npz",
            is_anomaly=task.test_is_anomaly,
            labels=task.test_labels,
            **index,
            **scores,
        )
    if verbose and det.method_.losses:
        print(
            f"{method} losses: "
            + ", ".join(f"{r['phase']} {r['epoch']} {r['loss']:.4g}" for r in det.method_.losses),
            flush=True,
        )
    row: dict = {"score": default, **computed_on(det.method_)}
    row.update(evaluate(task.test_is_anomaly, scores[default], task.test_labels))
    row.update(
        train_seconds=round(t1 - t0, 2),
        score_seconds=round(t2 - t1, 2),
        n_train=det.n_train_,
        n_test=len(test_x),
    )
    if det.method_.time_budget is not None:  # fitted by the clock: the length it chose
        row.update(time_budget=det.method_.time_budget, length=det.method_.length)
    if len(scores) > 1:
        for name, s in scores.items():
            row[f"auroc_{name}"] = auroc(task.test_is_anomaly, s)
    if val is not None:
        for name, s in val.items():
            row[f"val_auroc_{name}"] = auroc(task.val_is_anomaly, s)
    return row


def config_sha(
    method: str,
    preset: str,
    overrides: dict,
    max_test: int | None = None,
    train_images: int | None = None,
) -> str:
    """A short hash of what a cell's result depends on besides its key
    (``Method.result_settings`` of the cell's resolved settings and input size), the test
    subsample size and the training-set size, if any: rows of one method in one folder must
    share it, so a resumed benchmark never mixes settings."""
    config, inputs = detector(method, preset, overrides, seed=0).resolve()
    relevant = method_class(method).result_settings(method, config, inputs)
    text = json.dumps(relevant, sort_keys=True)
    if max_test is not None:
        text += f"|max_test={max_test}"
    if train_images is not None:
        text += f"|train_images={train_images}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _check_folder(
    out: Path,
    rows: list[dict],
    methods: Sequence[str],
    preset: str,
    overrides: dict,
    max_test: int | None,
    train_images: int | None = None,
) -> dict[str, str]:
    """Each method's config hash; refuses a folder whose rows were made with another one."""
    shas = {m: config_sha(m, preset, overrides, max_test, train_images) for m in methods}
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


def method_precisions(
    methods: Sequence[str], preset: str, overrides: dict, device: str
) -> dict[str, str]:
    """The precision each method will compute in on ``device`` (``Method.precision``)."""
    out = {}
    for m in methods:
        config = detector(m, preset, overrides, seed=0).resolve().config
        out[m] = build_method(m, config, device=device).precision
    return out


def check_precision(out: Path, rows: list[dict], preset: str, precisions: dict[str, str]) -> None:
    """Refuse a folder whose rows of a method were computed in another precision than this
    machine computes it in: they are other cells (bf16 and fp32 results differ), and a
    folder holds one cell per key, so resuming would mix the two."""
    for method, precision in precisions.items():
        other = {
            r.get("precision") or "an unrecorded precision"
            for r in rows
            if r["preset"] == preset and r["method"] == method
        } - {precision}
        if other:
            raise ConfigError(
                f"{out} holds {preset!r} {method} results computed in "
                f"{', '.join(sorted(other))}; here {method} computes in {precision}, so its "
                "cells would not be the same: use another --out"
            )


def benchmark_task(
    ds: ImageDataset,
    normal: int,
    val_normal: int | None = None,
    max_test: int | None = None,
    train_images: int | None = None,
    seed: int = 0,
) -> OneClassTask:
    """The one-class task of a benchmark cell: ``val_normal`` normal train images (default:
    10% of the class, at most 500) are held out for validation; the whole test split is
    scored unless ``max_test`` asks for a stratified subsample (quick runs only); training
    uses the rest, or ``train_images`` of them drawn with the cell's ``seed``
    (``subsample_train``). The validation and test splits do not depend on either."""
    n_normal = int((ds.train_labels == normal).sum())
    n_val = min(500, n_normal // 10) if val_normal is None else val_normal
    task = one_class_task(ds, normal, val_normal=n_val, val_seed=0)
    task = task if max_test is None else subsample_test(task, max_test)
    return task if train_images is None else subsample_train(task, train_images, seed)


def check_lengths(methods: Sequence[str], preset: str, overrides: dict, train_images: int) -> None:
    """At a training-set size chosen to be small, refuse a method whose length counts epochs
    (``Method.counts_epochs``): epochs of 50 images are a few steps, so sizes would differ in
    training as well as in images. Steps or a time budget keep the training the same."""
    for m in methods:
        method = build_method(m, detector(m, preset, overrides, seed=0).resolve().config)
        if method.counts_epochs:
            remedy = (
                f"give it steps (--set {method.steps_setting}=N) or a time budget (--time)"
                if method.steps_setting
                else "it has no length in steps or time: leave it out at a training-set size"
            )
            raise ConfigError(
                f"--train-images {train_images}: {m} trains for {method.length}, which "
                f"shrinks with the images; {remedy}"
            )


def run_benchmark(
    ds: ImageDataset,
    classes: Sequence[int],
    methods: Sequence[str],
    seeds: Sequence[int],
    preset: str,
    overrides: dict,
    out: str | Path,
    val_normal: int | None = None,
    progress: bool = True,
    log=print,
    command: str | None = None,
    report: bool = True,
    max_test: int | None = None,
    verbose: bool = False,
    train_images: int | None = None,
) -> list[dict]:
    """Run every cell not already in ``out/results.jsonl``; returns all rows.

    ``overrides`` are nested: {"train": .., "score": ..} for the CSI family, {"rot": ..} and
    so on for a baseline. ``val_normal`` normal train images per task are held out for
    validation (default: 10% of the class, at most 500). Rows record a hash of the
    configuration; resuming into a folder whose rows for this preset were made with another
    configuration is refused. ``max_test`` scores a stratified subsample of the test split
    (recorded in each row). ``train_images`` trains every cell on that many of the class's
    images, drawn with the cell's seed (recorded in each row with a hash of the subset, and
    in the configuration hash); methods must then train by steps or by time
    (``check_lengths``). Each invocation appends its versions and machine (and
    ``command``) to ``environment.json``; at the end ``report.html`` is rewritten if any
    cell ran (or there is none), unless ``report`` is False.
    """
    out = Path(out)
    check_overrides(overrides)
    cfg = _run_config(preset, overrides)
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"unknown method {m!r}; available: {', '.join(METHODS)}")
        # bad settings, or a missing dependency: fail before any run
        method_class(m).preflight(detector(m, preset, overrides, seed=0).resolve().config)
    if train_images is not None:
        check_lengths(methods, preset, overrides, train_images)
    sizes = (val_normal, max_test, train_images)
    if distributed.launched() and not distributed.is_main():
        return _train_alongside(ds, classes, methods, seeds, preset, overrides, out, sizes)
    out.mkdir(parents=True, exist_ok=True)
    # other processes may fill this folder too (one per group of classes): every
    # read-modify-write of its shared files is one turn of ``shared_writes``
    with shared_writes(out):
        rows = read_rows(out)
        shas = _check_folder(out, rows, methods, preset, overrides, max_test, train_images)
    device = str(distributed.init(resolve_device(cfg.train.device)))
    check_precision(out, rows, preset, method_precisions(methods, preset, overrides, device))
    env_path = out / "environment.json"
    with shared_writes(out):
        save_config(cfg, out / f"preset-{preset}.json")
        sessions = json.loads(env_path.read_text()) if env_path.exists() else []
        session = environment(device, command)
        write_text(env_path, json.dumps([*sessions, session], indent=2) + "\n")
    done = {cell_key(r) for r in rows}
    distributed.barrier()  # the other ranks read the same finished cells (_train_alongside)
    log(f"device {device}; {len(done)} cell(s) already done in {out}")
    pending = _pending(ds, classes, methods, seeds, preset, done, sizes)
    for task, method, seed, key in pending:
        c = key[2]
        row = dict(
            zip(KEY, key, strict=True),
            class_name=ds.class_names[c],
            config_sha=shas[method],
            config_scheme=SCHEME,
            **({} if max_test is None else {"max_test": max_test}),
            **(
                {}
                if task.train_index is None
                else {"train_images": train_images, "train_subset": index_sha(task.train_index)}
            ),
        )
        run_dir = run_path(out, row)
        row.update(run_cell(task, method, seed, preset, overrides, run_dir, progress, verbose))
        with shared_writes(out):
            on_disk = read_rows(out)
            if key in {cell_key(r) for r in on_disk}:
                log(f"{key}: another process finished this cell first; its row is kept")
                continue
            with (out / "results.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")
            write_tables(out, [*on_disk, row])
        log(
            f"{ds.name} class {c} ({ds.class_names[c]}) {method} seed {seed}: "
            f"AUROC {row['auroc']:.4f} ({row['score']}), train {row['train_seconds']} s, "
            f"score {row['score_seconds']} s"
        )
    with shared_writes(out):
        rows = read_rows(out)
        write_tables(out, rows)
    ran = len(rows) > len(done)
    if report and rows and (ran or not (out / "report.html").exists()):
        from contrasyn.evaluation.report import write_report

        write_report(out, ds, log=log)
    return rows


def _train_alongside(
    ds: ImageDataset,
    classes: Sequence[int],
    methods: Sequence[str],
    seeds: Sequence[int],
    preset: str,
    overrides: dict,
    out: Path,
    sizes: tuple[int | None, int | None, int | None],
) -> list[dict]:
    """A benchmark on a rank > 0 under ``torchrun``: it takes its part in training every
    unfinished cell of a method that trains a network (the CSI family), in rank 0's order
    (the same ``Detector.fit``, which on a rank > 0 only trains); rank 0 runs the other
    methods, scores and writes. Returns no rows."""
    cfg = _run_config(preset, overrides)
    device = str(distributed.init(resolve_device(cfg.train.device)))
    rows = read_rows(out)
    _check_folder(out, rows, methods, preset, overrides, *sizes[1:])  # fails as rank 0 does
    check_precision(out, rows, preset, method_precisions(methods, preset, overrides, device))
    done = {cell_key(r) for r in rows}
    distributed.barrier()  # rank 0 has read the same rows and has not yet written any
    for task, method, seed, key in _pending(ds, classes, methods, seeds, preset, done, sizes):
        if method_class(method).trains_network:
            row = dict(zip(KEY, key, strict=True))
            det = detector(method, preset, overrides, seed, run_path(out, row))
            det.fit(model_inputs(task.train_images, task.dataset, cfg))
    return []


def _pending(
    ds: ImageDataset,
    classes: Sequence[int],
    methods: Sequence[str],
    seeds: Sequence[int],
    preset: str,
    done: set[tuple],
    sizes: tuple[int | None, int | None, int | None],
) -> Iterator[tuple[OneClassTask, str, int, tuple]]:
    """The cells still to run, in the order every rank runs them: (task, method, seed, key)
    per class, then method, then seed. ``sizes`` are the validation, test and training
    sizes (``benchmark_task``); each class's task is built once, and its training subset
    once a seed when there is one."""
    val_normal, max_test, train_images = sizes
    for c in classes:
        task = None
        subsets: dict[int, OneClassTask] = {}
        for method in methods:
            for seed in seeds:
                key = (ds.name, method, int(c), int(seed), preset)
                if key in done:
                    continue
                task = task or benchmark_task(ds, c, val_normal, max_test)
                if train_images is not None and seed not in subsets:
                    subsets[seed] = subsample_train(task, train_images, int(seed))
                yield subsets.get(seed, task), method, int(seed), key


def _grid_images(task: OneClassTask, cfg: RunConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` normal test images and ``n`` anomalous ones, cycling over the classes."""
    is_anomaly = np.asarray(task.test_is_anomaly).astype(bool)
    normal = np.flatnonzero(~is_anomaly)[:n]
    others = sorted(set(task.test_labels[is_anomaly].tolist()))
    firsts = [np.flatnonzero(task.test_labels == c) for c in others]
    anomalous = [firsts[i % len(firsts)][i // len(firsts)] for i in range(n)]
    return (
        model_inputs(task.test_images[normal], task.dataset, cfg),
        model_inputs(task.test_images[anomalous], task.dataset, cfg),
    )


def save_generator_grids(
    side, task: OneClassTask, cfg: RunConfig, run_dir: Path, seed: int
) -> None:
    """``samples.png`` (8 x 16 samples G(h)) and, where there is an encoder,
    ``reconstructions.png`` (normal test images, their G(E(x)), anomalous ones, theirs: the
    paper's Figure 2) in ``run_dir``."""
    from contrasyn.evaluation.quality import save_grid
    from contrasyn.methods.csi.adversarial import reconstructions, sample

    save_grid(list(sample(side.sampler, 128, seed).split(16)), run_dir / "samples.png")
    if side.E is not None:
        normal, anomalous = _grid_images(task, cfg, 16)
        grid = [side.from_model(normal), reconstructions(side, normal)]
        grid += [side.from_model(anomalous), reconstructions(side, anomalous)]
        save_grid(grid, run_dir / "reconstructions.png")
