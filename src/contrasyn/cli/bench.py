"""The research verbs: ``benchmark``, ``demo``, ``report`` and ``quality``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from contrasyn.cli.options import (
    add_device,
    add_out,
    add_preset,
    add_root,
    add_settings,
    add_talk,
    add_time,
    add_verb,
    check_device,
    parse_list,
    read_settings,
    say,
    warn,
)
from contrasyn.config import check_seed
from contrasyn.errors import ConfigError
from contrasyn.names import BASELINES, METHOD_NAMES, OWN_SECTION

if TYPE_CHECKING:
    from contrasyn.data.base import ImageDataset

DEMO_OUT = "runs/demo"
# The five baselines and the cpu preset's method (the paper's ablation, csi+g and full, is
# the benchmark's: --methods adds them).
DEMO_METHODS = ",".join([*BASELINES, "csi"])


def _parse_classes(text: str, num_classes: int) -> list[int]:
    if text == "all":
        return list(range(num_classes))
    try:
        classes = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        classes = []
    if not classes:
        raise ConfigError(f"--classes takes 'all' or comma-separated indices, got {text!r}")
    return classes


def _load(name: str, root: str | None) -> ImageDataset:
    from contrasyn.data import load_dataset

    return load_dataset(name, **({"root": root} if root else {}))


def _with_device(overrides: dict, device: str) -> dict:
    """``--device`` as the benchmark's ``train.device`` (every cell's device, baselines
    included); a ``--set train.device`` still works alone, and may not contradict it."""
    given = overrides.get("train", {}).get("device")
    if device != "auto":
        if given is not None and given != device:
            raise ConfigError(f"--device {device} contradicts train.device={given}")
        overrides = {**overrides, "train": {**overrides.get("train", {}), "device": device}}
    elif given is not None:
        check_device(str(given))
    return overrides


def _run_benchmark(
    args: argparse.Namespace,
    ds: ImageDataset,
    classes: str,
    methods: str,
    seeds: str,
    preset: str,
    out: str,
    overrides: dict,
    train_images: int | None = None,
) -> list[dict]:
    from contrasyn.evaluation.bench import METHODS, run_benchmark

    method_list = parse_list(methods)
    unknown = [m for m in method_list if m not in METHODS]
    if unknown:
        raise ConfigError(
            f"unknown method(s) {', '.join(unknown)}; available: {', '.join(METHODS)}"
        )
    return run_benchmark(
        ds,
        _parse_classes(classes, ds.num_classes),
        method_list,
        [check_seed(seed, "--seeds") for seed in parse_list(seeds, int)],
        preset,
        _with_device(overrides, args.device),
        out,
        val_normal=args.val_normal,
        progress=not args.quiet,
        log=say(args),
        command=args.command_line,
        max_test=args.max_test,
        verbose=args.verbose,
        report=not getattr(args, "no_report", False),
        train_images=train_images,
    )


def _with_time(overrides: dict, methods: str, time_budget: str | None) -> dict:
    """``overrides`` with ``--time`` in the section of every method that fits by the clock
    (each method's ``with_time_budget``), so the budget is part of every cell's settings and
    of its configuration hash."""
    if time_budget is None:
        return overrides
    from contrasyn.budget import parse_duration
    from contrasyn.methods.registry import method_class

    seconds = parse_duration(time_budget)
    for name in dict.fromkeys(m.strip() for m in methods.split(",") if m.strip()):
        overrides = method_class(name).with_time_budget(name, overrides, seconds)
    return overrides


def cmd_benchmark(args: argparse.Namespace) -> int:
    from contrasyn.evaluation.results import interval_table, markdown_table, paired_matrix

    sizes = _train_sizes(args.train_images)
    overrides = _with_time(read_settings(args), args.methods, args.time)
    ds = _load(args.dataset, args.root)
    for size in sizes:
        out = args.out if size is None else str(Path(args.out) / f"train-{size}")
        if size is not None:
            say(args)(f"training on {size} images of each class: {out}")
        rows = _run_benchmark(
            args, ds, args.classes, args.methods, args.seeds, args.preset, out, overrides, size
        )
        print(markdown_table(rows))
        print("\nMean AUROC over classes [95% interval; classes fixed, seeds as replicates]:\n")
        print(interval_table(rows))
        print(
            "\nPaired differences, row minus column: mean over classes [95% interval], "
            "classes won:\n"
        )
        print(paired_matrix(rows))
        print(
            f"\nresults: {Path(out) / 'results.csv'} (and results.jsonl, table.md); "
            f"report: {Path(out) / 'report.html'}"
        )
    return 0


def _train_sizes(text: str | None) -> list[int | None]:
    """``--train-images 50,200`` as sizes (``[None]``: the class's images, no axis)."""
    if text is None:
        return [None]
    sizes = parse_list(text, int)
    if not sizes or min(sizes) < 1:
        raise ConfigError(
            f"--train-images takes comma-separated image counts of at least 1, got {text!r}"
        )
    return list(dict.fromkeys(sizes))


def cmd_demo(args: argparse.Namespace) -> int:
    """A real end-to-end run: the default method and the baselines (the ``demo`` preset, a
    cut-down ``cpu``) on two one-class tasks, a stratified test subsample scored, the table
    and the report written."""
    import numpy as np

    from contrasyn.errors import DataError
    from contrasyn.evaluation.results import markdown_table

    try:
        ds = _load("fashion-mnist", args.root)
    except DataError:
        print("Fashion-MNIST not found (apt-get install dataset-fashion-mnist); using digits")
        ds = _load("digits", None)
    if args.val_normal is None:  # a smaller validation set than the benchmark's: less to score
        args.val_normal = min(200, int(np.bincount(ds.train_labels).min()) // 10)
    t0 = time.perf_counter()
    test = f"{args.max_test} test images" if args.max_test else "the whole test split"
    print(
        f"contrasyn demo: {ds.name}, normal class {args.classes}, methods {args.methods} "
        f"(preset demo), {test} scored; results in {args.out}",
        flush=True,
    )
    rows = _run_benchmark(args, ds, args.classes, args.methods, "0", "demo", args.out, {})
    print()
    print(markdown_table(rows))
    print(
        f"\nAUROC, anomalies positive. Wall time {time.perf_counter() - t0:.0f} s.\n"
        f"Report: {Path(args.out) / 'report.html'} (charts, ROC curves, histograms, images). "
        f"Results: {Path(args.out) / 'results.csv'}; per-run logs and checkpoints under "
        f"{Path(args.out) / 'runs'}.\nThe demo preset is cut down to fit ~10 minutes; the "
        "10-class benchmark at the cpu preset is in benchmarks/results/README.md"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from contrasyn.errors import DataError
    from contrasyn.evaluation.report import write_report
    from contrasyn.evaluation.results import read_rows

    rows = read_rows(Path(args.results))
    if not rows:
        raise ConfigError(f"{Path(args.results) / 'results.jsonl'}: no benchmark results there")
    names = {r["dataset"] for r in rows}
    ds = None
    if len(names) == 1:
        try:
            ds = _load(names.pop(), args.root)
        except DataError as e:
            warn(f"{e}; the report leaves out the test images")
    write_report(args.results, ds, log=lambda msg: None)
    print(f"report: {Path(args.results) / 'report.html'}")
    return 0


def _quality_folder(args: argparse.Namespace) -> str:
    """``quality DIR``, or the deprecated ``quality --results DIR``."""
    if args.results_option is not None:
        if args.results is not None and args.results != args.results_option:
            raise ConfigError(
                f"two benchmark folders given, {args.results} and --results "
                f"{args.results_option}: name one, as `contrasyn quality DIR`"
            )
        warn("--results is deprecated: name the folder alone, `contrasyn quality DIR`")
        return args.results_option
    if args.results is None:
        raise ConfigError("quality needs the benchmark folder: contrasyn quality DIR")
    return args.results


def cmd_quality(args: argparse.Namespace) -> int:
    from contrasyn.evaluation.quality import FEATURE_SPACES
    from contrasyn.evaluation.sample_quality import run_quality

    folder = _quality_folder(args)
    spaces = parse_list(args.space)
    unknown = [s for s in spaces if s not in FEATURE_SPACES]
    if unknown:
        raise ConfigError(
            f"unknown feature space(s) {', '.join(unknown)}; known: {', '.join(FEATURE_SPACES)}"
        )
    rows = run_quality(folder, spaces, args.inception, args.val_normal, recompute=args.recompute)
    if not rows:
        raise ConfigError(f"{folder}: no trained csi+g or full runs with weights there")
    print((Path(folder) / "quality.md").read_text())
    print(
        f"quality: {Path(folder) / 'quality.csv'}; image grids in each run's folder; "
        f"report: {Path(folder) / 'report.html'}"
    )
    return 0


# ------------------------------------------------------------------------------ parsers


def _add_run_flags(p: argparse.ArgumentParser, default_max_test: int | None = None) -> None:
    """What benchmark and demo share besides the common flags."""
    add_device(p)
    add_root(p)
    p.add_argument(
        "--val-normal",
        type=int,
        default=None,
        metavar="N",
        help="normal train images held out (with as many other-class train "
        "images) to validate score choices; never the test split "
        "(default: 10%% of the class, at most 500; the demo: at most 200)",
    )
    add_talk(
        p,
        quiet="no progress bars or per-cell lines",
        verbose="also print the training losses as they are logged (useful in log files, "
        "where no progress bar is drawn)",
    )
    p.add_argument(
        "--max-test",
        type=int,
        default=default_max_test,
        metavar="N",
        help="score a seeded, class-stratified subsample of this many test images "
        "(quick runs; reported benchmarks score the whole split"
        + (", the default)" if default_max_test is None else f"; default {default_max_test})"),
    )


def add_commands(sub) -> None:
    methods = ", ".join(METHOD_NAMES)
    bench = add_verb(
        sub,
        "benchmark",
        help="one-class benchmark: every class x method x seed, "
        "resumable; writes results.csv/.jsonl and table.md",
        description=[
            "The one-class protocol on a labelled dataset: for each normal class of --classes, "
            "each method of --methods and each seed of --seeds, train on that class's training "
            "images and score the whole test split (AUROC, anomalies positive). Every finished "
            "cell is appended to DIR/results.jsonl at once, so a stopped benchmark rerun with "
            "the same arguments continues where it stopped; results.csv, table.md and "
            "report.html are rewritten from it.",
            "Settings: --preset, then --config/--set by section: train.FIELD and score.FIELD "
            "for the CSI family (csi, csi+g, full; the fields of TrainConfig and ScoreConfig in "
            "contrasyn/config.py; train.image_size and train.channels are every method's input), "
            f"and another method's name for its own settings ({', '.join(OWN_SECTION)}; e.g. "
            "rot.epochs).",
        ],
        examples=[
            "contrasyn benchmark --dataset fashion-mnist --methods knn,csi --out runs/fmnist",
            "contrasyn benchmark --dataset fashion-mnist --classes 0,3 --methods csi,full \\",
            "    --seeds 0,1 --set train.epochs=30 --out runs/ablation",
            "contrasyn benchmark --dataset synthetic --preset tiny --classes 0 \\",
            "    --methods rot,goad --set rot.epochs=1 --device cpu --out runs/smoke",
            "contrasyn benchmark --methods knn,csi --seeds 0,1,2 --train-images 50,200 \\",
            "    --set train.steps=500 --out runs/few-images   # writes train-50/, train-200/",
        ],
    )
    bench.add_argument(
        "--dataset", default="fashion-mnist", help="see `contrasyn data list` (default %(default)s)"
    )
    bench.add_argument(
        "--classes", default="all", help="'all' or e.g. 0,3,7 (normal class per task)"
    )
    bench.add_argument(
        "--methods", default="knn,csi", help=f"comma-separated: {methods} (default knn,csi)"
    )
    bench.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    add_preset(bench)
    add_time(bench, "each cell's fit (training, the bank; decoding and test scores are not in it)")
    add_out(bench, "the results folder; rerun with the same one to resume", "DIR", required=True)
    add_settings(
        bench,
        f"sections train, score (the CSI family) and {', '.join(OWN_SECTION)}",
        "train.epochs=5",
    )
    _add_run_flags(bench)
    bench.add_argument(
        "--train-images",
        default=None,
        metavar="N[,N...]",
        help="train each cell on this many of the class's images (a seeded subset per seed, "
        "nested across sizes; the validation and test splits are unchanged), one results "
        "folder DIR/train-N per size; methods must then train by steps or --time",
    )
    bench.add_argument(
        "--no-report",
        action="store_true",
        help="leave report.html alone (several benchmark processes sharing one folder; "
        "rebuild it once with `contrasyn report DIR`)",
    )
    bench.set_defaults(func=cmd_benchmark)

    demo = add_verb(
        sub,
        "demo",
        help="a ~10-minute real run: the default and five baselines on two Fashion-MNIST tasks, "
        "table and HTML report",
        description=[
            "A real end-to-end benchmark in about ten minutes on a laptop CPU: the default "
            "method (csi scored with feat+pix, fitted by the clock: three minutes a task at "
            "the demo preset) beside the five baselines on Fashion-MNIST with normal classes "
            "0 and 1 (the digits dataset when Fashion-MNIST is not installed), a stratified "
            "1000-image test subsample scored. Prints the AUROC table and writes the results "
            "and report.html to --out; rerun to resume. --methods adds the paper's ablation "
            "(csi+g, full).",
        ],
        examples=[
            "contrasyn demo",
            "contrasyn demo --methods knn,csi --out runs/quick-demo",
            "contrasyn demo --device cuda:1 --out runs/demo-gpu",
        ],
    )
    add_out(demo, f"the results folder (default {DEMO_OUT})", "DIR", default=DEMO_OUT)
    demo.add_argument("--classes", default="0,1", help="normal classes (default 0,1)")
    demo.add_argument("--methods", default=DEMO_METHODS, help=f"default {DEMO_METHODS}")
    _add_run_flags(demo, default_max_test=1000)
    demo.set_defaults(func=cmd_demo)

    rep = add_verb(
        sub,
        "report",
        help="rebuild a benchmark folder's report.html from its result files",
        description=[
            "Rewrites DIR/report.html and its figures (DIR/report/) from what the benchmark "
            "wrote: the AUROC tables and chart, per class the ROC curves, score histograms "
            "and the most normal and most anomalous test images, sample and reconstruction "
            "grids, loss curves, the configuration, versions and wall time. The benchmark "
            "writes it at the end of every run; this command is for a folder copied "
            "elsewhere or after `contrasyn quality`.",
        ],
        examples=[
            "contrasyn report runs/fmnist",
            "contrasyn report copied-results/ --root /data/fashion-mnist",
        ],
    )
    rep.add_argument("results", metavar="DIR", help="a folder written by `contrasyn benchmark`")
    add_root(rep, "dataset folder, for the test images (default: its usual place)")
    rep.set_defaults(func=cmd_report)

    qual = add_verb(
        sub,
        "quality",
        help="sample quality of a benchmark's csi+g/full runs: Fréchet distance, image grids",
        description=[
            "For every csi+g and full run of a benchmark folder whose weights are there: the "
            "Fréchet distance between samples G(h) and the run's training images, and PNG "
            "grids (samples.png; for full, reconstructions.png: normal and anomalous test "
            "images above their reconstructions G(E(x))). Writes quality.csv, quality.jsonl "
            "and quality.md into the folder and rebuilds its report.html. Runs on the CPU.",
            "Feature spaces: fd-rand (default), a fixed random ResNet-18, comparable between "
            "runs and not FID; fid, Inception-v3 pool features, which needs torchvision and "
            "the weights file inception_v3_google-0cc3c7bd.pth in ~/.cache/contrasyn/ "
            "(or --inception PATH).",
        ],
        examples=[
            "contrasyn quality benchmarks/results/fashion-mnist-variants-cpu",
            "contrasyn quality runs/variants --space fd-rand,fid --recompute",
        ],
    )
    qual.add_argument(
        "results",
        metavar="DIR",
        nargs="?",
        help="a folder written by `contrasyn benchmark`",
    )
    # the old spelling, `quality --results DIR`: still read, no longer shown
    qual.add_argument("--results", dest="results_option", help=argparse.SUPPRESS)
    qual.add_argument(
        "--space", default="fd-rand", help="comma-separated: fd-rand, fid (default fd-rand)"
    )
    qual.add_argument(
        "--inception", default=None, metavar="FILE", help="Inception-v3 weights file (for fid)"
    )
    qual.add_argument(
        "--val-normal",
        type=int,
        default=None,
        metavar="N",
        help="as given to the benchmark, if it was",
    )
    qual.add_argument(
        "--recompute",
        action="store_true",
        help="measure every run again (default: keep runs measured before in these spaces)",
    )
    qual.set_defaults(func=cmd_quality)
