"""The ``contrasyn`` command line.

Your own images, in three commands::

    contrasyn fit --data photos/good --out my-model     # train on normal images only
    contrasyn score my-model new-photos/ --out scores.csv
    contrasyn threshold my-model --false-alarm-rate 0.01  # move the threshold, no retraining

and the research side: ``contrasyn benchmark``, ``contrasyn demo``, ``contrasyn data``.

Exit codes (every command):

- 0: success.
- 1: something unexpected (a bug: the traceback is printed).
- 2: a problem with the input, the model folder or the configuration; one line
  ``contrasyn: error: ...`` says what and where (argparse's usage errors also exit 2).
- 3: only ``score --fail-on-anomaly``: at least one image was labelled anomalous.
- 130: interrupted (Ctrl-C); rerun the same command to resume.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import shlex
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from contrasyn import __version__
from contrasyn.errors import ConfigError, ContrasynError

if TYPE_CHECKING:
    from contrasyn.data.base import ImageDataset
    from contrasyn.detector import Detector

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
        try:
            over = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML/JSON ({' '.join(str(e).split())})") from e
        if not isinstance(over, dict):
            raise ConfigError(f"{path}: expected a mapping with 'train' and/or 'score'")
    for item in getattr(args, "set", None) or []:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise ConfigError(
                f"--set expects section.field=value (e.g. train.epochs=5), got {item!r}"
            )
        try:
            over.setdefault(section, {})[name] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: cannot read the value {value!r}") from e
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

    method_list = _parse_list(methods)
    unknown = [m for m in method_list if m not in METHODS]
    if unknown:
        raise ConfigError(
            f"unknown method(s) {', '.join(unknown)}; available: {', '.join(METHODS)}"
        )
    log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, flush=True))
    return run_benchmark(
        ds,
        _parse_classes(classes, ds.num_classes),
        method_list,
        _parse_list(seeds, int),
        preset,
        overrides,
        out,
        val_normal=args.val_normal,
        progress=not args.quiet,
        log=log,
        command=args.command_line,
        max_test=args.max_test,
        verbose=args.verbose,
    )


def _load(name: str, root: str | None) -> ImageDataset:
    from contrasyn.data import load_dataset

    return load_dataset(name, **({"root": root} if root else {}))


def cmd_benchmark(args: argparse.Namespace) -> int:
    from contrasyn.results import markdown_table

    ds = _load(args.dataset, args.root)
    rows = _run_benchmark(
        args, ds, args.classes, args.methods, args.seeds, args.preset, args.out, _overrides(args)
    )
    print(markdown_table(rows))
    print(
        f"\nresults: {Path(args.out) / 'results.csv'} (and results.jsonl, table.md); "
        f"report: {Path(args.out) / 'report.html'}"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from contrasyn.errors import DataError
    from contrasyn.report import write_report
    from contrasyn.results import read_rows

    rows = read_rows(Path(args.results))
    if not rows:
        raise ConfigError(f"{Path(args.results) / 'results.jsonl'}: no benchmark results there")
    names = {r["dataset"] for r in rows}
    ds = None
    if len(names) == 1:
        try:
            ds = _load(names.pop(), args.root)
        except DataError as e:
            _warn(f"{e}; the report leaves out the test images")
    write_report(args.results, ds, log=lambda msg: None)
    print(f"report: {Path(args.results) / 'report.html'}")
    return 0


DEMO_METHODS = "knn,ocsvm,deepsvdd,rot,goad,csi,csi+g,full"


def cmd_demo(args: argparse.Namespace) -> int:
    """A real end-to-end run: every method (the ``demo`` preset, a cut-down ``cpu``) on two
    one-class tasks, a stratified test subsample scored, the table and the report written."""
    import numpy as np

    from contrasyn.errors import DataError
    from contrasyn.results import markdown_table

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


# --------------------------------------------------------------- fit / score / threshold

EXIT_CODES = """exit codes:
  0    success
  1    something unexpected (a bug: the traceback is printed)
  2    bad input, model folder or configuration (one line "contrasyn: error: ..." says
       what and where)
  3    score --fail-on-anomaly only: at least one image was labelled anomalous
  130  interrupted (Ctrl-C); rerun the same command to resume"""

# Detector arguments that have their own flag: a --set for them would be silently overwritten.
_OWN_FLAG = {
    ("train", "method"): "--method",
    ("train", "device"): "--device",
    ("train", "seed"): "--seed",
}


@contextlib.contextmanager
def _plain_warnings():
    """Show the library's warnings (skipped files, a small held-out set) as one line each,
    ``contrasyn: warning: ...``, instead of Python's file:line format; others unchanged."""
    package = str(Path(__file__).resolve().parent)
    with warnings.catch_warnings():
        warnings.filterwarnings("always", module=r"contrasyn(\\.|$)")
        original = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if str(Path(filename).resolve()).startswith(package):
                print(f"contrasyn: warning: {message}", file=sys.stderr, flush=True)
            else:
                original(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def _warn(message: str) -> None:
    print(f"contrasyn: warning: {message}", file=sys.stderr, flush=True)


def _check_device(name: str) -> None:
    """Fail early, in one line, on a device torch does not know or this machine lacks."""
    from contrasyn.device import resolve_device

    resolve_device(name)


def _checkpoint_epoch(stem: Path) -> int | None:
    """The epoch of an earlier, interrupted run's checkpoint, for the "resuming" message,
    after tidying what a kill during a save leaves (the trainer checks the rest)."""
    from contrasyn.checkpoint import recover_interrupted_save

    if recover_interrupted_save(stem):
        _warn(f"{stem.with_suffix('.json')} was left by an interrupted save; rebuilt it")
    try:
        return json.loads(stem.with_suffix(".json").read_text()).get("epoch")
    except (OSError, ValueError, AttributeError):
        return None


def _detector_overrides(args: argparse.Namespace) -> dict:
    """``--config``/``--set`` as Detector keywords: ``train.epochs=5`` -> ``train__epochs=5``."""
    kwargs = {}
    for section, fields in _overrides(args).items():
        if section not in ("train", "score"):
            raise ConfigError(
                f"unknown config section {section!r}: settings are train.FIELD or score.FIELD "
                "(e.g. --set train.epochs=5; the fields of TrainConfig and ScoreConfig in "
                "contrasyn/config.py)"
            )
        if not isinstance(fields, dict):
            raise ConfigError(f"config section {section!r} must map field names to values")
        for name, value in fields.items():
            if (section, name) in _OWN_FLAG:
                raise ConfigError(
                    f"set {section}.{name} with {_OWN_FLAG[section, name]}, not --set/--config"
                )
            kwargs[f"{section}__{name}"] = value
    for flag, key, value in (
        ("--image-size", "train__image_size", args.image_size),
        ("--score", "score__score", args.score),
    ):
        if value is not None and kwargs.get(key, value) != value:
            raise ConfigError(f"{flag} {value} contradicts {key.replace('__', '.')}={kwargs[key]}")
    if args.image_size is not None:
        kwargs["train__image_size"] = args.image_size
    if args.draws < 0:
        raise ConfigError(f"--draws must be >= 0, got {args.draws}")
    if args.draws > 0:
        kwargs.update(score__augment=True, score__ensemble=args.draws)
    return kwargs  # --score goes to Detector(score=...)


def _rate_text(det: Detector) -> str:
    rate = det.flag_rate
    return f"false-alarm rate {rate * 100:g}%"


def cmd_fit(args: argparse.Namespace) -> int:
    from contrasyn import distributed
    from contrasyn.data import find_images, load_images
    from contrasyn.detector import Detector

    _check_device(args.device)
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder (--out names the model folder)")
    det = Detector(
        method=args.method,
        preset=args.preset,
        score=args.score,
        false_alarm_rate=0.05 if args.false_alarm_rate is None else args.false_alarm_rate,
        contamination=args.contamination,
        holdout=args.holdout,
        deterministic=args.draws == 0,
        skip_bad=args.skip_bad,
        device=args.device,
        seed=args.seed,
        checkpoint_dir=out / "checkpoints",
        progress=not args.quiet,
        verbose=args.verbose,
        **_detector_overrides(args),
    )
    cfg = det.resolved_config()  # unknown settings and bad values fail here, before any work
    say = (lambda *a: None) if args.quiet else (lambda msg: print(msg, flush=True))

    found = find_images(args.data)
    images, kept = load_images(
        found, cfg.train.image_size, cfg.train.channels, det.resize, skip_bad=args.skip_bad
    )
    epoch = _checkpoint_epoch(out / "checkpoints" / "last")
    if not distributed.is_main():  # under torchrun, rank 0 reports and saves
        det.fit(images)
        return 0
    t = cfg.train
    length = f"{t.steps} steps" if t.steps is not None else f"{t.epochs} epochs"
    say(
        f"contrasyn fit: {len(kept)} images from {args.data}; {t.method}, preset "
        f"{args.preset} ({length}, {t.image_size}x{t.image_size}, device {args.device})"
    )
    if epoch:
        say(f"resuming from the checkpoint of epoch {epoch} in {out / 'checkpoints'}")
    det.fit(images)
    det.save(out)

    n_hold = len(det.holdout_scores_)
    notes = []
    if len(found) > len(kept):
        notes.append(f"{len(found) - len(kept)} unreadable skipped")
    unused = len(kept) - det.n_train_ - n_hold
    if unused:
        notes.append(f"{unused} not used: train.max_train={t.max_train}")
    say(
        f"trained on {det.n_train_} images; {n_hold} held out to set the threshold"
        + (f" ({'; '.join(notes)})" if notes else "")
    )
    say(
        f"threshold {det.threshold_:.6g} on the anomaly score ({cfg.score.score}): "
        f"{_rate_text(det)}, the fraction of normal images it will flag"
    )
    say(
        f"saved to {out} (model.safetensors, model.json); training checkpoints in {out}/checkpoints"
    )
    if det.generator_ is not None:
        from contrasyn.quality import sample, save_grid

        save_grid(list(sample(det.generator_.G, 64, args.seed).split(16)), out / "samples.png")
        say(f"the generator's samples: {out / 'samples.png'}")
    say(f"next: contrasyn score {out} IMAGES_OR_FOLDERS... --out scores.csv")
    return 0


def _load_detector(model: str, device: str) -> Detector:
    from contrasyn.detector import Detector
    from contrasyn.errors import CheckpointError

    path = Path(model).expanduser()
    try:
        return Detector.load(path, device=device)
    except CheckpointError:
        if (path / "checkpoints" / "last.json").is_file() and not (path / "model.json").exists():
            raise CheckpointError(
                f"{path}: training has not finished (no model.json yet); rerun the same "
                "`contrasyn fit` command to resume it"
            ) from None
        raise


def _collect_inputs(inputs: list[str]) -> list[Path]:
    """Image files named, and every image below the folders named, in order, each once."""
    from contrasyn.data import find_images
    from contrasyn.errors import DataError

    paths, seen = [], set()
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            found = find_images(path)
        elif path.is_file():
            found = [path]
        else:
            raise DataError(f"{path}: no such file or folder")
        for p in found:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                paths.append(p)
    return paths


def _write_output(text: str, out: str | None) -> None:
    from contrasyn.errors import DataError

    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(out).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as e:
        raise DataError(f"{path}: cannot write results ({e.strerror or e})") from e


def cmd_score(args: argparse.Namespace) -> int:
    from contrasyn.data import load_images

    _check_device(args.device)
    fmt = args.format or (
        "json" if args.out is not None and args.out.lower().endswith(".json") else "csv"
    )
    paths = _collect_inputs(args.inputs)
    det = _load_detector(args.model, args.device)
    det.skip_bad = args.skip_bad
    t = det.config_.train
    images, kept = load_images(paths, t.image_size, t.channels, det.resize, args.skip_bad)
    scores = det.anomaly_score(images)
    # predict()'s rule: decision_function = threshold - anomaly_score < 0 is an anomaly
    anomalous = scores > det.threshold_
    rows = [
        {"path": str(p), "anomaly_score": float(s), "label": "anomaly" if a else "normal"}
        for p, s, a in zip(kept, scores, anomalous, strict=True)
    ]
    kept_set = set(kept)
    skipped = [str(p) for p in paths if p not in kept_set]
    n_bad = int(anomalous.sum())
    if fmt == "json":
        summary = {
            "model": str(args.model),
            "images": len(rows),
            "anomalous": n_bad,
            "threshold": det.threshold_,
            "false_alarm_rate": det.flag_rate,
            "score": det.config_.score.score,
            "skipped": skipped,
        }
        text = json.dumps({"summary": summary, "results": rows}, indent=2) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, ["path", "anomaly_score", "label"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    _write_output(text, args.out)
    if not args.quiet:
        extra = f" ({len(skipped)} unreadable skipped)" if skipped else ""
        where = f"; results in {args.out}" if args.out is not None else ""
        print(
            f"scored {len(rows)} image{'s' if len(rows) != 1 else ''}{extra}: {n_bad} "
            f"anomalous (threshold "
            f"{det.threshold_:.6g}, {_rate_text(det)}){where}",
            file=sys.stderr,
            flush=True,
        )
    return 3 if args.fail_on_anomaly and n_bad else 0


def cmd_threshold(args: argparse.Namespace) -> int:
    det = _load_detector(args.model, "cpu")
    old = f"{det.threshold_:.6g} ({_rate_text(det)})"
    det.set_threshold(false_alarm_rate=args.false_alarm_rate, contamination=args.contamination)
    det.save(Path(args.model).expanduser())
    n_hold = len(det.holdout_scores_)
    rate = det.flag_rate
    print(f"threshold of {args.model}: {old} -> {det.threshold_:.6g} ({_rate_text(det)})")
    print(f"set from the anomaly scores of the {n_hold} held-out normal images; saved")
    if rate < 1 / n_hold:
        _warn(
            f"with {n_hold} held-out images every rate below {1 / n_hold:.3g} gives the same "
            "threshold (the highest held-out score); train with more images or a larger "
            "--holdout for finer control"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from contrasyn.export import export_onnx

    det = _load_detector(args.model, "cpu")
    path = export_onnx(det, Path(args.model).expanduser())
    print(f"wrote {path / 'model.onnx'}; score with contrasyn.export.OnnxDetector({str(path)!r})")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from contrasyn.quality import save_grid

    det = _load_detector(args.model, "cpu")
    if det.generator_ is None:
        raise ConfigError(
            f"{args.model}: method {det.config_.train.method!r} has no generator; "
            "train with --method full or csi+g"
        )
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")

    def tensor(images):  # uint8 (n, H, W, C) -> float (n, C, H, W) in [0, 1]
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255

    if args.reconstruct:
        from contrasyn.data import load_images

        t = det.config_.train
        paths = _collect_inputs(args.reconstruct)[: args.n]
        originals, _ = load_images(paths, t.image_size, t.channels, det.resize)
        rows = [tensor(originals), tensor(det.reconstruct(originals))]
        what = f"{len(paths)} images (top) and their reconstructions G(E(x)) (bottom)"
    else:
        rows = list(tensor(det.sample(args.n, args.seed)).split(16))
        if len(rows) > 1 and len(rows[-1]) < 16:
            rows = rows[:-1]  # a grid of whole rows
        what = f"{sum(len(r) for r in rows)} samples G(h)"
    path = save_grid(rows, Path(args.out).expanduser())
    print(f"wrote {path}: {what}")
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from contrasyn.bench import run_quality
    from contrasyn.quality import FEATURE_SPACES

    spaces = _parse_list(args.space)
    unknown = [s for s in spaces if s not in FEATURE_SPACES]
    if unknown:
        raise ConfigError(
            f"unknown feature space(s) {', '.join(unknown)}; known: {', '.join(FEATURE_SPACES)}"
        )
    rows = run_quality(
        args.results, spaces, args.inception, args.val_normal, recompute=args.recompute
    )
    if not rows:
        raise ConfigError(f"{args.results}: no trained csi+g or full runs with weights there")
    print((Path(args.results) / "quality.md").read_text())
    print(
        f"quality: {Path(args.results) / 'quality.csv'}; image grids in each run's folder; "
        f"report: {Path(args.results) / 'report.html'}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contrasyn",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_paragraphs(
            "One-class image anomaly detection: train on normal images only, "
            "then score new images by how anomalous they are."
        ),
        epilog="your own images, in three commands:\n"
        "  contrasyn fit --data photos/good --out my-model\n"
        "  contrasyn score my-model new-photos/ --out scores.csv\n"
        "  contrasyn threshold my-model --false-alarm-rate 0.01\n"
        "`contrasyn COMMAND --help` explains each command.\n\n" + EXIT_CODES,
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

    def common(p: argparse.ArgumentParser, default_max_test: int | None = None) -> None:
        p.add_argument("--root", help="dataset folder, where the dataset is not in its usual place")
        p.add_argument(
            "--val-normal",
            type=int,
            default=None,
            help="normal train images held out (with as many other-class train "
            "images) to validate score choices; never the test split "
            "(default: 10%% of the class, at most 500; the demo: at most 200)",
        )
        talk = p.add_mutually_exclusive_group()
        talk.add_argument("--quiet", action="store_true", help="no progress bars or per-cell lines")
        talk.add_argument(
            "--verbose",
            action="store_true",
            help="also print the training losses as they are logged (useful in log files, "
            "where no progress bar is drawn)",
        )
        p.add_argument(
            "--max-test",
            type=int,
            default=default_max_test,
            help="score a seeded, class-stratified subsample of this many test images "
            "(quick runs; reported benchmarks score the whole split"
            + (", the default)" if default_max_test is None else f"; default {default_max_test})"),
        )

    bench = sub.add_parser(
        "benchmark",
        help="one-class benchmark: every class x method x seed, "
        "resumable; writes results.csv/.jsonl and table.md",
    )
    bench.add_argument("--dataset", default="fashion-mnist")
    bench.add_argument(
        "--classes", default="all", help="'all' or e.g. 0,3,7 (normal class per task)"
    )
    bench.add_argument(
        "--methods",
        default="knn,csi",
        help="comma-separated: knn, ocsvm, deepsvdd, rot, goad, csi, csi+g, full",
    )
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

    rep = sub.add_parser(
        "report",
        help="rebuild a benchmark folder's report.html from its result files",
        description=_paragraphs(
            "Rewrites DIR/report.html and its figures (DIR/report/) from what the benchmark "
            "wrote: the AUROC tables and chart, per class the ROC curves, score histograms "
            "and the most normal and most anomalous test images, sample and reconstruction "
            "grids, loss curves, the configuration, versions and wall time. The benchmark "
            "writes it at the end of every run; this command is for a folder copied "
            "elsewhere or after `contrasyn quality`.",
        ),
    )
    rep.add_argument("results", metavar="DIR", help="a folder written by `contrasyn benchmark`")
    rep.add_argument("--root", help="dataset folder, for the test images (default: usual place)")
    rep.set_defaults(func=cmd_report)

    demo = sub.add_parser(
        "demo",
        help="a ~10-minute real run: all eight methods on two Fashion-MNIST tasks, "
        "table and HTML report",
    )
    demo.add_argument("--out", default=DEMO_OUT, help=f"results folder (default {DEMO_OUT})")
    demo.add_argument("--classes", default="0,1", help="normal classes (default 0,1)")
    demo.add_argument("--methods", default=DEMO_METHODS, help=f"default {DEMO_METHODS}")
    common(demo, default_max_test=1000)
    demo.set_defaults(func=cmd_demo)
    _add_practitioner_commands(sub)
    return parser


def _paragraphs(*texts: str) -> str:
    """Descriptions pre-wrapped, since the raw formatter (kept for the epilogs) does not wrap."""
    return "\n\n".join(textwrap.fill(t, 88) for t in texts)


def _add_practitioner_commands(sub) -> None:
    raw = argparse.RawDescriptionHelpFormatter

    fit = sub.add_parser(
        "fit",
        help="train a detector on a folder of normal images and save it",
        formatter_class=raw,
        description=_paragraphs(
            "Train an anomaly detector on your normal images (no anomalies needed) "
            "and save it to a model folder.",
            "Every image below --data (png, jpg, bmp, tif, webp; subfolders included) is taken as "
            "normal. A fraction (--holdout) is kept out of training and used to set the "
            "threshold: it is placed so that about --false-alarm-rate of normal images would be "
            "flagged as anomalous. Training is checkpointed in MODEL_DIR/checkpoints: if it is "
            "interrupted, run the same command again to continue where it stopped.",
        ),
        epilog="examples:\n"
        "  contrasyn fit --data photos/good --out my-model\n"
        "  contrasyn fit --data photos/good --out my-model --false-alarm-rate 0.01 "
        "--set train.epochs=50\n"
        "  contrasyn fit --data photos/good --out quick --preset tiny   # a smoke test\n\n"
        + EXIT_CODES,
    )
    fit.add_argument("--data", required=True, metavar="DIR", help="folder of normal images")
    fit.add_argument(
        "--out", required=True, metavar="MODEL_DIR", help="model folder to write (and resume)"
    )
    fit.add_argument(
        "--method",
        default=None,
        help="full (the paper's method), csi+g or csi; default: the preset's (full)",
    )
    fit.add_argument(
        "--preset",
        default="cpu",
        help="training recipe: cpu (minutes on a laptop CPU, default), paper (the paper's, "
        "for a GPU: hours), tiny (seconds; smoke tests only)",
    )
    fit.add_argument(
        "--score",
        choices=["feat", "paper", "csi"],
        help="which anomaly score to use (default: the preset's; feat for cpu and tiny)",
    )
    rate = fit.add_mutually_exclusive_group()
    rate.add_argument(
        "--false-alarm-rate",
        type=float,
        metavar="R",
        help="fraction of normal images the threshold may flag (default 0.05); change it "
        "later with `contrasyn threshold`",
    )
    rate.add_argument(
        "--contamination",
        type=float,
        metavar="C",
        help="the same setting under scikit-learn/PyOD's name",
    )
    fit.add_argument(
        "--holdout",
        type=float,
        default=0.1,
        metavar="F",
        help="fraction of the images kept out of training to set the threshold (default 0.1)",
    )
    fit.add_argument(
        "--image-size",
        type=int,
        metavar="N",
        help="images are resized to N x N pixels (default: the preset's, 32)",
    )
    fit.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable image files with a warning (default: stop with an error)",
    )
    fit.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda, cuda:N, mps")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fit.add_argument(
        "--config", metavar="FILE", help="YAML/JSON file of settings {train: {...}, score: {...}}"
    )
    fit.add_argument(
        "--set",
        action="append",
        metavar="SECTION.FIELD=VALUE",
        help="change one setting, e.g. --set train.epochs=50, --set train.batch_size=64, "
        "--set train.width=32 (repeatable; every field of TrainConfig and ScoreConfig in "
        "contrasyn/config.py can be set)",
    )
    fit.add_argument(
        "--draws",
        type=int,
        default=0,
        metavar="R",
        help="average each score over R random test-time augmentations (CSI's ensemble; "
        "scores then vary slightly with the batch an image comes in). Default 0: one "
        "deterministic pass over the 4 rotations, the same score every time",
    )
    talk = fit.add_mutually_exclusive_group()
    talk.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    talk.add_argument(
        "--verbose", action="store_true", help="also print the losses every log_every steps"
    )
    fit.set_defaults(func=cmd_fit)

    score = sub.add_parser(
        "score",
        help="score images with a saved detector (CSV or JSON: path, anomaly_score, label)",
        formatter_class=raw,
        description=_paragraphs(
            "Score images with a detector saved by `contrasyn fit`.",
            "For each image: its anomaly score (higher = more unusual) and a label, 'anomaly' "
            "when the score is above the model's threshold, else 'normal'. Results go to --out, "
            "or to standard output; a one-line summary goes to standard error.",
        ),
        epilog="examples:\n"
        "  contrasyn score my-model new-photos/ --out scores.csv\n"
        "  contrasyn score my-model a.png b.png --format json\n"
        "  contrasyn score my-model incoming/ --out s.csv --fail-on-anomaly || echo 'look at s.csv'"
        "\n\n" + EXIT_CODES,
    )
    score.add_argument("model", metavar="MODEL_DIR", help="folder written by `contrasyn fit`")
    score.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files and/or folders (searched recursively)",
    )
    score.add_argument("--out", metavar="FILE", help="results file (default: standard output)")
    score.add_argument(
        "--format",
        choices=["csv", "json"],
        help="csv (default; json when --out ends in .json): JSON is "
        '{"summary": {...}, "results": [{"path", "anomaly_score", "label"}, ...]}',
    )
    score.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable image files with a warning (default: stop with an error)",
    )
    score.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda, mps")
    score.add_argument(
        "--fail-on-anomaly",
        action="store_true",
        help="exit with status 3 when any image is labelled anomalous (for scripts)",
    )
    score.add_argument("--quiet", action="store_true", help="no summary line")
    score.set_defaults(func=cmd_score)

    thr = sub.add_parser(
        "threshold",
        help="change a saved detector's threshold without retraining",
        formatter_class=raw,
        description=_paragraphs(
            "Move the threshold of a saved detector. It is recomputed from the "
            "anomaly scores of the normal images held out during `contrasyn fit`, so that the "
            "given fraction of normal images would be flagged; nothing is retrained.",
        ),
        epilog="examples:\n"
        "  contrasyn threshold my-model --false-alarm-rate 0.01   # fewer false alarms\n"
        "  contrasyn threshold my-model --false-alarm-rate 0.2    # miss fewer anomalies\n\n"
        + EXIT_CODES,
    )
    thr.add_argument("model", metavar="MODEL_DIR", help="folder written by `contrasyn fit`")
    group = thr.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--false-alarm-rate",
        type=float,
        metavar="R",
        help="fraction of normal images to flag, between 0 and 1 (e.g. 0.01)",
    )
    group.add_argument(
        "--contamination", type=float, metavar="C", help="the same, under PyOD's name"
    )
    thr.set_defaults(func=cmd_threshold)

    exp = sub.add_parser(
        "export",
        help="write MODEL_DIR/model.onnx for scoring without PyTorch (onnxruntime)",
        formatter_class=raw,
        description=_paragraphs(
            "Export a saved detector's network to ONNX, next to its files. "
            "contrasyn.export.OnnxDetector(MODEL_DIR) then scores images with numpy and "
            "onnxruntime only, by one deterministic pass (the Detector's default), and its "
            "scores equal PyTorch's. Needs: pip install 'contrasyn[onnx]'.",
        ),
        epilog="example:\n  contrasyn export my-model\n\n" + EXIT_CODES,
    )
    exp.add_argument("model", metavar="MODEL_DIR", help="folder written by `contrasyn fit`")
    exp.set_defaults(func=cmd_export)

    samp = sub.add_parser(
        "sample",
        help="save the generator's images (csi+g, full) or reconstructions (full) as a PNG grid",
        formatter_class=raw,
        description=_paragraphs(
            "Synthetic images G(h), h ~ N(0, I), of a model trained with method full or csi+g, "
            "16 to a row; or, with --reconstruct, images above their reconstructions G(E(x)) "
            "(full only): normal images come back close, anomalies are pulled towards what "
            "the model learnt as normal.",
        ),
        epilog="examples:\n  contrasyn sample my-model --out samples.png\n"
        "  contrasyn sample my-model --reconstruct new-photos/ --out rec.png\n\n" + EXIT_CODES,
    )
    samp.add_argument("model", metavar="MODEL_DIR", help="folder written by `contrasyn fit`")
    samp.add_argument("--out", required=True, help="PNG file to write")
    samp.add_argument("--n", type=int, default=64, help="how many images (default 64)")
    samp.add_argument("--seed", type=int, default=0, help="seed of the latent draws")
    samp.add_argument(
        "--reconstruct", nargs="+", metavar="IMAGES", help="image files or folders to reconstruct"
    )
    samp.set_defaults(func=cmd_sample)

    qual = sub.add_parser(
        "quality",
        help="sample quality of a benchmark's csi+g/full runs: Fréchet distance, image grids",
        formatter_class=raw,
        description=_paragraphs(
            "For every csi+g and full run of a benchmark folder whose weights are there: the "
            "Fréchet distance between samples G(h) and the run's training images, and PNG "
            "grids (samples.png; for full, reconstructions.png: normal and anomalous test "
            "images above their reconstructions G(E(x))). Writes quality.csv, quality.jsonl "
            "and quality.md into the folder.",
            "Feature spaces: fd-rand (default), a fixed random ResNet-18, comparable between "
            "runs and not FID; fid, Inception-v3 pool features, which needs torchvision and "
            "the weights file inception_v3_google-0cc3c7bd.pth in ~/.cache/contrasyn/ "
            "(or --inception PATH).",
        ),
        epilog="example:\n  contrasyn quality --results benchmarks/results/fashion-mnist-"
        "variants-cpu\n\n" + EXIT_CODES,
    )
    qual.add_argument("--results", required=True, help="folder written by `contrasyn benchmark`")
    qual.add_argument("--space", default="fd-rand", help="comma-separated: fd-rand, fid")
    qual.add_argument("--inception", default=None, help="Inception-v3 weights file (for fid)")
    qual.add_argument(
        "--val-normal", type=int, default=None, help="as given to the benchmark, if it was"
    )
    qual.add_argument(
        "--recompute",
        action="store_true",
        help="measure every run again (default: keep runs measured before in these spaces)",
    )
    qual.set_defaults(func=cmd_quality)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["contrasyn", *argv])
    try:
        if args.func in (cmd_fit, cmd_score, cmd_threshold):
            with _plain_warnings():
                return args.func(args)
        return args.func(args)
    except ContrasynError as e:
        print(f"contrasyn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("contrasyn: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        if "torch" in sys.modules:  # a process group can only exist where torch was loaded
            from contrasyn import distributed

            distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
