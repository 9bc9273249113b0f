"""A training run's log: ``metrics.jsonl`` and the one-line form of its records."""

from __future__ import annotations

import json
from pathlib import Path

from contrasyn.textfiles import write_text


def log_line(method: str, total: int, entry: dict) -> str:
    """One ``metrics.jsonl`` record as a line for a terminal or a log file."""
    losses = " ".join(f"{k} {v:.4g}" for k, v in entry.items() if k.startswith(("loss", "rec_")))
    if "retimed_steps" in entry:
        return (
            f"{method} step {entry['step'] + 1}: {entry['step_seconds']:.3g} s a step (timed "
            f"beforehand {entry['timed_step_seconds']:.3g} s): "
            f"{entry['retimed_steps']} steps in all"
        )
    if "warmup_round" in entry:
        return f"{method} warm-up round {entry['warmup_round'] + 1} {losses}"
    return (
        f"{method} step {entry['step'] + 1}/{total} epoch {entry['epoch']:.2f} "
        f"lr {entry['lr']:.3g} {losses} ({entry['seconds']:.0f} s)"
    )


class MetricsLog:
    """``metrics.jsonl``: one JSON record per logged step (and per logged warm-up round, which
    has no ``step`` and comes before step 0). On resume, records at or past the resumed step
    (logged after the last checkpoint by the interrupted run) are dropped, and a run that
    starts over (step 0) starts an empty log, so the file reads as one uninterrupted run."""

    def __init__(self, path: Path, resume_step: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and resume_step and json.loads(line).get("step", -1) < resume_step
            ]
            write_text(path, "".join(line + "\n" for line in kept))
        self._file = path.open("a")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
