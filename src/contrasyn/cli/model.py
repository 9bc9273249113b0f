"""The practitioner's verbs: ``fit``, ``score``, ``evaluate``, ``threshold``, ``export`` and
``sample``.

``fit`` trains any registered method (the CSI family or a baseline) through ``Detector``;
the other verbs read the model folder it writes, whatever the method.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contrasyn.checkpoint import inside
from contrasyn.cli.options import (
    add_device,
    add_out,
    add_preset,
    add_seed,
    add_settings,
    add_talk,
    add_verb,
    read_settings,
    say,
    warn,
)
from contrasyn.errors import ConfigError, DataError
from contrasyn.evaluation.results import csv_text
from contrasyn.methods.names import BASELINES, METHOD_NAMES
from contrasyn.methods.registry import build_method, method_class, network_methods

if TYPE_CHECKING:
    from contrasyn.api.detector import Detector

# -------------------------------------------------------------------------------- fit


def _method(args: argparse.Namespace) -> str:
    """--method, or the preset's; an unknown name is one error listing the known ones."""
    from contrasyn.presets import get_preset

    name = args.method or get_preset(args.preset).train.method
    if name not in METHOD_NAMES:
        raise ConfigError(f"method {name!r} is not available; available: {', '.join(METHOD_NAMES)}")
    return name


def _settings(args: argparse.Namespace, method: str) -> dict[str, dict[str, Any]]:
    """``--config``/``--set`` as they are written, by section (the method checks them), and
    ``--draws R`` as the CSI family's test-time draws."""
    settings = {section: dict(fields) for section, fields in read_settings(args).items()}
    if args.draws > 0:
        if not method_class(method).trains_network:
            raise ConfigError(
                f"--draws is for the CSI family's scores ({', '.join(network_methods())}), "
                f"not method {method!r}"
            )
        score = settings.setdefault("score", {})
        score.update(augment=True, ensemble=args.draws)
    return settings


def _rate_text(det: Detector) -> str:
    return f"false-alarm rate {det.flag_rate * 100:g}%"


def _checkpoint_epoch(stem: Path) -> int | None:
    """The epoch of an earlier, interrupted run's checkpoint, for the "resuming" message,
    after tidying what a kill during a save leaves (the trainer checks the rest)."""
    from contrasyn.checkpoint import recover_interrupted_save

    if recover_interrupted_save(stem):
        warn(f"{stem.with_suffix('.json')} was left by an interrupted save; rebuilt it")
    try:
        return json.loads(stem.with_suffix(".json").read_text()).get("epoch")
    except (OSError, ValueError, AttributeError):
        return None


def _print_calibration(talk, det: Detector) -> None:
    """The threshold's promise, and how to narrow it (``fit`` and ``threshold``)."""
    calibration = det.calibration_
    if calibration is None:
        return
    talk(f"  {calibration.describe()}")
    talk(f"  {calibration.advice()}")


def cmd_fit(args: argparse.Namespace) -> int:
    from contrasyn import distributed
    from contrasyn.api.detector import Detector, training_indices
    from contrasyn.api.lock import folder_lock
    from contrasyn.checkpoint import remove_stale_temporaries
    from contrasyn.cli.progress import Heartbeat, wanted
    from contrasyn.data import find_images, load_images

    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder (--out names the model folder)")
    data = Path(args.data).expanduser()
    if data.is_dir() and inside(out, data):
        raise ConfigError(
            f"--out {out} is inside --data {data}: the model's files (samples.png, "
            "checkpoints) would be read as training images next time; choose a folder "
            "outside the data"
        )
    method = _method(args)
    family = method_class(method).trains_network
    det = Detector(
        method=method,
        preset=args.preset,
        settings=_settings(args, method),
        score=args.score,
        image_size=args.image_size,
        false_alarm_rate=0.05 if args.false_alarm_rate is None else args.false_alarm_rate,
        contamination=args.contamination,
        holdout=args.holdout,
        deterministic=args.draws == 0,
        skip_bad=args.skip_bad,
        device=args.device,
        seed=args.seed,
        checkpoint_dir=out / "checkpoints" if family else None,
        progress=not args.quiet,
        verbose=args.verbose,
    )
    cfg, spec = det.resolve()  # unknown settings and bad values fail here, before any work
    talk = say(args)

    found = find_images(args.data)
    images, kept = load_images(
        found, spec["image_size"], spec["channels"], det.resize, skip_bad=args.skip_bad
    )
    if not distributed.is_main():  # under torchrun, rank 0 locks, reports and saves
        det.fit(images)
        return 0
    with folder_lock(out, getattr(args, "command_line", None)):
        # what a process killed while saving left: its temporary files (this process holds
        # the folder, so no other writer is using them) and a half-renamed checkpoint
        for stale in remove_stale_temporaries(out):
            warn(f"removed {stale}, left by an interrupted save")
        _replace_other_method(out, method, args.overwrite)
        epoch = _checkpoint_epoch(out / "checkpoints" / "last") if family else None
        size = spec["image_size"]
        unfitted = build_method(method, cfg)
        facts = [unfitted.length, f"{size}x{size}", f"device {args.device}"]
        talk(
            f"contrasyn fit: {len(kept)} images from {args.data}; {method}, preset "
            f"{args.preset} ({', '.join(f for f in facts if f)})"
        )
        if epoch:
            talk(f"resuming from the checkpoint of epoch {epoch} in {out / 'checkpoints'}")
        beat = contextlib.nullcontext()
        if wanted(args.quiet):  # not a terminal: no progress bar, so a line now and then
            metrics = out / "checkpoints" / "metrics.jsonl" if family else None
            _, rest = training_indices(len(images), det.holdout, unfitted.max_train, det.seed)
            steps = unfitted.steps_for(len(rest))
            beat = Heartbeat(talk, f"training {method}", metrics=metrics, total=steps)
        with beat:
            det.fit(images)
            det.save(out, overwrite=True)  # a model of the same method, resumed or refitted
        _fit_summary(args, det, out, found, kept, family, method, talk)
    return 0


def _methods_in(out: Path) -> set[str]:
    """The methods whose files model folder ``out`` holds: its saved model's and its training
    checkpoint's (an unreadable file names none: the load or the resume says what is wrong)."""
    found = set()
    for path, keys in (
        (out / "model.json", ("method",)),
        (out / "checkpoints" / "last.json", ("config", "method")),
    ):
        try:
            value = json.loads(path.read_text())
            for key in keys:
                value = value[key]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(value, str):
            found.add(value)
    return found


def _replace_other_method(out: Path, method: str, overwrite: bool) -> None:
    """A fit of ``method`` into a folder holding another method's model or checkpoints:
    refused unless ``overwrite``; then that method's files (model, checkpoints, samples.png,
    model.onnx) are deleted first, so none of them is left beside the new model and a rerun
    of the same command resumes the new method's training."""
    import shutil

    others = sorted(_methods_in(out) - {method})
    if not others:
        return
    if not overwrite:
        raise ConfigError(
            f"--out {out} holds a model of method {others[0]}; fitting {method} there would "
            "replace it: pass --overwrite to replace it (its model, checkpoints and samples "
            "are deleted), or choose another --out"
        )
    warn(f"--overwrite: deleting the {others[0]} model in {out} before fitting {method}")
    for name in ("model.json", "model.safetensors", "checkpoints", "samples.png", "model.onnx"):
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _fit_summary(args, det: Detector, out: Path, found, kept, family, method, talk) -> None:
    from contrasyn.checkpoint import atomic_write

    n_hold = len(det.holdout_scores_)
    notes = []
    if len(found) > len(kept):
        notes.append(f"{len(found) - len(kept)} unreadable skipped")
    unused = len(kept) - det.n_train_ - n_hold
    if unused:
        section = method_class(method).sections(method)[0]
        notes.append(f"{unused} not used: {section}.max_train={det.method_.max_train}")
    talk(
        f"trained on {det.n_train_} images; {n_hold} held out to set the threshold"
        + (f" ({'; '.join(notes)})" if notes else "")
    )
    if det.threshold_ is None:
        talk("no threshold: --holdout 0 keeps no images to place one (scores only)")
    else:
        talk(
            f"threshold {det.threshold_:.6g} on the anomaly score ({det.score_name_}): "
            f"{_rate_text(det)}, the fraction of normal images it will flag"
        )
        _print_calibration(talk, det)
    talk(
        f"saved to {out} (model.safetensors, model.json)"
        + (f"; training checkpoints in {out}/checkpoints" if family else "")
    )
    if det.generator_ is not None:
        from contrasyn.evaluation.quality import sample, save_grid

        grid = list(sample(det.generator_.sampler, 64, args.seed).split(16))
        atomic_write(out / "samples.png", lambda tmp: save_grid(grid, tmp), suffix=".png")
        talk(f"the generator's samples: {out / 'samples.png'}")
    talk(f"next: contrasyn score {out} IMAGES_OR_FOLDERS... --out scores.csv")


# ------------------------------------------------------------------------------ score


def _load_detector(model: str, device: str) -> Detector:
    from contrasyn.api.detector import Detector
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


def _check_outside_models(flag: str, path: Path, model: Path, probe: Path) -> None:
    """``flag``'s ``path`` (resolved: ``probe``, whose parents are searched) lies neither in
    ``model`` nor in another model folder: one holding a saved model (model.json and
    model.safetensors) or the lock of a ``fit`` (``.contrasyn.api.lock``, which the message
    names: a fit runs there, or stopped before saving anything but a checkpoint)."""
    from contrasyn.api.lock import LOCK_NAME

    if inside(probe, model):
        raise ConfigError(f"{flag} {path} is inside the model folder {model}; write elsewhere")
    for folder in probe.parents:
        if (folder / "model.json").is_file() and (folder / "model.safetensors").is_file():
            raise ConfigError(f"{flag} {path} is inside the model folder {folder}; write elsewhere")
        if (folder / LOCK_NAME).exists():
            raise ConfigError(
                f"{flag} {path} is inside {folder}, which holds {folder / LOCK_NAME}, the lock "
                "of a `contrasyn fit` (one is running there, or stopped before saving its "
                "model: rerun it to finish); write elsewhere"
            )


def check_output_path(
    out: str, model: Path, inputs: list[str], images: list[Path], overwrite: bool
) -> Path:
    """Where a verb may write its result file: never inside a model folder, never over one
    of its input images or as an image inside an input folder (it would be read next time),
    never over an existing file unless ``overwrite``, and never over anything but a regular
    file (a device, a fifo, a symbolic link). ``ConfigError`` says why not."""
    from contrasyn.checkpoint import not_regular
    from contrasyn.data.folder import IMAGE_EXTENSIONS

    path = Path(out).expanduser()
    resolved = path.resolve()
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder; name a file")
    _check_outside_models("--out", path, model, resolved)
    if resolved in {p.resolve() for p in images}:
        raise ConfigError(f"--out {path} is one of the input images; write elsewhere")
    for text in inputs:
        folder = Path(text).expanduser()
        if folder.is_dir() and inside(resolved, folder):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                raise ConfigError(
                    f"--out {path} is an image inside the input folder {folder}: it would be "
                    "scored as an input next time; write elsewhere"
                )
    kind = not_regular(path)
    if kind is not None:
        raise ConfigError(
            f"--out {path} is {kind}, not a regular file: only regular files are replaced; "
            "write elsewhere"
        )
    if path.exists() and not overwrite:
        raise ConfigError(f"--out {path} exists; pass --overwrite to replace it")
    return path


def _write_output(text: str, out: Path | None, overwrite: bool) -> None:
    """Results to standard output, or atomically to ``out``: a full disk or a kill leaves
    the previous file whole, never a fragment. Without ``overwrite`` the file is claimed
    atomically: of two runs writing the same new ``out``, one gets an error."""
    from contrasyn.evaluation.results import write_text

    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out.parent}: cannot create the folder ({e.strerror or e})") from e
    write_text(out, text, replace=overwrite)


def cmd_score(args: argparse.Namespace) -> int:
    from contrasyn.data import load_images

    fmt = args.format or (
        "json" if args.out is not None and args.out.lower().endswith(".json") else "csv"
    )
    paths = _collect_inputs(args.inputs)
    model_dir = Path(args.model).expanduser()
    out = None
    if args.out is not None:
        out = check_output_path(args.out, model_dir, args.inputs, paths, args.overwrite)
    det = _load_detector(args.model, args.device)
    det.skip_bad = args.skip_bad
    if det.threshold_ is None and args.fail_on_anomaly:
        raise ConfigError(
            f"{args.model} has no threshold (trained with --holdout 0): --fail-on-anomaly needs one"
        )
    maps_dir = None
    if args.maps is not None:
        maps_dir = _check_maps_dir(args.maps, model_dir, args.inputs, paths, args.overwrite)
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
    _write_output(text, out, args.overwrite)
    if not args.quiet:
        extra = f" ({len(skipped)} unreadable skipped)" if skipped else ""
        where = f"; results in {args.out}" if args.out is not None else ""
        if det.threshold_ is None:
            verdict = "no threshold (the model was trained with --holdout 0)"
        else:
            verdict = f"{n_bad} anomalous (threshold {det.threshold_:.6g}, {_rate_text(det)})"
        print(
            f"scored {len(rows)} image{'s' if len(rows) != 1 else ''}{extra}: {verdict}{where}",
            file=sys.stderr,
            flush=True,
        )
        if maps_dir is not None:
            print(f"anomaly maps: {maps_dir} (one PNG per image)", file=sys.stderr, flush=True)
    return 3 if args.fail_on_anomaly and n_bad else 0


def _check_maps_dir(
    text: str, model: Path, inputs: list[str], images: list[Path], overwrite: bool
) -> Path:
    """Where ``score --maps`` may write its PNGs: a folder (created), never inside a model
    folder or an input folder (the PNGs would be scored next time), and never over existing
    overlays unless ``overwrite``. ``ConfigError`` says why not; nothing is written yet."""
    from contrasyn.api.maps import overlay_names

    folder = Path(text).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--maps {folder} is a file; name a folder")
    resolved = folder.resolve()
    _check_outside_models("--maps", folder, model, resolved / "x")
    for item in inputs:
        source = Path(item).expanduser()
        if source.is_dir() and (inside(resolved, source) or inside(source, resolved)):
            raise ConfigError(
                f"--maps {folder} overlaps the input folder {source}: its PNGs would be scored "
                "as inputs next time; write elsewhere"
            )
    if not overwrite:
        clash = [n for n in overlay_names(images, len(images)) if (folder / n).exists()]
        if clash:
            raise ConfigError(
                f"--maps {folder} already holds {clash[0]} ({len(clash)} of the overlays); "
                "pass --overwrite to replace them, or another folder"
            )
    return folder


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


# ------------------------------------------------------------------ threshold / export


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
        det = _load_detector(args.model, "cpu")
        old = "none" if det.threshold_ is None else f"{det.threshold_:.6g} ({_rate_text(det)})"
        det.set_threshold(false_alarm_rate=args.false_alarm_rate, contamination=args.contamination)
        det.save(model, overwrite=True)
    n_hold = len(det.holdout_scores_)
    print(f"threshold of {args.model}: {old} -> {det.threshold_:.6g} ({_rate_text(det)})")
    print(
        f"set from the anomaly scores of the {n_hold} held-out normal images (it is the "
        f"{_ordinal(det.calibration_.rank)} smallest of them); saved"
    )
    _print_calibration(print, det)
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
    det = _load_detector(args.model, "cpu")
    if not det.method_.trains_network:
        raise ConfigError(
            f"{args.model}: method {det.method_.name!r} is a baseline; ONNX export is for the "
            f"CSI family's network ({', '.join(network_methods())})"
        )
    with folder_lock(out, getattr(args, "command_line", None)):
        path = export_onnx(det, out)
    print(f"wrote {path / ONNX_FILE}; score with contrasyn.api.export.OnnxDetector({str(path)!r})")
    return 0


# ----------------------------------------------------------------------------- sample


def cmd_sample(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from contrasyn.checkpoint import atomic_write
    from contrasyn.evaluation.quality import save_grid

    target = Path(args.out).expanduser()
    if target.suffix.lower() not in Image.registered_extensions():
        raise ConfigError(f"--out {target}: name an image file (e.g. samples.png)")
    inputs = _collect_inputs(args.reconstruct) if args.reconstruct else []
    model = Path(args.model).expanduser()
    out = check_output_path(args.out, model, args.reconstruct or [], inputs, args.overwrite)
    det = _load_detector(args.model, args.device)
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


# ---------------------------------------------------------------------------- parsers


def _add_model_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL_DIR", help="folder written by `contrasyn fit`")


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it exists (default: refuse). A path inside a model folder, "
        "or one of the input images, is always refused",
    )


def _add_skip_bad(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable image files with a warning (default: stop with an error)",
    )


def _add_fit(sub) -> None:
    fit = add_verb(
        sub,
        "fit",
        help="train a detector on a folder of normal images and save it",
        description=[
            "Train an anomaly detector on your normal images (no anomalies needed) "
            "and save it to a model folder.",
            "Every image below --data (png, jpg, bmp, tif, webp; subfolders included) is taken "
            "as normal. A fraction (--holdout) is kept out of training and used to set the "
            "threshold: the conformal order statistic of their scores, so that on new normal "
            "images from the same source at most --false-alarm-rate are expected to be flagged; "
            "fit prints the 90% interval of the rate it will see, which more images or a larger "
            "--holdout narrow. --out is locked while fit runs (a second writer is refused), and "
            "may not lie inside --data. Training of the CSI family is checkpointed in "
            "MODEL_DIR/checkpoints: if it is interrupted, run the same command again to "
            "continue where it stopped.",
            f"Methods: {', '.join(METHOD_NAMES)}. The CSI family "
            f"({', '.join(network_methods())}; full is the "
            "paper's method and the presets' default) takes --set train.FIELD and "
            "score.FIELD (the fields of TrainConfig and ScoreConfig in contrasyn/config.py); "
            f"a baseline ({', '.join(BASELINES)}) takes its own settings under its name, "
            "e.g. --set rot.epochs=20 (contrasyn/methods/baselines/). A section that does not "
            "apply to the method is refused.",
        ],
        examples=[
            "contrasyn fit --data photos/good --out my-model",
            "contrasyn fit --data photos/good --out my-model --false-alarm-rate 0.01 "
            "--set train.epochs=50",
            "contrasyn fit --data photos/good --out rot-model --method rot --set rot.epochs=20",
            "contrasyn fit --data photos/good --out big --preset paper --device cuda:1",
            "contrasyn fit --data photos/good --out quick --preset tiny   # a smoke test",
        ],
    )
    fit.add_argument("--data", required=True, metavar="DIR", help="folder of normal images")
    add_out(fit, "the model folder (written, and resumed from)", "MODEL_DIR", required=True)
    fit.add_argument(
        "--method",
        default=None,
        metavar="METHOD",
        help=f"{', '.join(METHOD_NAMES)}; default: the preset's (cpu: csi, paper: full)",
    )
    add_preset(fit)
    fit.add_argument(
        "--score",
        choices=["feat", "paper", "csi", "cos", "norm"],
        help="the CSI family's anomaly score (default: the preset's; feat for cpu and tiny); "
        "a baseline has one score",
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
        help="images are resized to N x N pixels (default: the preset's, 32); at 64 or 128 add "
        "--set train.stem=imagenet, which makes a CPU fit several times cheaper (README: Image "
        "size)",
    )
    fit.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a model of another method in MODEL_DIR (its model, checkpoints and "
        "samples are deleted first; default: refuse). A rerun of the same method resumes "
        "instead, and other seeds, settings or images are always refused",
    )
    _add_skip_bad(fit)
    add_device(fit)
    add_seed(fit)
    add_settings(
        fit,
        f"sections train, score (the CSI family) or the baseline's name ({', '.join(BASELINES)})",
        "train.epochs=50, --set train.batch_size=64, --set rot.epochs=20",
    )
    fit.add_argument(
        "--draws",
        type=int,
        default=0,
        metavar="R",
        help="the CSI family only: average each score over R random test-time augmentations "
        "(CSI's ensemble; scores then vary slightly with the batch an image comes in). "
        "Default 0: one deterministic pass over the 4 rotations, the same score every time",
    )
    add_talk(
        fit,
        quiet="no progress bar and no summary",
        verbose="also print the losses every log_every steps",
    )
    fit.set_defaults(func=cmd_fit)


def _add_score(sub) -> None:
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
    _add_model_dir(score)
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
    _add_overwrite(score)
    _add_skip_bad(score)
    add_device(score)
    score.add_argument(
        "--fail-on-anomaly",
        action="store_true",
        help="exit with status 3 when any image is labelled anomalous (for scripts; an image "
        "whose score is not finite counts as anomalous)",
    )
    add_talk(score, quiet="no summary line")
    score.set_defaults(func=cmd_score)


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
    _add_model_dir(thr)
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
    _add_model_dir(exp)
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
    _add_model_dir(samp)
    add_out(samp, "the PNG file", "PNG", required=True)
    _add_overwrite(samp)
    samp.add_argument("--n", type=int, default=64, help="how many images (default 64)")
    add_seed(samp, "seed of the latent draws")
    samp.add_argument(
        "--reconstruct", nargs="+", metavar="IMAGES", help="image files or folders to reconstruct"
    )
    add_device(samp)
    samp.set_defaults(func=cmd_sample)


def _add_evaluate(sub) -> None:
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
    _add_model_dir(ev)
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
    _add_overwrite(ev)
    _add_skip_bad(ev)
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
    _check_outside_models("--out", out, model, resolved / "x")
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
    det = _load_detector(args.model, args.device)
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


def add_commands(sub) -> None:
    for add in (_add_fit, _add_score, _add_evaluate, _add_threshold, _add_export, _add_sample):
        add(sub)
    for name in ("fit", "score", "evaluate", "threshold", "export", "sample"):
        sub.choices[name].set_defaults(plain_warnings=True)
