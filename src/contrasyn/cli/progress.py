"""Progress for logs: one line every so often while ``fit`` works, when output is not a terminal.

On a terminal the trainer's progress bar (tqdm) shows progress; redirected to a file it is
off, and a long ``fit`` would print nothing for minutes. ``Heartbeat`` then prints a line
every ``CONTRASYN_PROGRESS_SECONDS`` seconds (default 30): the elapsed time and, for the CSI
family, the step reached, read from the run's ``metrics.jsonl`` (written every
``train.log_every`` steps), e.g.::

    contrasyn fit: training full: step 120/372 (32%), epoch 3.24, loss 4.117; 2 min 05 s elapsed
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

DEFAULT_SECONDS = 30.0


def interval() -> float:
    """Seconds between two lines: ``$CONTRASYN_PROGRESS_SECONDS`` (default 30)."""
    try:
        value = float(os.environ.get("CONTRASYN_PROGRESS_SECONDS", DEFAULT_SECONDS))
    except ValueError:
        return DEFAULT_SECONDS
    return value if value > 0 else DEFAULT_SECONDS


def wanted(quiet: bool, stream=None) -> bool:
    """Lines are printed unless ``--quiet`` or the output is a terminal (the bar shows)."""
    stream = sys.stdout if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return not quiet and not tty


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _last_record(path: Path | None) -> dict | None:
    """The last complete record of a ``metrics.jsonl`` (its tail only is read)."""
    if path is None:
        return None
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            return record
    return None


class Heartbeat:
    """A daemon thread printing ``line()`` through ``say`` every ``every`` seconds until
    ``stop``; a context manager. ``what`` names the work (``training full``); ``metrics``
    and ``total`` (steps) add the step reached."""

    def __init__(
        self,
        say: Callable[[str], None],
        what: str,
        every: float | None = None,
        metrics: Path | None = None,
        total: int | None = None,
    ) -> None:
        self.say, self.what, self.metrics, self.total = say, what, metrics, total
        self.every = interval() if every is None else every
        self.start_time = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def line(self) -> str:
        parts = [f"contrasyn fit: {self.what}"]
        record = _last_record(self.metrics)
        if record is not None and "step" in record:
            step = int(record["step"]) + 1
            where = f"step {step}" + (f"/{self.total}" if self.total else "")
            if self.total:
                where += f" ({100 * step / self.total:.0f}%)"
            if "epoch" in record:
                where += f", epoch {record['epoch']}"
            if isinstance(record.get("loss"), int | float):
                where += f", loss {record['loss']:.4g}"
            parts[0] += f": {where}"
        elif record is not None and "warmup_round" in record:
            parts[0] += f": warm-up round {int(record['warmup_round']) + 1}"
        parts.append(f"{_elapsed(time.monotonic() - self.start_time)} elapsed")
        return "; ".join(parts)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.say(self.line())
            except (OSError, ValueError):  # output closed: stop quietly
                return

    def __enter__(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name="contrasyn-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
