"""GPU check: paper-size training and scoring throughput, the speed options' ratios to fp32
eager, and peak GPU memory, written as JSON. Run through ``benchmarks/gpu_check.sh``.

Training (the paper preset's network: CIFAR ResNet-18 width 64, batch 128, 32x32x3 random
images; the weights and pixels do not change the cost) goes through the real trainer,
``contrasyn.methods.csi.trainer.train_networks``, timed from its ``metrics.jsonl``
(``_throughput.py``):
median over timed windows of ``gen_every`` (5) steps after warm-up windows. For ``full`` a
window is one whole cycle (5 real batches and one adversarial round: G/D/E/D' steps, F's
L_CSI-S pass and its L_JOINT step on twice the images), so images/s includes the GAN's cost;
for ``csi`` the 5-step window only averages away the 1 ms rounding of the logged times. The
warm-up (cuDNN set-up; for compiled variants the compilation, with L_JOINT's recompile for
its doubled batch) is reported separately as ``warmup_seconds``.

Variants, in priority order (the run is time-boxed by ``--budget``, default 420 s, so the
whole check stays under 8 minutes; a variant gets at most its own cap and what is left of
the budget, one that errors or runs out of time is recorded with the reason, and the run
goes on): ``csi`` and ``full`` at fp32 eager (the references), bf16 eager, then scoring at
fp32 and bf16, then bf16 compiled, bf16 channels-last, and bf16 channels-last compiled and
fp32 compiled if time is left. The JSON is rewritten after every variant, so a killed run
keeps what it measured.

Scoring: ``Scorer`` at the paper's score config (eq. 11 score, R = 10 augmented draws x 4
rotations per image, bank search included), bank fit on ``--bank`` images, then test images/s
(median of 3 passes over ``--test`` images).

Memory: peak ``torch.cuda.max_memory_allocated`` (and reserved) per variant, after
``reset_peak_memory_stats``; null on a CPU.

Nothing global is changed: TF32 and cuDNN flags are recorded as found (PyTorch's defaults:
cuDNN convolutions may use TF32, matmuls do not), so fp32 means PyTorch's default fp32.
All variants run in one process; compiled variants share the inductor caches (in memory and
on disk), so a later compiled variant's warm-up is not a cold compile time.

``--quick`` shrinks everything (width 8, batch 8, 16x16 images, windows of 2 steps, 1 warm-up
+ 1 timed window, R = 2, a bank of 32 images, no compile) so that it runs on a CPU in well under
a minute (~20 s of CPU time; its limits are loose, for a loaded machine): a test of the script,
not a measurement.

    bash benchmarks/gpu_check.sh                     # -> benchmarks/results/gpu-check.json
    python benchmarks/gpu_check.py --quick --device cpu --out /tmp/gpu-check.json
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from _throughput import time_scoring, time_training, write_json  # benchmarks/, the script's folder

from contrasyn.checkpoint import versions
from contrasyn.methods.csi_config import ScoreConfig, TrainConfig
from contrasyn.methods.presets import get_preset

REFERENCE = "fp32-eager"


@dataclass(frozen=True)
class Variant:
    kind: str  # "train" or "score"
    method: str  # "csi"/"full" for training; "" for scoring
    precision: str
    channels_last: bool = False
    compile: bool = False

    @property
    def name(self) -> str:
        tail = ("-cl" if self.channels_last else "") + ("-compile" if self.compile else "-eager")
        return f"{self.method or 'score'}-{self.precision}{tail}"

    @property
    def reference(self) -> str:
        return f"{self.method or 'score'}-{REFERENCE}"


def plan(quick: bool) -> tuple[list[Variant], dict[str, str]]:
    """The variants in priority order, and those left out with the reason."""
    train = [Variant("train", m, p) for m in ("csi", "full") for p in ("fp32", "bf16")]
    score = [Variant("score", "", p) for p in ("fp32", "bf16")]
    compiled = [Variant("train", m, "bf16", compile=True) for m in ("csi", "full")]
    cl = [Variant("train", m, "bf16", channels_last=True) for m in ("csi", "full")]
    extra = [
        Variant("train", "csi", "bf16", channels_last=True, compile=True),
        Variant("train", "csi", "fp32", compile=True),
    ]
    if quick:
        skipped = {v.name: "--quick runs no torch.compile" for v in compiled + extra}
        return train + score + cl, skipped
    return train + score + compiled + cl + extra, {}


def configs(quick: bool, device: str) -> tuple[TrainConfig, ScoreConfig, dict]:
    """The paper preset's training and score configs (shrunk with ``quick``) and the run's
    sizes: warm-up/timed windows, steps per ``csi`` window, bank and test images."""
    preset = get_preset("paper")
    train = dataclasses.replace(preset.train, device=device)
    score = preset.score
    sizes = {"warmup_windows": 2, "timed_windows": 6, "csi_window": 5, "bank": 5000}
    sizes.update(test=1000, score_repeats=3)
    if quick:
        train = dataclasses.replace(
            train,
            width=8,
            batch_size=8,
            lr_reference_batch=8,
            image_size=16,
            gen_width=8,
            latent_dim=16,
            gen_every=2,
        )
        score = dataclasses.replace(score, ensemble=2, batch_size=32)
        sizes = {"warmup_windows": 1, "timed_windows": 1, "csi_window": 2, "bank": 32}
        sizes.update(test=16, score_repeats=1)
    return train, score, sizes


class OutOfTime(Exception):
    pass


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``OutOfTime`` in the main thread after ``seconds`` (SIGALRM; a no-op where the
    platform has no interval timer)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def stop(signum, frame):
        raise OutOfTime(f"stopped after {seconds:.0f} s (its share of the time budget)")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def device_info(device: torch.device) -> dict:
    info: dict = {
        "device": str(device),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            name=torch.cuda.get_device_name(device),
            capability=".".join(map(str, torch.cuda.get_device_capability(device))),
            memory_gib=round(props.total_memory / 2**30, 1),
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    else:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def settings() -> dict:
    """Global numerics and tuning flags, as found: this script changes none of them."""
    return {
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "changed_by_this_script": None,
    }


def measure(fn: Callable[[], dict], device: torch.device) -> dict:
    """``fn()`` with the peak GPU memory it allocated (null on other devices)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        result["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        result["peak_gpu_reserved_mib"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
    else:
        result["peak_gpu_memory_mib"] = None
    return result


def main(argv: list[str] | None = None) -> dict:
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/gpu-check.json")
    parser.add_argument("--device", default=default_device, help=f"default: {default_device}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a test, not a check")
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds (default 420; 600 with --quick)"
    )
    parser.add_argument("--only", default="", help="comma-separated variant names to run")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    # --quick is a test of the script: generous limits, as a loaded CPU may be slow.
    budget = args.budget if args.budget is not None else (600.0 if args.quick else 420.0)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    train_cfg, score_cfg, sizes = configs(args.quick, args.device)
    variants, skipped = plan(args.quick)
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = wanted - {v.name for v in variants}
        if unknown:
            parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}")
        variants = [v for v in variants if v.name in wanted]
    # Per-variant caps (seconds) and the least time worth starting a variant with.
    caps = {"eager": 90.0, "compile": 200.0, "score": 90.0}
    least = {"eager": 15.0, "compile": 60.0, "score": 15.0}
    if args.quick:
        caps, least = dict.fromkeys(caps, 300.0), dict.fromkeys(least, 0.0)

    out = Path(args.out)
    results: dict = {
        "script": "benchmarks/gpu_check.py",
        "quick": args.quick,
        "device": device_info(device),
        "versions": versions(),
        "settings": settings(),
        "setup": {
            "network": (
                f"ResNet-18 width {train_cfg.width}, batch {train_cfg.batch_size}, "
                f"{train_cfg.image_size}x{train_cfg.image_size}x{train_cfg.channels} random "
                f"images, 2 views x {train_cfg.num_shifts} rotations"
            ),
            "generative_side": (
                f"gen_width {train_cfg.gen_width}, latent {train_cfg.latent_dim}, one round "
                f"every {train_cfg.gen_every} steps (full)"
            ),
            "timing": (
                "train_networks timed from metrics.jsonl (log_every=1; the trainer's per-step "
                "host read of the losses synchronises); median over timed windows after warm-up "
                "windows; "
                "full: a window is a whole adversarial cycle of gen_every steps; images/s "
                "counts source images"
            ),
            **sizes,
            "score": dataclasses.asdict(score_cfg),
            "budget_seconds": budget,
            "variant_caps_seconds": caps,
        },
        "train": {},
        "score": {},
        "ratios_vs_fp32_eager": {},
        "skipped": dict(skipped),
        "finished": False,
    }

    def save() -> None:
        results["elapsed_seconds"] = round(time.perf_counter() - started, 1)
        write_json(out, results)

    save()
    for v in variants:
        kind = "score" if v.kind == "score" else ("compile" if v.compile else "eager")
        left = budget - (time.perf_counter() - started)
        if left < max(least[kind], 1.0):
            results["skipped"][v.name] = f"out of time budget ({left:.0f} s left of {budget:.0f})"
            print(f"{v.name}: skipped, {left:.0f} s left", flush=True)
            save()
            continue
        cap = min(caps[kind], left)
        print(f"{v.name} (at most {cap:.0f} s) ...", flush=True)
        section = results["score" if v.kind == "score" else "train"]
        cfg = dataclasses.replace(
            train_cfg,
            method=v.method or train_cfg.method,
            precision=v.precision,
            channels_last=v.channels_last,
            compile=v.compile,
        )
        entry: dict = {
            "precision": v.precision,
            "channels_last": v.channels_last,
            "compile": v.compile,
        }
        if v.kind == "train":
            entry["method"] = v.method

            def run(cfg: TrainConfig = cfg) -> dict:
                return time_training(
                    cfg, sizes["warmup_windows"], sizes["timed_windows"], sizes["csi_window"]
                )
        else:

            def run(cfg: TrainConfig = cfg) -> dict:
                return time_scoring(
                    cfg, score_cfg, sizes["bank"], sizes["test"], sizes["score_repeats"]
                )

        t0 = time.perf_counter()
        if v.compile:
            torch._dynamo.reset()  # a fresh compile for this variant's model
        try:
            with time_limit(cap):
                entry.update(measure(run, device))
        except Exception as e:  # recorded; the run goes on with the next variant
            entry["error"] = f"{type(e).__name__}: {e}"
            if device.type == "cuda":
                torch.cuda.empty_cache()
        entry["variant_seconds"] = round(time.perf_counter() - t0, 1)
        if v.compile:
            torch._dynamo.reset()
        key = "test_images_per_second" if v.kind == "score" else "images_per_second"
        ref = entry if v.name == v.reference else section.get(v.reference, {})
        if key in entry and key in ref:
            ratio = round(entry[key] / ref[key], 3)
            entry["ratio_vs_fp32_eager"] = ratio
            results["ratios_vs_fp32_eager"][v.name] = ratio
        section[v.name] = entry
        print(f"  {json.dumps(entry)}", flush=True)
        save()
    results["finished"] = True
    save()
    print(f"wrote {out} ({results['elapsed_seconds']} s)", flush=True)
    return results


if __name__ == "__main__":
    main()
