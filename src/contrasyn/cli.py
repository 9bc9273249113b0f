"""The ``contrasyn`` command line.

Exit codes: 0 success, 2 a problem with the input or configuration (the message says what and
where), 1 anything unexpected (a bug: the traceback is printed), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from contrasyn import __version__
from contrasyn.errors import ConfigError, ContrasynError

if TYPE_CHECKING:
    from contrasyn.data.base import ImageDataset

DEMO_OUT = "runs/demo"


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


def _parse_list(text: str, kind: type = str) -> list:
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise ConfigError(
            f"cannot read {text!r} as a comma-separated list of {kind.__name__}"
        ) from e


def _overrides(args: argparse.Namespace) -> dict:
    """Config overrides from ``--config FILE`` (JSON/YAML, nested {"train":..,"score":..})
    then ``--set train.epochs=5`` flags, later ones winning."""
    import yaml

    over: dict = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        over = yaml.safe_load(path.read_text()) or {}
        if not isinstance(over, dict):
            raise ConfigError(f"{path}: expected a mapping with 'train' and/or 'score'")
    for item in getattr(args, "set", None) or []:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise ConfigError(
                f"--set expects section.field=value (e.g. train.epochs=5), got {item!r}"
            )
        over.setdefault(section, {})[name] = yaml.safe_load(value)
    return over


def cmd_data(args: argparse.Namespace) -> int:
    from contrasyn.data import download, list_datasets, load_dataset

    if args.action == "list":
        print("\n".join(list_datasets()))
    elif args.action == "info":
        kwargs = {"root": args.root} if args.root else {}
        print(load_dataset(args.name, **kwargs).summary())
    elif args.action == "download":
        path = download(args.name, args.root)
        print(f"{args.name}: files are in {path}")
    return 0


def _run_benchmark(
    args: argparse.Namespace,
    ds: ImageDataset,
    classes: str,
    methods: str,
    seeds: str,
    preset: str,
    out: str,
    overrides: dict,
) -> list[dict]:
    from contrasyn.bench import METHODS, run_benchmark
    from contrasyn.presets import get_preset

    method_list = _parse_list(methods)
    unknown = [m for m in method_list if m not in METHODS]
    if unknown:
        raise ConfigError(
            f"unknown method(s) {', '.join(unknown)}; available: {', '.join(METHODS)}"
        )
    cfg = get_preset(preset, overrides)
    log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, flush=True))
    return run_benchmark(
        ds,
        _parse_classes(classes, ds.num_classes),
        method_list,
        _parse_list(seeds, int),
        preset,
        cfg,
        out,
        val_normal=args.val_normal,
        progress=not args.quiet,
        log=log,
    )


def _load(name: str, root: str | None) -> ImageDataset:
    from contrasyn.data import load_dataset

    return load_dataset(name, **({"root": root} if root else {}))


def cmd_benchmark(args: argparse.Namespace) -> int:
    from contrasyn.bench import markdown_table

    ds = _load(args.dataset, args.root)
    rows = _run_benchmark(
        args, ds, args.classes, args.methods, args.seeds, args.preset, args.out, _overrides(args)
    )
    print(markdown_table(rows))
    print(f"\nresults: {Path(args.out) / 'results.csv'} (and results.jsonl, table.md)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A real end-to-end run: CSI (CPU preset, shortened) against raw-pixel kNN on two
    one-class tasks, the whole test split scored."""
    from contrasyn.bench import markdown_table
    from contrasyn.errors import DataError

    try:
        ds = _load("fashion-mnist", args.root)
    except DataError:
        print("Fashion-MNIST not found (apt-get install dataset-fashion-mnist); using digits")
        ds = _load("digits", None)
    t0 = time.perf_counter()
    print(
        f"contrasyn demo: {ds.name}, normal class 0 then 1, raw-pixel kNN and CSI (preset cpu "
        f"with {args.epochs} epochs and 1 test-time draw), results in {args.out}",
        flush=True,
    )
    overrides = {"train": {"epochs": args.epochs}, "score": {"ensemble": 1}}
    rows = _run_benchmark(args, ds, "0,1", "knn,csi", "0", "cpu", args.out, overrides)
    print()
    print(markdown_table(rows))
    print(
        f"\nAUROC, anomalies positive. Wall time {time.perf_counter() - t0:.0f} s. "
        f"Results: {Path(args.out) / 'results.csv'}; per-run logs and checkpoints under "
        f"{Path(args.out) / 'runs'}. The full 10-class run: benchmarks/results/README.md"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contrasyn",
        description="One-class image anomaly detection: train on normal images only, "
        "then score new images by how anomalous they are.",
    )
    parser.add_argument("--version", action="version", version=f"contrasyn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="list, inspect or download datasets")
    data_sub = data.add_subparsers(dest="action", required=True)
    data_sub.add_parser("list", help="names of the built-in datasets")
    info = data_sub.add_parser("info", help="split sizes and class names of a dataset")
    info.add_argument("name")
    info.add_argument("--root", help="folder holding the dataset files (default: its usual place)")
    dl = data_sub.add_parser(
        "download",
        help="fetch cifar10, cifar100 or fashion-mnist (needs network access; checks checksums)",
    )
    dl.add_argument("name", choices=["cifar10", "cifar100", "fashion-mnist"])
    dl.add_argument("--root", help="destination folder (default: the cache folder)")
    data.set_defaults(func=cmd_data)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--root", help="dataset folder, where the dataset is not in its usual place")
        p.add_argument(
            "--val-normal",
            type=int,
            default=None,
            help="normal train images held out (with as many other-class train "
            "images) to validate score choices; never the test split "
            "(default: 10%% of the class, at most 500)",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bars or per-cell lines")

    bench = sub.add_parser(
        "benchmark",
        help="one-class benchmark: every class x method x seed, "
        "resumable; writes results.csv/.jsonl and table.md",
    )
    bench.add_argument("--dataset", default="fashion-mnist")
    bench.add_argument(
        "--classes", default="all", help="'all' or e.g. 0,3,7 (normal class per task)"
    )
    bench.add_argument("--methods", default="knn,csi", help="comma-separated: knn, csi")
    bench.add_argument("--seeds", default="0")
    bench.add_argument(
        "--preset", default="cpu", help="cpu (2-core CPU), paper (GPU), tiny (smoke)"
    )
    bench.add_argument("--out", required=True, help="results folder; rerun to resume")
    bench.add_argument("--config", help="YAML/JSON file of overrides {train: {...}, score: {...}}")
    bench.add_argument(
        "--set",
        action="append",
        metavar="SECTION.FIELD=VALUE",
        help="override one config field, e.g. --set train.epochs=5",
    )
    common(bench)
    bench.set_defaults(func=cmd_benchmark)

    demo = sub.add_parser("demo", help="a short real run: CSI vs raw-pixel kNN on two tasks")
    demo.add_argument("--out", default=DEMO_OUT)
    demo.add_argument("--epochs", type=int, default=8, help="CSI epochs per task (default 8)")
    common(demo)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ContrasynError as e:
        print(f"contrasyn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("contrasyn: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
