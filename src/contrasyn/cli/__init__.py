"""The ``contrasyn`` command line.

Your own images, in three commands::

    contrasyn fit --data photos/good --out my-model     # train on normal images only
    contrasyn score my-model new-photos/ --out scores.csv
    contrasyn threshold my-model --false-alarm-rate 0.01  # move the threshold, no retraining

and the research side: ``contrasyn benchmark``, ``demo``, ``report``, ``quality``, ``data``.

The package: ``options`` declares the flags every verb shares (``--device``, ``--out``,
``--preset``, ``--config``/``--set``, ``--seed``, ``--quiet``/``--verbose``, ``--root``) once,
with one meaning; ``model`` holds fit/score/threshold/export/sample, ``bench``
benchmark/demo/report/quality, ``data`` the dataset verb.

Exit codes (every command):

- 0: success.
- 1: something unexpected (a bug: the traceback is printed).
- 2: a problem with the input, the model folder, the configuration or the environment (a
  full disk, a model folder in use by another run); one line ``contrasyn: error: ...``
  says what and where (argparse's usage errors also exit 2). Never a traceback.
- 3: only ``score --fail-on-anomaly``: at least one image was labelled anomalous (an image
  whose score is not finite counts as anomalous).
- 130: interrupted (Ctrl-C); rerun the same command to resume.
"""

from __future__ import annotations

# Only the standard library at the top: the verbs (and torch, numpy) are imported inside
# ``main``'s ``try``, so that a Ctrl-C at any moment of start-up is the one line and 130.
import argparse
import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Iterator

from contrasyn.version import __version__

__all__ = ["build_parser", "main"]

INTERRUPTED = "contrasyn: interrupted; rerun the same command to resume"


def build_parser() -> argparse.ArgumentParser:
    from contrasyn.cli import bench, data, model
    from contrasyn.cli.options import EXIT_CODES, paragraphs

    parser = argparse.ArgumentParser(
        prog="contrasyn",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=paragraphs(
            "One-class image anomaly detection: train on normal images only, "
            "then score new images by how anomalous they are."
        ),
        epilog="your own images, in three commands:\n"
        "  contrasyn fit --data photos/good --out my-model\n"
        "  contrasyn score my-model new-photos/ --out scores.csv\n"
        "  contrasyn threshold my-model --false-alarm-rate 0.01\n"
        "`contrasyn COMMAND --help` explains each command, with examples.\n\n" + EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"contrasyn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model.add_commands(sub)
    bench.add_commands(sub)
    data.add_commands(sub)
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """The command line on ``argv`` (default: the process's own, ``sys.argv``): the exit code."""
    as_program = argv is None
    argv = sys.argv[1:] if argv is None else argv
    try:
        with _interrupts_deferred():
            from contrasyn.cli.options import (
                check_device,
                check_numbers,
                plain_warnings,
                set_threads,
            )
            from contrasyn.errors import ContrasynError

            parser = build_parser()  # imports torch
    except KeyboardInterrupt:  # Ctrl-C while Python imported: nothing has started
        return _interrupted(as_program)
    try:
        args = parser.parse_args(argv)
        args.command_line = shlex.join(["contrasyn", *argv])
        warnings = plain_warnings() if getattr(args, "plain_warnings", False) else None
        with warnings or contextlib.nullcontext():
            check_numbers(args)  # NaN, negative seeds...: one line, before any work
            if getattr(args, "device", None) is not None:
                check_device(args.device)  # a bad or absent device: one line, before any work
            if getattr(args, "threads", None) is not None:
                set_threads(args.threads)
            return args.func(args)
    except ContrasynError as e:
        print(f"contrasyn: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # the environment: a full disk, a vanished folder, a closed pipe
        where = f"{e.filename}: " if e.filename is not None else ""
        reason = e.strerror or str(e)
        print(f"contrasyn: error: {where}{_one_line(reason)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            "contrasyn: error: out of memory (fewer or smaller images, a smaller "
            "score.batch_size, or a machine with more memory)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return _interrupted(as_program)
    finally:
        # a process group exists only where contrasyn.distributed made one; importing it
        # here could re-import a torch that a Ctrl-C interrupted half-way (an ImportError)
        distributed = sys.modules.get("contrasyn.distributed")
        if distributed is not None:
            distributed.shutdown()


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """A Ctrl-C while the block runs (Python importing torch and numpy) is raised as
    ``KeyboardInterrupt`` once the block is over, not inside it: raised inside torch's C++
    start-up code it aborts the process ("terminate called after throwing an instance of
    'pybind11::error_already_set'"), elsewhere it can leave torch half-imported. Outside the
    main thread (no signal handlers there) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _interrupted(as_program: bool) -> int:
    """Ctrl-C: one line and 130. When this is the program (not a call with its own
    ``argv``), a second Ctrl-C while the process ends is ignored: no traceback either."""
    if as_program:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(INTERRUPTED, file=sys.stderr)
    return 130
