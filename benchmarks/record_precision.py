"""Give the rows of committed benchmark folders what they were computed with, from the evidence.

Rows made before ``precision``, ``device``, ``machine`` and ``torch`` were recorded (in
``contrasyn.evaluation.bench.computed_on``) get them here, without recomputing anything:

- the invocation that computed a row is the earliest entry of the folder's
  ``environment.json`` whose command covers the row's method, class and seed (a later one
  skips a finished cell); a folder without ``environment.json`` names its platform with
  ``--assume-platform FOLDER=PLATFORM``;
- its machine is the entry's ``cpu`` (model and bf16 flags); entries from before that field
  are matched by their ``platform`` to a speed measurement (``--measured FILE``, whose
  ``machine`` says whether bf16 was native there);
- the effective precision follows from the run's ``config.json`` (``train.precision``) as
  ``contrasyn.device.effective_precision`` decides it: ``bf16``, or ``auto`` on a machine with
  native bf16, is bf16; a run without a precision setting (a baseline) computed in fp32.

The equal-time folder lost one entry (classes 5-9, seeds 1 and 2: two processes started in
the same second before ``shared_writes`` existed); ``--uncovered-like`` names the entry of
the same session and machine for the rows no entry covers.

    python benchmarks/record_precision.py \\
        --measured benchmarks/results/speed-cpu.json \\
        --measured benchmarks/results/speed-cpu-bf16.json \\
        --assume-platform fashion-mnist-cpu=Linux-6.18.44-fc-v657-x86_64-with-glibc2.36 \\
        --uncovered-like fashion-mnist-equal-time-cpu=2 \\
        benchmarks/results/fashion-mnist-*-cpu benchmarks/results/fashion-mnist-cpu

Rows that already record a precision are left as they are; the tables are rewritten.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from contrasyn.evaluation.results import read_rows, run_path, write_rows

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # oneDNN runs bf16 natively with either


def _covers(command: str, row: dict) -> bool:
    """Whether a ``contrasyn benchmark`` command line runs the row's cell."""
    words = shlex.split(command)

    def value(flag: str) -> str:
        return words[words.index(flag) + 1]

    classes = value("--classes")
    return (
        row["method"] in value("--methods").split(",")
        and (classes == "all" or str(row["normal_class"]) in classes.split(","))
        and str(row["seed"]) in value("--seeds").split(",")
    )


def _machine(entry: dict, measured: dict[str, dict]) -> tuple[str, bool]:
    """The machine's description and whether it runs bf16 natively."""
    if entry.get("cpu"):
        return entry["cpu"], any(f in entry["cpu"] for f in NATIVE_BF16_FLAGS)
    m = measured.get(entry["platform"])
    if m is None:
        raise SystemExit(
            f"no --measured file describes platform {entry['platform']!r} (its CPU was not "
            "recorded)"
        )
    native = bool(m["bf16_native"])
    text = f"{m['cpu_capability']} CPU, {'native' if native else 'no native'} bf16 (model not "
    return text + f"recorded; platform {entry['platform']})", native


def _precision_setting(run_dir: Path) -> str | None:
    config = run_dir / "config.json"
    return json.loads(config.read_text())["train"]["precision"] if config.exists() else None


def record(
    folder: Path, measured: dict[str, dict], platform: str | None, like: int | None = None
) -> int:
    """Fill in the rows of ``folder``; returns how many changed. ``like``: the index of the
    ``environment.json`` entry whose machine computed the rows no entry covers (an entry lost
    to the race two processes starting together had before ``shared_writes``)."""
    env_path = folder / "environment.json"
    if env_path.exists():
        entries = json.loads(env_path.read_text())
    elif platform is not None:  # one session: torch's version from any of its checkpoints
        last = json.loads(next((folder / "runs").rglob("last.json")).read_text())
        versions = {"torch": last["versions"]["torch"]}
        entries = [{"command": None, "platform": platform, "device": "cpu", "versions": versions}]
    else:
        raise SystemExit(f"{folder}: no environment.json; name its platform (--assume-platform)")
    rows = read_rows(folder)
    changed = 0
    for row in rows:
        if "precision" in row:
            continue
        covering = (e for e in entries if e["command"] is None or _covers(e["command"], row))
        entry = next(covering, None) if like is None else next(covering, entries[like])
        if entry is None:
            raise SystemExit(
                f"{folder}: no environment.json entry runs {row['method']} class "
                f"{row['normal_class']} seed {row['seed']} (name one alike: --uncovered-like)"
            )
        machine, native = _machine(entry, measured)
        run_dir = run_path(folder, row)
        setting = _precision_setting(run_dir)
        bf16 = setting == "bf16" or (setting == "auto" and native)
        row.update(
            precision="bf16" if bf16 else "fp32",
            device=entry["device"],
            machine=machine,
            torch=entry["versions"]["torch"],
        )
        changed += 1
    write_rows(folder, rows)
    return changed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--measured", action="append", default=[], type=Path)
    parser.add_argument("--assume-platform", action="append", default=[], metavar="NAME=PLAT")
    parser.add_argument("--uncovered-like", action="append", default=[], metavar="NAME=INDEX")
    args = parser.parse_args(argv)
    measured = {}
    for path in args.measured:
        machine = json.loads(path.read_text())["machine"]
        measured[machine["platform"]] = machine
    platforms = dict(a.split("=", 1) for a in args.assume_platform)
    like = {name: int(i) for name, i in (a.split("=", 1) for a in args.uncovered_like)}
    for folder in args.folders:
        n = record(folder, measured, platforms.get(folder.name), like.get(folder.name))
        print(f"{folder}: {n} row(s) given their precision, device, machine and torch")


if __name__ == "__main__":
    main()
