"""Training throughput of the speed options (channels-last, bf16 autocast, torch.compile)
against fp32 eager, in one run on this machine, and scoring throughput.

Training goes through the real trainer (``contrasyn.methods.csi.trainer.train_networks``, timed from
its ``metrics.jsonl``; see ``_throughput.py``) at the ``cpu`` preset's network (ResNet-18
width 16, batch 32, 32x32x3 images, 2 views x 4 rotations = 8 network inputs per image), method
``csi`` unless ``--methods`` says otherwise (for ``csi+g``/``full`` a timing window is a whole
adversarial cycle of ``gen_every`` steps, so the GAN's cost is included). Variants, each as
source images/s (median over the timed steps after warm-up) and as a ratio to the reference:

- ``fp32-eager``: precision fp32, contiguous memory, no compile (the reference);
- ``channels_last``; ``bf16`` (autocast, precision ``bf16``); ``bf16+channels_last``;
- ``compile`` (fp32, torch.compile of F's forward), only with ``--compile``: on this project's
  2-core CPU compiling even the small network took ~400 s under load;
- ``fp32-eager-repeat``: the reference again at the end; its ratio (ideally 1.0) shows how
  much the machine's load drifted during the run.

On a CPU without native bf16 (``bf16_is_fast``: no AVX512-BF16/AMX) a bf16 step costs ~10x an
fp32 one, so the bf16 variants time ``--slow-timed`` steps (default 1) instead of ``--timed``;
the JSON says so. Scoring: test images/s through ``Scorer.score_samples`` at the preset's score
config (one deterministic pass of the 4 rotations, ``feat``), fp32 contiguous and
channels-last. ``--paper`` adds the paper's width-64 network (fp32, contiguous and
channels-last, at the cpu batch of 32: its batch of 128 takes minutes a step on a CPU).

Every variant runs in one process, one after the other, so ratios compare within the run; the
JSON is rewritten after every variant, so an interrupted run keeps what it measured.

    OMP_NUM_THREADS=2 python benchmarks/speed.py --out benchmarks/results/speed-cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch
from _throughput import (  # benchmarks/, the script's folder
    time_scoring,
    time_training,
    time_warmup,
    write_json,
)

from contrasyn.checkpoint import versions
from contrasyn.device import bf16_is_fast
from contrasyn.methods.csi_config import TrainConfig
from contrasyn.methods.presets import get_preset
from contrasyn.methods.registry import network_methods

REFERENCE = "fp32-eager"
# name: (precision, channels_last, compile)
OPTIONS = {
    REFERENCE: ("fp32", False, False),
    "channels_last": ("fp32", True, False),
    "bf16": ("bf16", False, False),
    "bf16+channels_last": ("bf16", True, False),
    "compile": ("fp32", False, True),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/speed-cpu.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default="csi", help="comma-separated: csi, csi+g, full")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up windows per variant")
    parser.add_argument("--timed", type=int, default=4, help="timed windows per variant")
    parser.add_argument(
        "--slow-timed",
        type=int,
        default=1,
        help="timed windows of the bf16 variants on a device without native bf16",
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow)")
    parser.add_argument("--paper", action="store_true", help="also the width-64 network")
    parser.add_argument("--no-score", action="store_true", help="skip the scoring part")
    parser.add_argument("--quick", action="store_true", help="1 + 1 windows, small scoring")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in network_methods():
            parser.error(f"unknown method {m!r}; known: {', '.join(network_methods())}")
    if args.quick:
        args.warmup, args.timed, args.slow_timed = 1, 1, 1

    started = time.perf_counter()
    out = Path(args.out)
    preset = get_preset("cpu")
    base = dataclasses.replace(preset.train, device=args.device)
    device = torch.device(args.device)
    bf16_native = bf16_is_fast(device)
    names = [REFERENCE, "channels_last", "bf16", "bf16+channels_last"]
    if args.compile:
        names.append("compile")
    results: dict = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "device": str(device),
            "bf16_native": bf16_native,
            "precision_auto_runs": "bf16" if bf16_native else "fp32",
        },
        "versions": versions(),
        "setup": {
            "network": "cpu preset: ResNet-18 width 16, batch 32, 32x32 random grey images "
            "replicated to 3 channels (as Fashion-MNIST arrives: G makes one channel)",
            "methods": methods,
            "timing": (
                "train_networks timed from metrics.jsonl (log_every=1); median over timed "
                "windows after warm-up; a window is 1 step for csi, gen_every steps (a whole "
                "adversarial cycle) for csi+g/full; images/s counts source images "
                "(x 2 views x 4 rotations network inputs)"
            ),
            "warmup_windows": args.warmup,
            "timed_windows": args.timed,
            "bf16_timed_windows": args.timed if bf16_native else args.slow_timed,
            "compile": (
                "timed (--compile)"
                if args.compile
                else "not run: opt-in with --compile (compiling took ~400 s on this 2-core "
                "CPU under load)"
            ),
        },
        "train": {},
        "ratios_vs_fp32_eager": {},
    }

    def save() -> None:
        results["seconds_total"] = round(time.perf_counter() - started, 1)
        write_json(out, results)

    def run_train(key: str, cfg: TrainConfig, timed: int, reference: str | None) -> None:
        print(f"train {key} ...", flush=True)
        try:
            entry = {
                "width": cfg.width,
                "precision": cfg.precision,
                "channels_last": cfg.channels_last,
                "compile": cfg.compile,
                **time_training(cfg, args.warmup, timed),
            }
        except Exception as e:  # a variant that fails is recorded; the others still run
            entry = {"error": f"{type(e).__name__}: {e}"}
        ref = results["train"].get(reference) if reference else None
        if "images_per_second" in entry and ref and "images_per_second" in ref:
            ratio = round(entry["images_per_second"] / ref["images_per_second"], 3)
            entry["ratio_vs_fp32_eager"] = ratio
            results["ratios_vs_fp32_eager"][key] = ratio
        results["train"][key] = entry
        print(f"  {json.dumps(entry)}", flush=True)
        save()

    for method in methods:
        prefix = "" if methods == ["csi"] else f"{method}/"
        for name in [*names, f"{REFERENCE}-repeat"]:
            precision, channels_last, compile_ = OPTIONS[name.removesuffix("-repeat")]
            cfg = dataclasses.replace(
                base,
                method=method,
                precision=precision,
                channels_last=channels_last,
                compile=compile_,
            )
            slow = precision == "bf16" and not bf16_native
            ref = None if name == REFERENCE else prefix + REFERENCE
            run_train(prefix + name, cfg, args.slow_timed if slow else args.timed, ref)
        if method != "csi" and base.gen_warmup:
            cfg = dataclasses.replace(base, method=method)  # the preset's precision and memory
            print(f"warm-up {method} ...", flush=True)
            entry = time_warmup(cfg, 4 if args.quick else 40)
            results.setdefault("warmup", {})[method] = entry
            print(f"  {json.dumps(entry)}", flush=True)
            save()
    if args.paper:
        paper = get_preset("paper").train
        for name in (REFERENCE, "channels_last"):
            precision, channels_last, _ = OPTIONS[name]
            cfg = dataclasses.replace(
                paper,
                method="csi",
                device=args.device,
                batch_size=base.batch_size,
                precision=precision,
                channels_last=channels_last,
            )
            ref = None if name == REFERENCE else f"paper-width64/{REFERENCE}"
            run_train(f"paper-width64/{name}", cfg, args.slow_timed, ref)

    if not args.no_score:
        results["score"] = {}
        n_bank, n_test, repeats = (64, 32, 1) if args.quick else (256, 128, 3)
        for name in (REFERENCE, "channels_last"):
            precision, channels_last, _ = OPTIONS[name]
            cfg = dataclasses.replace(base, precision=precision, channels_last=channels_last)
            print(f"score {name} ...", flush=True)
            try:
                entry = {
                    "precision": precision,
                    "channels_last": channels_last,
                    **time_scoring(cfg, preset.score, n_bank, n_test, repeats),
                }
            except Exception as e:
                entry = {"error": f"{type(e).__name__}: {e}"}
            results["score"][name] = entry
            print(f"  {json.dumps(entry)}", flush=True)
            save()
    save()
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
