"""The verbs on a saved model folder: ``threshold``, ``export`` and ``sample``; and
``add_commands``, which registers every model verb (fit, score, evaluate, these)."""

from __future__ import annotations

import argparse
from pathlib import Path

from contrasyn.cli.fit import add_fit
from contrasyn.cli.options import (
    add_device,
    add_out,
    add_seed,
    add_verb,
    warn,
)
from contrasyn.cli.outputs import (
    add_model_dir,
    add_overwrite,
    check_output_path,
    collect_inputs,
    load_detector,
    print_calibration,
    rate_text,
)
from contrasyn.cli.score import add_evaluate, add_score
from contrasyn.errors import ConfigError, DataError
from contrasyn.methods.registry import network_methods


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def cmd_threshold(args: argparse.Namespace) -> int:
    from contrasyn.api.lock import folder_lock
    from contrasyn.checkpoint import remove_stale_temporaries
    from contrasyn.errors import CheckpointError

    model = Path(args.model).expanduser()
    if not model.is_dir():
        raise CheckpointError(f"{model}: no such model folder")
    with folder_lock(model, getattr(args, "command_line", None)):
        remove_stale_temporaries(model)
        det = load_detector(args.model, "cpu")
        old = "none" if det.threshold_ is None else f"{det.threshold_:.6g} ({rate_text(det)})"
        det.set_threshold(false_alarm_rate=args.false_alarm_rate, contamination=args.contamination)
        det.save(model, overwrite=True)
    n_hold = len(det.holdout_scores_)
    print(f"threshold of {args.model}: {old} -> {det.threshold_:.6g} ({rate_text(det)})")
    print(
        f"set from the anomaly scores of the {n_hold} held-out normal images (it is the "
        f"{_ordinal(det.calibration_.rank)} smallest of them); saved"
    )
    print_calibration(print, det)
    if not det.calibration_.guaranteed:
        warn(det.calibration_.describe())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from contrasyn.api.export import ONNX_FILE, export_onnx
    from contrasyn.api.lock import folder_lock

    model = Path(args.model).expanduser()
    out = model if args.out is None else Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"{out}: exists and is not a folder (--out names the folder that gets {ONNX_FILE})"
        )
    det = load_detector(args.model, "cpu")
    if not det.method_.trains_network:
        raise ConfigError(
            f"{args.model}: method {det.method_.name!r} is a baseline; ONNX export is for the "
            f"CSI family's network ({', '.join(network_methods())})"
        )
    with folder_lock(out, getattr(args, "command_line", None)):
        path = export_onnx(det, out)
    print(f"wrote {path / ONNX_FILE}; score with contrasyn.api.export.OnnxDetector({str(path)!r})")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from contrasyn.checkpoint import atomic_write
    from contrasyn.evaluation.quality import save_grid

    target = Path(args.out).expanduser()
    if target.suffix.lower() not in Image.registered_extensions():
        raise ConfigError(f"--out {target}: name an image file (e.g. samples.png)")
    inputs = collect_inputs(args.reconstruct) if args.reconstruct else []
    model = Path(args.model).expanduser()
    out = check_output_path(args.out, model, args.reconstruct or [], inputs, args.overwrite)
    det = load_detector(args.model, args.device)
    if det.generator_ is None:
        raise ConfigError(
            f"{args.model}: method {det.method_.name!r} has no generator; "
            "train with --method full or csi+g"
        )

    def tensor(images):  # uint8 (n, H, W, C) -> float (n, C, H, W) in [0, 1]
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255

    if args.reconstruct:
        from contrasyn.data import load_images

        spec = det.input_
        paths = inputs[: args.n]
        originals, _ = load_images(paths, spec["image_size"], spec["channels"], det.resize)
        rows = [tensor(originals), tensor(det.reconstruct(originals))]
        what = f"{len(paths)} images (top) and their reconstructions G(E(x)) (bottom)"
    else:
        rows = list(tensor(det.sample(args.n, args.seed)).split(16))
        if len(rows) > 1 and len(rows[-1]) < 16:
            rows = rows[:-1]  # a grid of whole rows
        what = f"{sum(len(r) for r in rows)} samples G(h)"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out.parent}: cannot create the folder ({e.strerror or e})") from e
    atomic_write(out, lambda tmp: save_grid(rows, tmp), suffix=out.suffix, replace=args.overwrite)
    print(f"wrote {out}: {what}")
    return 0


def _add_threshold(sub) -> None:
    thr = add_verb(
        sub,
        "threshold",
        help="change a saved detector's threshold without retraining",
        description=[
            "Move the threshold of a saved detector. It is recomputed from the "
            "anomaly scores of the normal images held out during `contrasyn fit` (the "
            "conformal order statistic: at most the given fraction of new normal images is "
            "expected to be flagged) and its 90% interval is printed; nothing is retrained or "
            "run.",
        ],
        examples=[
            "contrasyn threshold my-model --false-alarm-rate 0.01   # fewer false alarms",
            "contrasyn threshold my-model --false-alarm-rate 0.2    # miss fewer anomalies",
        ],
    )
    add_model_dir(thr)
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


def _add_export(sub) -> None:
    exp = add_verb(
        sub,
        "export",
        help="write model.onnx for scoring without PyTorch (onnxruntime)",
        description=[
            "Export a saved detector's network (the CSI family: csi, csi+g, full) to ONNX. "
            "The ONNX file is written as model.onnx into a model folder: MODEL_DIR itself by "
            "default, or the folder --out names, which then gets a copy of the detector "
            "(model.safetensors, model.json) beside it. contrasyn.api.export.OnnxDetector(FOLDER) "
            "then scores images with numpy and onnxruntime only, by one deterministic pass "
            "(the Detector's default), and its scores equal PyTorch's. The export runs on "
            "the CPU. Needs: pip install 'contrasyn[onnx]'.",
        ],
        examples=[
            "contrasyn export my-model                       # writes my-model/model.onnx",
            "contrasyn export my-model --out deploy/my-model  # a folder to ship",
        ],
    )
    add_model_dir(exp)
    add_out(
        exp,
        "the folder that gets model.onnx (default: MODEL_DIR); another folder also gets "
        "the detector's files, so that it is complete",
        "DIR",
    )
    exp.set_defaults(func=cmd_export)


def _add_sample(sub) -> None:
    samp = add_verb(
        sub,
        "sample",
        help="save the generator's images (csi+g, full) or reconstructions (full) as a PNG grid",
        description=[
            "Synthetic images G(h), h ~ N(0, I), of a model trained with method full or csi+g, "
            "16 to a row; or, with --reconstruct, images above their reconstructions G(E(x)) "
            "(full only): normal images come back close, anomalies are pulled towards what "
            "the model learnt as normal.",
        ],
        examples=[
            "contrasyn sample my-model --out samples.png",
            "contrasyn sample my-model --reconstruct new-photos/ --out rec.png --device cpu",
        ],
    )
    add_model_dir(samp)
    add_out(samp, "the PNG file", "PNG", required=True)
    add_overwrite(samp)
    samp.add_argument("--n", type=int, default=64, help="how many images (default 64)")
    add_seed(samp, "seed of the latent draws")
    samp.add_argument(
        "--reconstruct", nargs="+", metavar="IMAGES", help="image files or folders to reconstruct"
    )
    add_device(samp)
    samp.set_defaults(func=cmd_sample)


def add_commands(sub) -> None:
    for add in (add_fit, add_score, add_evaluate, _add_threshold, _add_export, _add_sample):
        add(sub)
    for name in ("fit", "score", "evaluate", "threshold", "export", "sample"):
        sub.choices[name].set_defaults(plain_warnings=True)
