"""Training and scoring throughput of the CSI network on this machine.

For each network size (the ``cpu`` preset's width and the paper's width 64) this measures:
- training: source images per second through one full step (2 views x K rotations,
  augmentation on the device, forward, L_CSI, backward, LARS step), median over steps
  after warm-up steps (the first passes pay one-off kernel set-up);
- scoring: test images per second through ``Scorer.score_samples`` (R draws x K rotations
  per image, bank search included) against a training bank, median over repeats.
Every variant in one process, so the numbers compare within the run.

    python benchmarks/speed.py --out benchmarks/results/speed-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from contrasyn.augment import HorizontalFlip, shifted_views
from contrasyn.checkpoint import versions
from contrasyn.config import ScoreConfig, TrainConfig
from contrasyn.losses import csi_loss
from contrasyn.presets import get_preset
from contrasyn.score import Scorer
from contrasyn.trainer import autocast, build_augment, build_model, build_optimizer


def train_speed(cfg: TrainConfig, warmup: int, steps: int) -> dict:
    torch.manual_seed(0)
    device = torch.device("cpu")
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = build_model(cfg).to(memory_format=memory).train()
    optimizer = build_optimizer(model, cfg)
    augment, flip = build_augment(cfg), HorizontalFlip()
    x = torch.rand(cfg.batch_size, cfg.channels, cfg.image_size, cfg.image_size)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        views, labels = shifted_views(x, augment, cfg.num_shifts, flip)
        with autocast(cfg.precision, device):
            out = model(views.contiguous(memory_format=memory))
        loss = csi_loss(out.z, out.shift, labels, cfg.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {
        "step_seconds_median": round(step, 4),
        "images_per_second": round(cfg.batch_size / step, 2),
        "instances_per_second": round(cfg.batch_size * 2 * cfg.num_shifts / step, 1),
        "steps_timed": steps,
    }


def score_speed(
    cfg: TrainConfig, score_cfg: ScoreConfig, n_bank: int, n_test: int, repeats: int
) -> dict:
    torch.manual_seed(0)
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = build_model(cfg).to(memory_format=memory).eval()
    bank = torch.rand(n_bank, cfg.channels, cfg.image_size, cfg.image_size)
    test = torch.rand(n_test, cfg.channels, cfg.image_size, cfg.image_size)
    scorer = Scorer(cfg, score_cfg)
    t0 = time.perf_counter()
    scorer.fit(model, bank)
    bank_seconds = time.perf_counter() - t0
    scorer.score_samples(model, test[:8])  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        scorer.score_samples(model, test)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {
        "test_images_per_second": round(n_test / t, 2),
        "ensemble_draws": score_cfg.ensemble,
        "bank_images": n_bank,
        "bank_build_seconds": round(bank_seconds, 2),
        "test_images": n_test,
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/speed-cpu.json")
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    args = parser.parse_args()
    cpu = get_preset("cpu")
    paper = get_preset("paper")
    # On a CPU the paper's batch of 128 takes minutes a step; images/s is per image, so the
    # paper-size network is timed at the cpu preset's batch (stated in the output).
    variants = {
        "cpu-preset": (cpu.train, cpu.score),
        "cpu-preset-fp32-contiguous": (
            TrainConfig(**{**cpu.train.__dict__, "channels_last": False, "precision": "fp32"}),
            cpu.score,
        ),
        "paper-width64": (
            TrainConfig(
                **{
                    **paper.train.__dict__,
                    "batch_size": cpu.train.batch_size,
                    "channels_last": True,
                }
            ),
            paper.score,
        ),
    }
    steps = (2, 3) if args.quick else (3, 10)
    results = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "versions": versions(),
        "variants": {},
    }
    for name, (tcfg, scfg) in variants.items():
        wide = tcfg.width >= 64
        warm, timed = (2, 3) if wide else steps
        entry = {
            "width": tcfg.width,
            "batch_size": tcfg.batch_size,
            "precision": tcfg.precision,
            "channels_last": tcfg.channels_last,
            "train": train_speed(tcfg, warm, timed),
            "score": score_speed(
                tcfg,
                scfg,
                n_bank=256 if wide else 1000,
                n_test=32 if wide else 256,
                repeats=1 if wide else 3,
            ),
        }
        results["variants"][name] = entry
        print(name, json.dumps(entry), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
