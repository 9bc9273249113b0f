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

import argparse
import contextlib
import shlex
import sys

from contrasyn import __version__
from contrasyn.cli import bench, data, model
from contrasyn.cli.options import (
    EXIT_CODES,
    check_device,
    paragraphs,
    plain_warnings,
    set_threads,
)
from contrasyn.errors import ContrasynError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
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
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["contrasyn", *argv])
    try:
        warnings = plain_warnings() if getattr(args, "plain_warnings", False) else None
        with warnings or contextlib.nullcontext():
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
        print("contrasyn: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        if "torch" in sys.modules:  # a process group can only exist where torch was loaded
            from contrasyn import distributed

            distributed.shutdown()
