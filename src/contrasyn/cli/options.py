"""What every verb shares: the common flags, each declared once with one meaning, the
``--config``/``--set`` reader, the help layout, and the one-line messages.

The flags (each a function that adds it to a verb's parser):

- ``--device``: where networks run: auto (a GPU if any), cpu, cuda, cuda:N or mps; ``main``
  checks it before the verb starts, so a bad or absent device is one line, exit 2.
- ``--threads``: PyTorch's CPU threads (declared with ``--device``); ``main`` sets them.
- ``--out``: where the verb writes what it makes (a folder or a file, as the verb says).
- ``--preset``: a named recipe (cpu, paper, demo, tiny).
- ``--config FILE`` / ``--set SECTION.FIELD=VALUE``: settings on top of the preset.
- ``--seed``: the random seed.
- ``--quiet`` / ``--verbose``: less or more on the terminal (never both).
- ``--root``: the dataset folder, where a dataset is not in its usual place.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import textwrap
import warnings
from pathlib import Path

from contrasyn.config import (
    MAX_IMAGE_SIZE,
    SEED_LIMIT,
    check_holdout,
    check_rate,
    check_seed,
    is_int,
)
from contrasyn.errors import ConfigError

EXIT_CODES = """exit codes:
  0    success
  1    something unexpected (a bug: the traceback is printed)
  2    bad input, model folder, configuration or environment (a full disk, a model folder
       in use by another run); one line "contrasyn: error: ..." says what and where
  3    score --fail-on-anomaly only: at least one image was labelled anomalous
  130  interrupted (Ctrl-C); rerun the same command to resume"""

DEVICES = "auto (a GPU if there is one), cpu, cuda, cuda:N or mps"
PRESETS_HELP = (
    "cpu (minutes on a laptop CPU), paper (for a GPU: hours; the paper's networks, 1,000 "
    "epochs, N = 5 and 4 rotations, but scored with feat, not eq. 11 (--set "
    "score.score=paper for eq. 11), F trained with CSI's LARS, bf16 where the hardware has "
    "it), "
    "demo (a cut-down cpu), tiny (seconds; smoke tests only)"
)

# -------------------------------------------------------------------------------- help


def paragraphs(*texts: str) -> str:
    """Descriptions pre-wrapped, since the raw formatter (kept for the epilogs) does not wrap."""
    return "\n\n".join(textwrap.fill(t, 88) for t in texts)


def add_verb(
    sub,
    name: str,
    help: str,
    description: list[str],
    examples: list[str],
) -> argparse.ArgumentParser:
    """A verb's parser with its description, an ``examples:`` section and the exit codes."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples) + "\n\n" + EXIT_CODES
    return sub.add_parser(
        name,
        help=help,
        description=paragraphs(*description),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


# ------------------------------------------------------------------------------- flags


def add_device(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument(
        "--device",
        default=default,
        metavar="DEVICE",
        help=f"where the networks run: {DEVICES} (default {default})",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads PyTorch uses (default: one per core). On a machine busy with other "
        "work, give the cores that are free: threads that wait on each other for a busy core "
        "slow a fit down by several times. More threads than cores get a warning; more than "
        f"{THREADS_PER_CORE} per core are refused",
    )


def add_out(
    p: argparse.ArgumentParser,
    what: str,
    metavar: str,
    required: bool = False,
    default: str | None = None,
) -> None:
    """``--out``: where this verb writes its output; ``what`` says what that is here."""
    p.add_argument(
        "--out",
        required=required,
        default=default,
        metavar=metavar,
        help=f"where this command writes: {what}",
    )


def add_preset(p: argparse.ArgumentParser, default: str = "cpu") -> None:
    p.add_argument(
        "--preset",
        default=default,
        help=f"the recipe: {PRESETS_HELP}; default {default}",
    )


def add_time(p: argparse.ArgumentParser, what: str) -> None:
    """``--time DURATION``: fit by the clock."""
    p.add_argument(
        "--time",
        metavar="DURATION",
        help=f"fit by the clock: {what} ends within DURATION (10m, 90s, 1h30m or seconds); "
        "the method times its steps on this machine and chooses its length, recorded in "
        "model.json as train.steps (set it to repeat the run exactly). Replaces the preset's "
        "budget (cpu: 10m); train.epochs or train.steps given instead set the length",
    )


def add_settings(p: argparse.ArgumentParser, sections: str, example: str) -> None:
    """``--config FILE`` and repeatable ``--set SECTION.FIELD=VALUE`` (later ones win)."""
    p.add_argument(
        "--config",
        metavar="FILE",
        help=f"YAML/JSON file of settings by section, {{SECTION: {{FIELD: VALUE}}}}; {sections}",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="SECTION.FIELD=VALUE",
        help=f"change one setting, e.g. --set {example} (repeatable; applied after --config)",
    )


def add_seed(p: argparse.ArgumentParser, what: str = "random seed") -> None:
    p.add_argument("--seed", type=int, default=0, help=f"{what} (default 0)")


def add_talk(p: argparse.ArgumentParser, quiet: str, verbose: str | None = None) -> None:
    """``--quiet`` (and, where there is more to say, ``--verbose``), never both."""
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("--quiet", action="store_true", help=quiet)
    if verbose is not None:
        talk.add_argument("--verbose", action="store_true", help=verbose)
    else:
        p.set_defaults(verbose=False)


def add_root(
    p: argparse.ArgumentParser,
    help: str = "folder holding the dataset's files (default: its usual place)",
) -> None:
    """``--root``: the dataset's folder."""
    p.add_argument("--root", metavar="DIR", help=help)


# -------------------------------------------------------------------------- parsing


def check_device(name: str) -> str:
    """Fail early, in one line, on a device torch does not know or this machine lacks."""
    from contrasyn.device import resolve_device

    resolve_device(name)
    return name


# --threads above this many per core is refused: 1000 threads on 2 cores made an 8 s fit
# take over 300 s (threads that wait on each other for a core).
THREADS_PER_CORE = 4


def cores() -> int:
    """The CPU cores this process may run on (its affinity, where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_threads(n: int) -> None:
    """PyTorch's intra-op CPU threads for this process (``--threads``), checked against the
    cores: above them a warning, above ``THREADS_PER_CORE`` per core a refusal."""
    have = cores()
    if n < 1:
        raise ConfigError(f"--threads must be >= 1, got {n}")
    if n > THREADS_PER_CORE * have:
        raise ConfigError(
            f"--threads {n} is far more than the {have} core(s) this process may use (at most "
            f"{THREADS_PER_CORE * have}, {THREADS_PER_CORE} per core): threads that wait on "
            f"each other for a core slow PyTorch down many times; give at most {have}"
        )
    if n > have:
        warn(
            f"--threads {n} is more than the {have} core(s) this process may use: threads "
            "beyond the cores slow PyTorch down; give at most the free cores"
        )
    import torch

    torch.set_num_threads(n)


def _count(low: int, high: int):
    def check(value, flag: str) -> None:
        if not is_int(value) or not low <= value <= high:
            raise ConfigError(f"{flag} must be an integer in [{low}, {high}], got {value!r:.40}")

    return check


# Every number flag, by its argparse name, and its check (``check_numbers``).
_NUMBER_FLAGS = {
    "seed": check_seed,
    "holdout": check_holdout,
    "false_alarm_rate": check_rate,
    "contamination": check_rate,
    "image_size": _count(1, MAX_IMAGE_SIZE),
    "draws": _count(0, 1000),  # each draw is a whole scoring pass
    "n": _count(1, 10000),  # sample: images in one grid
    "val_normal": _count(1, SEED_LIMIT - 1),
    "max_test": _count(1, SEED_LIMIT - 1),
}


def check_numbers(args: argparse.Namespace) -> None:
    """The verb's number flags, each checked for its range (a NaN, a negative seed, a count
    of 0), before any work: one ``ConfigError`` naming the flag. ``--threads`` is checked
    against the cores by ``set_threads``."""
    for dest, check in _NUMBER_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            check(value, "--" + dest.replace("_", "-"))


def parse_list(text: str, kind: type = str) -> list:
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise ConfigError(
            f"cannot read {text!r} as a comma-separated list of {kind.__name__}"
        ) from e


def read_settings(args: argparse.Namespace) -> dict:
    """Settings from ``--config FILE`` (JSON/YAML, nested {"train": .., "rot": ..}) then the
    ``--set section.field=value`` flags, later ones winning."""
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
            raise ConfigError(f"{path}: expected a mapping of sections (train, score, ...)")
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
    for section, fields in over.items():
        if not isinstance(fields, dict):
            raise ConfigError(f"config section {section!r} must map field names to values")
    return over


# ------------------------------------------------------------------------- messages


def say(args: argparse.Namespace):
    """``print`` for progress lines, or nothing under ``--quiet``."""
    return (lambda *a: None) if args.quiet else (lambda msg: print(msg, flush=True))


def warn(message: str) -> None:
    print(f"contrasyn: warning: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def plain_warnings():
    """Show the library's warnings (skipped files, a small held-out set) as one line each,
    ``contrasyn: warning: ...``, instead of Python's file:line format; others unchanged."""
    package = str(Path(__file__).resolve().parent.parent)
    with warnings.catch_warnings():
        warnings.filterwarnings("always", module=r"contrasyn(\.|$)")
        original = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if str(Path(filename).resolve()).startswith(package):
                print(f"contrasyn: warning: {message}", file=sys.stderr, flush=True)
            else:
                original(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield
