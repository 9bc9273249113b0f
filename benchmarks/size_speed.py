"""Training and scoring speed per image size (32, 64, 128 pixels) and stem of F.

Each configuration is the ``cpu`` preset's network and training step (width 16, batch 32 x 4
rotations x 2 views, LARS, channels-last) at another ``image_size`` and ``stem``: ``cifar``
(3 x 3 stride 1, no max-pool: the first stage runs at the full input size) or ``imagenet``
(7 x 7 stride 2 + max-pool: the first stage runs at a quarter of the side, so 128 pixels
cost about what 32 cost with the CIFAR stem). Training is timed through the real trainer
(``contrasyn.methods.csi.trainer.train_networks``; ``_throughput.py``). Scoring is
``Scorer.fit`` on a bank and ``Scorer.score_samples`` on test images (one deterministic pass
of the 4 rotations, the ``feat`` score: the Detector's default) with an untrained F of the
same shape. Random images: the pixel values do not change the cost.

Wall-clock figures depend on what else runs on the machine; CPU time (process CPU seconds,
all threads) much less, so the cost ratios between sizes are computed from it. A training
step's CPU time comes from three runs of the trainer on the same images: one that pays the
one-off costs of these shapes, then ``--warmup`` + 1 steps, then ``--warmup`` + 1 +
``--timed`` steps; the difference of the last two, over ``--timed``, cancels every fixed cost
of a run (building the model, fingerprinting the images, the checkpoint). The wall-clock
figures (the median step of the last run) are kept in the file for an idle machine, where
wall time is about CPU time / threads.

``fit_cpu_minutes_cpu_preset`` is the CPU time of a ``contrasyn fit`` at the ``cpu`` preset's
length (12 epochs of 1,000 images: 372 steps), training only: on an idle machine, about the
wall-clock minutes with one thread.

    .venv/bin/python benchmarks/size_speed.py --out benchmarks/results/size-speed-cpu.json

(the committed run's own options, niceness and threads are in its JSON file).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
from _throughput import (  # benchmarks/, the script's folder
    machine,
    random_images,
    time_scoring,
    time_training,
    window_steps,
    write_json,
)

from contrasyn.methods.csi.score import Scorer
from contrasyn.methods.csi.trained import build_model
from contrasyn.methods.presets import get_preset
from contrasyn.version import __version__

CONFIGS = [(32, "cifar"), (64, "cifar"), (64, "imagenet"), (128, "cifar"), (128, "imagenet")]
CPU_PRESET_STEPS = 372  # 12 epochs x (1,000 // 32) steps


def cpu_scoring(cfg, score_cfg, n_test: int) -> float:
    """CPU seconds (all threads) of ``Scorer.score_samples`` on ``n_test`` random images with
    an untrained F of ``cfg`` against a small bank, after one warm-up batch."""
    torch.manual_seed(cfg.seed)
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = build_model(cfg).to(memory_format=memory).eval()
    scorer = Scorer(cfg, score_cfg).fit(model, random_images(cfg, 16, seed=1))
    test = random_images(cfg, n_test, seed=2)
    scorer.score_samples(model, test[:8])
    c0 = time.process_time()
    scorer.score_samples(model, test)
    return time.process_time() - c0


def cpu_training(cfg, warmup: int, timed: int) -> tuple[float, dict]:
    """CPU seconds (all threads) of one training step of ``cfg`` (module docstring), and the
    wall-clock figures of the longest run."""
    window = window_steps(cfg)
    images = random_images(cfg, cfg.batch_size * window * (warmup + 1 + timed), grey=True)
    time_training(cfg, 0, 1, images=images)  # the one-off costs of these shapes
    c0 = time.process_time()
    time_training(cfg, warmup, 1, images=images)
    c1 = time.process_time()
    train = time_training(cfg, warmup, 1 + timed, images=images)
    c2 = time.process_time()
    return ((c2 - c1) - (c1 - c0)) / (timed * window), train


def first_stage_side(size: int, stem: str) -> int:
    return size if stem == "cifar" else size // 4


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default=",".join(f"{s}:{t}" for s, t in CONFIGS))
    p.add_argument("--method", default="csi", choices=["csi", "csi+g", "full"])
    p.add_argument("--warmup", type=int, default=1, help="untimed training windows per run")
    p.add_argument("--timed", type=int, default=2, help="extra windows of the longest run")
    p.add_argument("--bank", type=int, default=128, help="bank images for the scoring timing")
    p.add_argument("--test", type=int, default=128, help="test images for the scoring timing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/size-speed-cpu.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = []
    for item in args.configs.split(","):
        size, _, stem = item.partition(":")
        configs.append((int(size), stem))
    preset = get_preset("cpu")
    score_cfg = dataclasses.replace(preset.score, augment=False, ensemble=1, score="feat")
    rows = []
    machine_before = machine(args.threads)
    t_start = time.perf_counter()
    for size, stem in configs:
        cfg = dataclasses.replace(
            preset.train, method=args.method, image_size=size, stem=stem, device="cpu"
        )
        params = sum(p.numel() for p in build_model(cfg).parameters())
        cpu_step, train = cpu_training(cfg, args.warmup, args.timed)
        score = time_scoring(cfg, score_cfg, args.bank, args.test, repeats=1)
        score_cpu = cpu_scoring(cfg, score_cfg, args.test)
        row = {
            "image_size": size,
            "stem": stem,
            "first_stage_side": first_stage_side(size, stem),
            "parameters": params,
            "train_step_seconds": train["step_seconds_median"],
            "train_images_per_second": train["images_per_second"],
            "fit_minutes_cpu_preset": round(
                train["step_seconds_median"] * CPU_PRESET_STEPS / 60, 1
            ),
            "score_images_per_second": score["test_images_per_second"],
            "bank_images_per_second": score["bank_images_per_second"],
            "train_cpu_seconds_per_step": round(cpu_step, 3),
            "train_images_per_cpu_second": round(cfg.batch_size / cpu_step, 2),
            "score_images_per_cpu_second": round(args.test / score_cpu, 2),
            "fit_cpu_minutes_cpu_preset": round(cpu_step * CPU_PRESET_STEPS / 60, 1),
            "train": train,
            "score": score,
        }
        rows.append(row)
        print(
            f"{size:>4} {stem:<8} train {row['train_cpu_seconds_per_step']} CPU s/step "
            f"(cpu-preset fit {row['fit_cpu_minutes_cpu_preset']} CPU min); score "
            f"{row['score_images_per_cpu_second']} images per CPU s",
            flush=True,
        )
    base = next((r for r in rows if (r["image_size"], r["stem"]) == (32, "cifar")), None)
    if base is not None:  # cost ratios from CPU time, which other processes do not inflate
        for r in rows:
            r["train_cost_vs_32_cifar"] = round(
                base["train_images_per_cpu_second"] / r["train_images_per_cpu_second"], 2
            )
            r["score_cost_vs_32_cifar"] = round(
                base["score_images_per_cpu_second"] / r["score_images_per_cpu_second"], 2
            )
    write_json(
        Path(args.out),
        {
            "what": "training and scoring speed per image size and stem, cpu preset network",
            "command": "python benchmarks/size_speed.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "method": args.method,
            "rows": rows,
            "machine": machine_before,
            "load_average_after": machine(args.threads)["load_average"],
            "versions": {"contrasyn": __version__, "torch": torch.__version__},
            "seconds": round(time.perf_counter() - t_start, 1),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
