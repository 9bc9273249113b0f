"""Scoring throughput and peak memory of a fitted Detector, and how scoring grows with the bank.

Part 1, per network size (the ``cpu`` preset, width 16, and the paper's width 64): a
Detector is fitted for 1 epoch on random images (the weights do not change the cost), then
``anomaly_score`` is timed on N test images (median of repeats) in deterministic mode (one
pass of the 4 rotations, the Detector default) and with R = 10 test-time draws (the paper's
ensemble). Each variant runs in its own process so that its peak resident memory
(``ru_maxrss``) is its own.

Part 2: the bank search alone (``max_inner_product``, exact, chunked) for 1,000 queries
against banks of 1e3 to 1e5 training images x 4 rotations, in the shapes of the ``cpu``
preset's ``feat`` score (4 searches of 128-d) and the ``paper`` score (one 512-d search).

    python benchmarks/score_speed.py --out benchmarks/results/score-speed-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

VARIANTS = {
    "cpu-preset": {"preset": "cpu", "n_train": 300, "n_test": 512, "repeats": 3},
    "paper-width64": {"preset": "paper", "n_train": 96, "n_test": 32, "repeats": 1},
}


def one_variant(name: str) -> dict:
    """Fit a Detector and time its scoring; run in a child process (see ``main``)."""
    from contrasyn.api.detector import Detector

    spec = VARIANTS[name]
    torch.manual_seed(0)
    images = torch.rand(spec["n_train"], 3, 32, 32)
    test = torch.rand(spec["n_test"], 3, 32, 32)
    overrides = {"epochs": 1, "batch_size": 32, "lr_reference_batch": 32, "warmup_epochs": 0.5}
    result = {"preset": spec["preset"], "test_images": spec["n_test"]}
    for mode, kwargs in (
        ("deterministic", {}),
        ("ensemble_R10", {"deterministic": False, "score": {"augment": True, "ensemble": 10}}),
    ):
        scoring = kwargs.pop("score", {})
        det = Detector(
            preset=spec["preset"], progress=False, device="cpu",
            settings={"train": overrides, "score": scoring}, **kwargs,
        ).fit(images)  # fmt: skip
        det.anomaly_score(test[:8])  # warm-up
        times = []
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            det.anomaly_score(test)
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        result[mode] = {
            "test_images_per_second": round(spec["n_test"] / t, 2),
            "seconds_median": round(t, 3),
            "repeats": spec["repeats"],
            "bank_images": det.n_train_,
            "width": det.config_.train.width,
        }
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def bank_scaling(sizes: list[int], n_queries: int = 1000, k: int = 4) -> list[dict]:
    from contrasyn.methods.csi.score import max_inner_product

    torch.manual_seed(0)
    rows = []
    for m in sizes:
        row = {"bank_images": m}
        for label, dims, searches in (("feat_4x128d", 128, k), ("paper_1x512d", 128 * k, 1)):
            bank = torch.nn.functional.normalize(torch.randn(m, dims), dim=1)
            queries = torch.randn(n_queries, dims)
            max_inner_product(queries[:10], bank)  # warm-up
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(searches):
                    max_inner_product(queries, bank)
                times.append(time.perf_counter() - t0)
            row[label] = {
                "seconds_per_1000_queries": round(statistics.median(times), 4),
                "bank_mib": round(bank.numel() * 4 * searches / 2**20, 1),
            }
        rows.append(row)
        print("bank", json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/score-speed-cpu.json")
    parser.add_argument("--one", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--bank-sizes", default="1000,10000,100000")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_variant(args.one)))
        return
    from contrasyn.checkpoint import versions

    results = {
        "machine": {
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "versions": versions(),
        "detector": {},
    }
    for name in VARIANTS:
        child = subprocess.run(
            [sys.executable, __file__, "--one", name], check=True, capture_output=True, text=True
        )
        results["detector"][name] = json.loads(child.stdout.strip().splitlines()[-1])
        print(name, json.dumps(results["detector"][name]), flush=True)
    results["bank_search"] = bank_scaling([int(s) for s in args.bank_sizes.split(",")])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
