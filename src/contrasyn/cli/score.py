"""``contrasyn score`` and ``contrasyn evaluate``: a saved model on new images, unlabelled
(scores, labels, anomaly maps) or labelled (metrics and a report)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from contrasyn.checkpoint import inside
from contrasyn.cli.options import (
    add_device,
    add_out,
    add_talk,
    add_verb,
    say,
)
from contrasyn.cli.outputs import (
    add_model_dir,
    add_overwrite,
    add_skip_bad,
    check_maps_dir,
    check_output_path,
    check_outside_models,
    collect_inputs,
    load_detector,
    rate_text,
    write_output,
)
from contrasyn.errors import ConfigError, DataError
from contrasyn.textfiles import csv_text

if TYPE_CHECKING:
    from contrasyn.api.detector import Detector


def cmd_score(args: argparse.Namespace) -> int:
    from contrasyn.data import load_images

    fmt = args.format or (
        "json" if args.out is not None and args.out.lower().endswith(".json") else "csv"
    )
    paths = collect_inputs(args.inputs)
    model_dir = Path(args.model).expanduser()
    out = None
    if args.out is not None:
        out = check_output_path(args.out, model_dir, args.inputs, paths, args.overwrite)
    det = load_detector(args.model, args.device)
    det.skip_bad = args.skip_bad
    if det.threshold_ is None and args.fail_on_anomaly:
        raise ConfigError(
            f"{args.model} has no threshold (trained with --holdout 0): --fail-on-anomaly needs one"
        )
    maps_dir = None
    if args.maps is not None:
        maps_dir = check_maps_dir(args.maps, model_dir, args.inputs, paths, args.overwrite)
    spec = det.input_
    images, kept = load_images(
        paths, spec["image_size"], spec["channels"], det.resize, args.skip_bad
    )
    scores = det.anomaly_score(images)
    if det.threshold_ is None:
        labels = [""] * len(scores)
    else:
        # predict()'s rule: above the threshold, or not finite, is an anomaly
        labels = ["anomaly" if a else "normal" for a in det.is_anomalous(scores)]
    if len(det.holdout_scores_):
        probability = [float(p) for p in det.probability_of(scores)]
    else:
        probability = [None] * len(scores)
    rows = [
        {"path": str(p), "anomaly_score": float(s), "anomaly_probability": q, "label": label}
        for p, s, q, label in zip(kept, scores, probability, labels, strict=True)
    ]
    if maps_dir is not None:
        for row, written in zip(rows, _write_maps(det, images, kept, maps_dir), strict=True):
            row["map"] = str(written)
    kept_set = set(kept)
    skipped = [str(p) for p in paths if p not in kept_set]
    n_bad = labels.count("anomaly")
    if fmt == "json":
        summary = {
            "model": str(args.model),
            "method": det.method_.name,
            "images": len(rows),
            "anomalous": n_bad,
            "threshold": det.threshold_,
            "false_alarm_rate": det.flag_rate,
            "score": det.score_name_,
            "skipped": skipped,
        }
        calibration = det.calibration_
        if calibration is not None:
            summary["calibration"] = calibration.as_dict()
        for r in rows:  # JSON has no NaN: a non-finite score is null (and labelled anomaly)
            if not math.isfinite(r["anomaly_score"]):
                r["anomaly_score"] = None
        text = json.dumps({"summary": summary, "results": rows}, indent=2) + "\n"
    else:
        columns = ["path", "anomaly_score", "anomaly_probability", "label"]
        # anomaly_probability None (no held-out images, --holdout 0): an empty cell
        text = csv_text(columns + (["map"] if maps_dir is not None else []), rows)
    write_output(text, out, args.overwrite)
    if not args.quiet:
        extra = f" ({len(skipped)} unreadable skipped)" if skipped else ""
        where = f"; results in {args.out}" if args.out is not None else ""
        if det.threshold_ is None:
            verdict = "no threshold (the model was trained with --holdout 0)"
        else:
            verdict = f"{n_bad} anomalous (threshold {det.threshold_:.6g}, {rate_text(det)})"
        print(
            f"scored {len(rows)} image{'s' if len(rows) != 1 else ''}{extra}: {verdict}{where}",
            file=sys.stderr,
            flush=True,
        )
        if maps_dir is not None:
            print(f"anomaly maps: {maps_dir} (one PNG per image)", file=sys.stderr, flush=True)
    return 3 if args.fail_on_anomaly and n_bad else 0


def _write_maps(det: Detector, images, kept: list[Path], folder: Path) -> list[Path]:
    """Each image's anomaly map beside the image, one PNG each (``contrasyn.api.maps``)."""
    from contrasyn.api.detector import MAP_DEFAULTS
    from contrasyn.api.maps import overlay_names, to_uint8, write_overlays

    model_input, _ = det._images(images, det.input_)
    heat = det.anomaly_map(model_input, **MAP_DEFAULTS)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{folder}: cannot create the folder ({e.strerror or e})") from e
    return write_overlays(folder, to_uint8(model_input), heat, overlay_names(kept, len(kept)))


def add_score(sub) -> None:
    score = add_verb(
        sub,
        "score",
        help="score images with a saved detector (CSV or JSON: path, anomaly_score, "
        "anomaly_probability, label)",
        description=[
            "Score images with a detector saved by `contrasyn fit` (any method).",
            "For each image: its anomaly score (higher = more unusual; its scale depends on "
            "the model), its anomaly_probability (the fraction of the normal images held out "
            "at fit, never trained on, that score lower: 0.5 is typical of normal images, 0.99 "
            "more unusual than 99% of them; the same scale for every model; empty for a model "
            "fitted with --holdout 0) and a label, 'anomaly' when the score is above the "
            "model's threshold or not finite, else 'normal'. Results go to --out, or to "
            "standard output; a one-line summary goes to standard error. --out is written "
            "atomically and never replaces an existing file unless --overwrite is given; a "
            "path inside a model folder or among the input images is refused. CSV text cells "
            "that begin with = + - @ get a leading apostrophe so spreadsheets do not run them.",
            "--maps DIR also writes one PNG per image into DIR: the image beside its anomaly "
            "map (occlusion: each region in turn is blurred out and the image scored again; "
            "bright where hiding the region lowers the anomaly score the most), and adds a map "
            "column. It scores each image 49 more times.",
        ],
        examples=[
            "contrasyn score my-model new-photos/ --out scores.csv",
            "contrasyn score my-model a.png b.png --format json",
            "contrasyn score my-model new-photos/ --out scores.csv --maps maps/",
            "contrasyn score my-model incoming/ --out s.csv --fail-on-anomaly "
            "|| echo 'look at s.csv'",
        ],
    )
    add_model_dir(score)
    score.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files and/or folders (searched recursively)",
    )
    add_out(score, "the results file, CSV or JSON (default: standard output)", "FILE")
    score.add_argument(
        "--format",
        choices=["csv", "json"],
        help="csv (default; json when --out ends in .json): JSON is "
        '{"summary": {...}, "results": [{"path", "anomaly_score", "anomaly_probability", '
        '"label"}, ...]}',
    )
    score.add_argument(
        "--maps",
        metavar="DIR",
        help="also write each image beside its anomaly map, one PNG per image, into DIR "
        "(created; not inside a model or input folder)",
    )
    add_overwrite(score)
    add_skip_bad(score)
    add_device(score)
    score.add_argument(
        "--fail-on-anomaly",
        action="store_true",
        help="exit with status 3 when any image is labelled anomalous (for scripts; an image "
        "whose score is not finite counts as anomalous)",
    )
    add_talk(score, quiet="no summary line")
    score.set_defaults(func=cmd_score)


def add_evaluate(sub) -> None:
    ev = add_verb(
        sub,
        "evaluate",
        help="check a saved detector on labelled images: AUROC, F1 at the threshold, a report",
        description=[
            "Score labelled images with a detector saved by `contrasyn fit` and measure how "
            "well it separates them. DATA is anomalib's Folder layout: a folder of normal "
            "images (good/, or normal/, or --normal-dir) beside one or more folders of "
            "anomalous images, one per kind of anomaly (every other folder, or --abnormal-dir); "
            "a mask folder (ground_truth/, masks/, or --mask-dir) is ignored, and an MVTec AD "
            "category folder (train/, test/good, test/<defect>) works as it is.",
            "Printed and written to --out: AUROC, AUPR and FPR@95%TPR (anomalies positive); at "
            "the model's saved threshold the anomalies flagged and missed, the normal images "
            "flagged, precision, recall and F1; for reference the threshold with the best F1 "
            "on these images and the false-alarm rate to give `contrasyn threshold` to move "
            "near it; the AUROC of each anomalous folder. --out gets metrics.json, scores.csv "
            "(one row per image) and report.html (ROC curve, score histograms with the "
            "threshold, the most anomalous, borderline and mistaken images beside their anomaly "
            "maps; figures in report/). A layout that cannot be read this way is one error "
            "(exit 2).",
        ],
        examples=[
            "contrasyn evaluate my-model labelled/           # labelled/good, labelled/crack, ...",
            "contrasyn evaluate my-model mvtec/bottle --out bottle-eval",
            "contrasyn evaluate my-model data --normal-dir ok --abnormal-dir bad1 "
            "--abnormal-dir bad2",
        ],
    )
    add_model_dir(ev)
    ev.add_argument("data", metavar="DATA", help="folder of labelled images (see above)")
    add_out(
        ev,
        "the folder for metrics.json, scores.csv and report.html (default: "
        "MODEL_DIR-evaluation beside the model folder)",
        "DIR",
    )
    ev.add_argument(
        "--normal-dir", metavar="NAME", help="the normal folder below DATA (default: good)"
    )
    ev.add_argument(
        "--abnormal-dir",
        action="append",
        metavar="NAME",
        help="an anomalous folder below DATA (repeatable; default: every other folder)",
    )
    ev.add_argument(
        "--mask-dir", metavar="NAME", help="a mask folder below DATA to leave out (ignored)"
    )
    ev.add_argument(
        "--no-maps",
        action="store_true",
        help="no anomaly maps in the report (faster: a map costs 49 scores per image shown)",
    )
    add_overwrite(ev)
    add_skip_bad(ev)
    add_device(ev)
    add_talk(ev, quiet="print nothing but errors")
    ev.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from contrasyn.data.labelled import read_labelled_folder

    model = Path(args.model).expanduser()
    data = Path(args.data).expanduser()
    read_labelled_folder(data, args.normal_dir, args.abnormal_dir, args.mask_dir)  # before work
    out = (
        Path(args.out).expanduser()
        if args.out is not None
        else model.parent / f"{model.resolve().name}-evaluation"
    )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    resolved = out.resolve()
    check_outside_models("--out", out, model, resolved / "x")
    if inside(resolved, data) or inside(data, resolved):
        raise ConfigError(
            f"--out {out} overlaps DATA {data}: its pictures would be read as labelled images "
            "next time; write elsewhere"
        )
    existing = [n for n in ("report.html", "metrics.json", "scores.csv") if (out / n).exists()]
    if existing and not args.overwrite:
        raise ConfigError(
            f"--out {out} already holds {existing[0]}; pass --overwrite to replace the "
            "evaluation there, or another folder"
        )
    det = load_detector(args.model, args.device)
    det.skip_bad = args.skip_bad
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out}: cannot create the folder ({e.strerror or e})") from e
    result = det.evaluate(  # the layout read above, read again the same way
        data,
        normal_dir=args.normal_dir,
        abnormal_dirs=args.abnormal_dir,
        mask_dir=args.mask_dir,
        out=out,
        maps=not args.no_maps,
    )
    talk = say(args)
    for line in result.summary():
        talk(line.replace("threshold MODEL", f"threshold {args.model}"))
    talk(f"wrote {out / 'report.html'} (figures in {out / 'report'}), metrics.json, scores.csv")
    return 0
