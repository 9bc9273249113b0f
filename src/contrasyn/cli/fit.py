"""``contrasyn fit``: train any registered method through ``Detector`` into a model folder
(locked, resumable, checkpointed where the method keeps checkpoints)."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from contrasyn.budget import format_seconds
from contrasyn.checkpoint import inside
from contrasyn.cli.options import (
    add_device,
    add_out,
    add_preset,
    add_seed,
    add_settings,
    add_talk,
    add_time,
    add_verb,
    read_settings,
    say,
    warn,
)
from contrasyn.cli.outputs import (
    add_skip_bad,
    print_calibration,
    rate_text,
    replace_other_method,
)
from contrasyn.errors import ConfigError
from contrasyn.methods.csi_config import SCORES
from contrasyn.methods.registry import network_methods
from contrasyn.names import METHOD_NAMES, OWN_SECTION

if TYPE_CHECKING:
    from contrasyn.api.detector import Detector


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


def cmd_fit(args: argparse.Namespace) -> int:
    from contrasyn import distributed
    from contrasyn.api.detector import Detector
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
    settings = read_settings(args)
    det = Detector(
        method=args.method,
        preset=args.preset,
        settings=settings,
        score=args.score,
        image_size=args.image_size,
        false_alarm_rate=0.05 if args.false_alarm_rate is None else args.false_alarm_rate,
        contamination=args.contamination,
        holdout=args.holdout,
        skip_bad=args.skip_bad,
        device=args.device,
        seed=args.seed,
        checkpoint_dir=out / "checkpoints",  # kept by the methods that train a network
        progress=not args.quiet,
        verbose=args.verbose,
        time_budget=args.time,
    )
    started = time.monotonic()  # a time budget counts from before the files are decoded
    found = find_images(args.data)
    plan = det.plan(len(found))  # unknown settings and bad values fail here, before any work
    if args.draws > 0:  # R test-time draws: the CSI family's score section
        if not plan.checkpoints:
            raise ConfigError(
                f"--draws is for the CSI family's scores, not method {det.method_name!r}"
            )
        draws = {**settings, "score": {**settings.get("score", {}), "augment": True}}
        draws["score"]["ensemble"] = args.draws
        plan = det.set_params(settings=draws, deterministic=False).plan(len(found))
    method, spec, talk = det.method_name, plan.input, say(args)
    images, kept = load_images(
        found, spec["image_size"], spec["channels"], det.resize, skip_bad=args.skip_bad
    )
    if not distributed.is_main():  # under torchrun, rank 0 locks, reports and saves
        det.fit(images, started=started)
        return 0
    with folder_lock(out, getattr(args, "command_line", None)):
        # what a process killed while saving left: its temporary files (this process holds
        # the folder, so no other writer is using them) and a half-renamed checkpoint
        for stale in remove_stale_temporaries(out):
            warn(f"removed {stale}, left by an interrupted save")
        replace_other_method(out, method, args.overwrite)
        epoch = _checkpoint_epoch(out / "checkpoints" / "last") if plan.checkpoints else None
        size = spec["image_size"]
        facts = [plan.length, f"{size}x{size}", f"device {args.device}"]
        talk(
            f"contrasyn fit: {len(kept)} images from {args.data}; {method}, preset "
            f"{args.preset} ({', '.join(f for f in facts if f)})"
        )
        if epoch:
            talk(f"resuming from the checkpoint of epoch {epoch} in {out / 'checkpoints'}")
        beat = contextlib.nullcontext()
        if wanted(args.quiet):  # not a terminal: no progress bar, so a line now and then
            metrics = out / "checkpoints" / "metrics.jsonl" if plan.checkpoints else None
            beat = Heartbeat(talk, f"training {method}", metrics=metrics, total=plan.steps)
        with beat:
            det.fit(images, started=started)
            det.save(out, overwrite=True)  # a model of the same method, resumed or refitted
        _fit_summary(args, det, out, found, kept, plan.checkpoints, talk)
        budget = det.method_.time_budget
        if budget is not None:
            used = time.monotonic() - started
            talk(
                f"fitted by the clock in {format_seconds(used)} of {format_seconds(budget)} "
                f"(m:ss); {det.method_.length}: --set {det.method_.length_setting} repeats it"
            )
    return 0


def _fit_summary(args, det: Detector, out: Path, found, kept, checkpoints, talk) -> None:
    from contrasyn.checkpoint import atomic_write

    n_hold = len(det.holdout_scores_)
    notes = []
    if len(found) > len(kept):
        notes.append(f"{len(found) - len(kept)} unreadable skipped")
    loo = det.leave_one_out_
    unused = len(kept) - det.n_train_ - (0 if loo else n_hold)
    if unused:
        notes.append(f"{unused} not used: the method's max_train is {det.method_.max_train}")
    how = (
        "each scored against the others to set the threshold (leave-one-out)"
        if loo
        else f"{n_hold} held out to set the threshold"
    )
    talk(f"trained on {det.n_train_} images; {how}" + (f" ({'; '.join(notes)})" if notes else ""))
    if det.threshold_ is None:
        talk("no threshold: --holdout 0 keeps no images to place one (scores only)")
    else:
        talk(
            f"threshold {det.threshold_:.6g} on the anomaly score ({det.score_name_}): "
            f"{rate_text(det)}, the fraction of normal images it will flag"
        )
        print_calibration(talk, det)
    talk(
        f"saved to {out} (model.safetensors, model.json)"
        + (f"; training checkpoints in {out}/checkpoints" if checkpoints else "")
    )
    if det.generator_ is not None:
        from contrasyn.evaluation.quality import save_grid
        from contrasyn.methods.csi.adversarial import sample

        grid = list(sample(det.generator_.sampler, 64, args.seed).split(16))
        atomic_write(out / "samples.png", lambda tmp: save_grid(grid, tmp), suffix=".png")
        talk(f"the generator's samples: {out / 'samples.png'}")
    talk(f"next: contrasyn score {out} IMAGES_OR_FOLDERS... --out scores.csv")


def add_fit(sub) -> None:
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
            "score.FIELD (the fields of TrainConfig and ScoreConfig in "
            "contrasyn/methods/csi_config.py); "
            f"every other method ({', '.join(OWN_SECTION)}) takes its own settings under its "
            "name, e.g. --set rot.epochs=20 (contrasyn/methods/baselines/, "
            "contrasyn/methods/pretrained/). A section that does not "
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
    add_time(fit, "the whole fit, from reading the images to saving the model,")
    fit.add_argument(
        "--score",
        choices=SCORES,
        help="the CSI family's anomaly score (default: the preset's; feat+pix for cpu and "
        "demo, feat for paper and tiny); a baseline has one score",
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
    add_skip_bad(fit)
    add_device(fit)
    add_seed(fit)
    add_settings(
        fit,
        f"sections train, score (the CSI family) or the method's name ({', '.join(OWN_SECTION)})",
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
