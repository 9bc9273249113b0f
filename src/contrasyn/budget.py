"""Fitting by the clock: a time budget for a whole fit, and the arithmetic that turns the
seconds a training step takes on this machine into a schedule that ends within it.

``Detector(time_budget="10m")`` starts a ``Clock`` when ``fit`` begins (before the images are
decoded) and hands it to the method. A method that can be budgeted (``Method.budgeted``)
times a few steps of its own on a throwaway copy of its network, keeps aside what comes
after training (the bank, the held-out images the detector scores, the save), and fixes the
schedule's length from the rest (``steps_within``). The length it chose is written into its
settings (``train.steps``, ``rot.steps``), so ``model.json`` and benchmark rows hold it and
``--set train.steps=N`` repeats the same run on any machine. Torch-free.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from contrasyn.errors import ConfigError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smh])")
# Kept aside besides the measured work after training: the save, the last checkpoint, the
# model.json and a margin for a machine that is not quite idle (a fraction of the budget).
SAVE_SECONDS = 5.0
MARGIN = 0.04
# A run whose steps prove faster than timed is lengthened as if each later step took this much
# longer than the measured ones (never longer than timed): on the 2-core VMs the steps after
# the check ran from 9% faster to 6% slower than the warm-up's.
LENGTHEN_SLACK = 1.10


def parse_duration(value: str | float | int) -> float:
    """Seconds from ``600``, ``"600"``, ``"90s"``, ``"10m"``, ``"1h"`` or ``"1h30m"``; a
    ``ConfigError`` for anything else, or for zero or less."""
    if isinstance(value, bool):
        raise ConfigError(f"time budget must be a duration such as 10m or 600s, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or _DURATION.sub("", text).strip():
                raise ConfigError(
                    f"time budget must be a duration such as 10m, 90s, 1h30m or 600 "
                    f"(seconds), got {value!r}"
                ) from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"time budget must be more than 0 seconds, got {value!r}")
    return seconds


def with_budget(section: str, own: dict, seconds: float) -> dict:
    """A method's own settings ``own`` (section ``section``) with ``time_budget`` set to
    ``seconds``; a ``ConfigError`` when a length (``epochs``, ``steps``) or another budget
    is given too (the budget chooses the length)."""
    given = sorted({"epochs", "steps"} & set(own))
    if own.get("time_budget", seconds) != seconds:
        given.append("time_budget")
    if given:
        raise ConfigError(
            f"a time budget and {section}.{f', {section}.'.join(given)} both given: the "
            "budget chooses the length; give one"
        )
    return {**own, "time_budget": seconds}


def format_seconds(seconds: float) -> str:
    """``m:ss`` (``-m:ss`` past the end), for the progress line."""
    sign = "-" if seconds < 0 else ""
    s = round(abs(seconds))
    return f"{sign}{s // 60}:{s % 60:02d}"


@dataclass
class Clock:
    """A fit's budget: ``seconds`` from ``start`` (``time.monotonic``). ``after_images`` is
    how many images the caller scores once the method's ``fit`` returns (the held-out images
    of the threshold), which the method keeps time for."""

    seconds: float
    start: float
    after_images: int = 0

    @classmethod
    def started(cls, seconds: float, after_images: int = 0) -> Clock:
        return cls(seconds, time.monotonic(), after_images)

    def left(self) -> float:
        """Seconds until the budget ends (negative once it has)."""
        return self.seconds - (time.monotonic() - self.start)


def steps_within(
    seconds_left: float,
    step_seconds: float,
    reserve_seconds: float,
    budget_seconds: float,
    *,
    what: str = "the fit",
    setting: str = "train.steps",
) -> int:
    """How many steps of ``step_seconds`` fit in ``seconds_left`` after ``reserve_seconds`` of
    other work and a margin of ``MARGIN`` of the budget; a ``ConfigError`` when not even one
    does (saying how long one step and the rest take here, and ``setting``, the length to
    set instead)."""
    room = seconds_left - reserve_seconds - MARGIN * budget_seconds
    steps = math.floor(room / step_seconds) if step_seconds > 0 else 0
    if steps < 1:
        raise ConfigError(
            f"a time budget of {budget_seconds:.0f} s is too short for {what} on this machine: "
            f"one training step takes {step_seconds:.2f} s and the rest (the bank, the held-out "
            f"images, the save) about {reserve_seconds:.0f} s; give more time or set the "
            f"length (e.g. --set {setting}=N)"
        )
    return steps


def planned_step_seconds(measured: float, timed: float) -> float:
    """The seconds a step is planned at once ``measured`` steps replace the ``timed`` ones:
    the measured time where it is slower (a budget is a ceiling), else the measured time plus
    ``LENGTHEN_SLACK``, at most the timed one: a fit timed too slow beforehand (on the EPYC
    with AVX-512 BF16, 0.196 s a step timed, 0.138 s run) would otherwise leave a third of its
    budget unused, and one that lengthened to the measured time exactly ended 8 s past ten
    minutes when its later steps ran 6% slower."""
    return measured if measured >= timed else min(timed, measured * LENGTHEN_SLACK)


def time_per_call(fn: Callable[[], object], warm: int, timed: int) -> float:
    """Median seconds of ``fn()`` over ``timed`` calls after ``warm`` untimed ones (the first
    calls build kernels and caches)."""
    for _ in range(warm):
        fn()
    times = []
    for _ in range(timed):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]
