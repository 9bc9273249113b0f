"""What the model verbs share: reading a model folder, the input files, and the guards
that keep every output away from a user's files (models, inputs, device nodes)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from contrasyn.checkpoint import inside
from contrasyn.cli.options import warn
from contrasyn.errors import ConfigError, DataError

if TYPE_CHECKING:
    from contrasyn.api.detector import Detector


def load_detector(model: str, device: str) -> Detector:
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


def collect_inputs(inputs: list[str]) -> list[Path]:
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


def check_outside_models(flag: str, path: Path, model: Path, probe: Path) -> None:
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
    check_outside_models("--out", path, model, resolved)
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


def write_output(text: str, out: Path | None, overwrite: bool) -> None:
    """Results to standard output, or atomically to ``out``: a full disk or a kill leaves
    the previous file whole, never a fragment. Without ``overwrite`` the file is claimed
    atomically: of two runs writing the same new ``out``, one gets an error."""
    from contrasyn.textfiles import write_text

    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out.parent}: cannot create the folder ({e.strerror or e})") from e
    write_text(out, text, replace=overwrite)


def check_maps_dir(
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
    check_outside_models("--maps", folder, model, resolved / "x")
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


def rate_text(det: Detector) -> str:
    return f"false-alarm rate {det.flag_rate * 100:g}%"


def print_calibration(talk, det: Detector) -> None:
    """The threshold's promise, and how to narrow it (``fit`` and ``threshold``)."""
    calibration = det.calibration_
    if calibration is None:
        return
    talk(f"  {calibration.describe()}")
    talk(f"  {calibration.advice()}")


def add_model_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL_DIR", help="folder written by `contrasyn fit`")


def add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it exists (default: refuse). A path inside a model folder, "
        "or one of the input images, is always refused",
    )


def add_skip_bad(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable image files with a warning (default: stop with an error)",
    )


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


def replace_other_method(out: Path, method: str, overwrite: bool) -> None:
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
