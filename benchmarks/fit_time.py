"""How long ``contrasyn fit`` takes: the user's command, timed end to end, on one Fashion-MNIST
class written out as a folder of PNG files.

The class's 6,000 train images go into a temporary folder (not timed); then ``contrasyn fit
--data FOLDER --out MODEL --preset PRESET --method M`` runs as a user would run it (a
subprocess: start-up, image decoding, the 10% held-out split, training on the preset's
subsample, the bank, the threshold and the save), once per method. Wall seconds, process CPU
seconds and the machine's state (``_throughput.machine``: CPU, native bf16, threads, load)
and, for a fit by the clock, its budget, the steps it chose and its check of them against
the real steps at the end of the LR warm-up (``retimed``; ``step_seconds_after``: the real
steps after it) go into ``--out``. Run it on an idle machine: ``load_average_before`` says
whether it was.

    python benchmarks/fit_time.py --methods csi,full --out benchmarks/results/fit-time-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _throughput import machine, write_json  # benchmarks/, the script's folder
from PIL import Image

from contrasyn.data import load_dataset


def write_class(folder: Path, dataset: str, normal: int) -> int:
    """The train images of class ``normal`` as PNG files in ``folder``; returns how many."""
    ds = load_dataset(dataset)
    images = ds.train_images[ds.train_labels == normal]
    for i, image in enumerate(images):
        Image.fromarray(np.asarray(image).squeeze()).save(folder / f"{i:05d}.png")
    return len(images)


def timed_fit(data: Path, out: Path, preset: str, method: str) -> dict:
    command = [
        sys.executable, "-m", "contrasyn", "fit", "--data", str(data), "--out", str(out),
        "--preset", preset, "--method", method, "--quiet",
    ]  # fmt: skip
    load_before = [round(x, 2) for x in os.getloadavg()]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    saved = json.loads((out / "model.json").read_text())["config"]
    train = saved.get("train", {})  # the CSI family's length; a baseline's is its own section
    return {
        "method": method,
        "time_budget_seconds": train.get("time_budget"),
        "steps": train.get("steps"),
        "command": " ".join(["contrasyn", *command[3:]]),
        "wall_seconds": round(wall, 1),
        "wall_minutes": round(wall / 60, 2),
        "cpu_seconds": round(cpu, 1),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        **retimed(out / "checkpoints" / "metrics.jsonl"),
    }


def retimed(metrics: Path) -> dict:
    """The trainer's check of its length at the end of the LR warm-up (``timed_steps``
    chosen beforehand, ``retimed_steps`` after it, the real ``step_seconds`` and the
    ``timed_step_seconds`` of the timing beforehand), and
    the mean seconds of the real steps after it, from the run's ``metrics.jsonl``; empty for
    a method without that log."""
    if not metrics.is_file():
        return {}
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    check = next((r for r in records if "retimed_steps" in r), None)
    steps = [r for r in records if "loss" in r and "step" in r]
    found: dict = {}
    if check is not None:
        keys = ("step", "timed_steps", "retimed_steps", "step_seconds", "timed_step_seconds")
        found["retimed"] = {k: check.get(k) for k in keys}
        after = [r for r in steps if r["step"] > check["step"]]
        if len(after) >= 2:
            span = after[-1]["step"] - after[0]["step"]
            found["step_seconds_after"] = round(
                (after[-1]["seconds"] - after[0]["seconds"]) / span, 4
            )
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--normal", type=int, default=0)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--methods", default="csi,full")
    parser.add_argument("--out", default="benchmarks/results/fit-time-cpu.json")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "normal"
        data.mkdir()
        n = write_class(data, args.dataset, args.normal)
        runs = []
        for method in args.methods.split(","):
            runs.append(timed_fit(data, Path(tmp) / f"model-{method}", args.preset, method))
            print(runs[-1], flush=True)
    write_json(
        Path(args.out),
        {
            "command": " ".join(["python benchmarks/fit_time.py", *argv]),
            "dataset": args.dataset,
            "normal_class": args.normal,
            "images": n,
            "preset": args.preset,
            "machine": machine(threads),
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
