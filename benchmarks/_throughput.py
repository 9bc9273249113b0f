"""Training throughput measured through the real trainer (shared by ``speed.py`` and
``gpu_check.py``).

``time_training`` runs ``contrasyn.methods.csi.trainer.train_networks`` itself, not a
re-implementation of its step: ``cfg.steps = warm-up + timed``, ``log_every = 1``, one
checkpoint at the end. The trainer writes a cumulative ``seconds`` field into
``metrics.jsonl`` after every step, so the duration of a stretch of steps is the difference
of two consecutive logged values.

Timing windows. For ``csi`` a window is one step (or more, to average away the file's 1 ms
rounding of ``seconds`` where a step is a few ms, as on a GPU). For ``csi+g`` and ``full`` an
adversarial round (G/D/E/D' steps, F's L_CSI-S pass and its L_JOINT step on twice the images)
follows every ``gen_every``-th step, so a window is a whole cycle of ``gen_every`` steps: the
GAN's cost is included, and images/s = batch x window steps / window seconds counts real
(source) training images. The reported figure is the median window over the timed windows;
the first windows are warm-up (one-off kernel set-up, cuDNN heuristics, and for
``compile=True`` the compilation of F's forward and backward, including the recompile for
L_JOINT's doubled batch) and are reported separately as ``warmup_seconds``, not in the median.

Synchronisation on CUDA: the trainer reads every step's losses on the host (``.tolist()`` /
``.item()`` after the forward pass, to check them and log them), which waits for everything
queued on the stream before it: the previous step's backward and optimiser step and this
step's forward. So in steady state consecutive logged ``seconds`` differ by one step's work;
a window's boundary is shifted by one step's backward (the last warm-up step's backward lands
in the first timed window, the last timed step's is not timed), which the median over windows
does not mind. No extra ``torch.cuda.synchronize`` is needed (or possible, without editing the
trainer) inside the loop; the total wall time is taken after an explicit one.

Random images are enough: the weights and pixel values do not change the cost of a step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from contrasyn.checkpoint import atomic_write
from contrasyn.device import autocast, bf16_is_fast, resolve_device
from contrasyn.methods.csi.adversarial import GenerativeSide
from contrasyn.methods.csi.score import Scorer
from contrasyn.methods.csi.trained import build_model
from contrasyn.methods.csi.trainer import resolve_gen_channels, train_networks
from contrasyn.methods.csi_config import ScoreConfig, TrainConfig

__all__ = [
    "machine",
    "random_images",
    "read_seconds",
    "summarize_seconds",
    "time_scoring",
    "time_training",
    "time_warmup",
    "window_steps",
    "write_json",
]


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` as checkpoints are written (temporary file, rename), so a
    killed run leaves the previous complete file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def machine(threads: int) -> dict:
    """What the figures were measured on: the CPU's name and whether it runs bf16 natively
    (``precision: auto`` then trains in bf16), the threads, the process's niceness and the load
    average, so that a reader can tell an idle machine's figures from a shared one's."""
    flags, name = set(), platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    native = bf16_is_fast(torch.device("cpu"))
    return {
        "cpu": name,
        "avx512_bf16": "avx512_bf16" in flags,
        "precision_auto_runs": "bf16" if native else "fp32",
        "cores": os.cpu_count(),
        "threads": threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "nice": os.nice(0),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
    }


def window_steps(cfg: TrainConfig, csi_window: int = 1) -> int:
    """Steps per timing window: a whole adversarial cycle (``gen_every``) for ``csi+g``/``full``,
    ``csi_window`` for ``csi``."""
    return cfg.gen_every if cfg.method != "csi" else csi_window


def random_images(cfg: TrainConfig, n: int, seed: int = 0, grey: bool = False) -> torch.Tensor:
    """``n`` uniform images in [0, 1] of the config's shape (on the CPU, as the trainer gets
    them from the data loaders); ``grey``: one channel replicated, as Fashion-MNIST arrives
    (the generator of ``csi+g``/``full`` then makes one channel)."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, 1 if grey else cfg.channels, cfg.image_size, cfg.image_size)
    return torch.rand(shape, generator=g).expand(-1, cfg.channels, -1, -1).contiguous()


def read_seconds(metrics: str | Path) -> list[float]:
    """The cumulative ``seconds`` of every step in a ``metrics.jsonl`` written with
    ``log_every=1`` (checked: the steps must be 0, 1, 2, ... with none missing)."""
    records = [json.loads(line) for line in Path(metrics).read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in records]
    if steps != list(range(len(steps))):
        raise ValueError(f"{metrics}: steps are not 0..{len(steps) - 1} in order (log_every=1?)")
    return [float(r["seconds"]) for r in records]


def summarize_seconds(
    seconds: list[float], window: int, warmup_windows: int, batch_size: int
) -> dict:
    """Throughput from cumulative per-step ``seconds`` (index i: time at the end of step i).

    The steps are cut into windows of ``window`` steps (a trailing partial window is dropped);
    the first ``warmup_windows`` are warm-up, timed by ``warmup_seconds``; the rest are timed
    windows, whose median gives ``images_per_second = batch_size * window / median``.
    """
    if window < 1 or warmup_windows < 0:
        raise ValueError("window must be >= 1 and warmup_windows >= 0")
    n = len(seconds) // window
    if n <= warmup_windows:
        raise ValueError(
            f"{len(seconds)} steps make {n} windows of {window}: none left after "
            f"{warmup_windows} warm-up windows"
        )
    ends = [seconds[(k + 1) * window - 1] for k in range(n)]
    durations = [ends[0]] + [b - a for a, b in zip(ends, ends[1:], strict=False)]
    timed = durations[warmup_windows:]
    median = statistics.median(timed)
    if median <= 0:
        raise ValueError(f"median window of {median} s: steps faster than the 1 ms resolution")
    span = ends[-1] - (ends[warmup_windows - 1] if warmup_windows else 0.0)
    return {
        "window_steps": window,
        "warmup_steps": warmup_windows * window,
        "timed_steps": len(timed) * window,
        "warmup_seconds": round(ends[warmup_windows - 1], 3) if warmup_windows else 0.0,
        "window_seconds_median": round(median, 4),
        "window_seconds_min": round(min(timed), 4),
        "window_seconds_max": round(max(timed), 4),
        "step_seconds_median": round(median / window, 4),
        "images_per_second": round(batch_size * window / median, 2),
        "images_per_second_mean": round(batch_size * window * len(timed) / span, 2),
    }


def time_training(
    cfg: TrainConfig,
    warmup_windows: int,
    timed_windows: int,
    csi_window: int = 1,
    images: torch.Tensor | None = None,
) -> dict:
    """Train ``warmup_windows + timed_windows`` windows (see ``window_steps``) of ``cfg`` with
    ``train_networks`` on random images (one epoch's worth unless ``images`` is given) in a
    temporary folder, and return ``summarize_seconds``'s figures plus the whole call's wall
    time (model build, data fingerprint and the final checkpoint included)."""
    window = window_steps(cfg, csi_window)
    steps = (warmup_windows + timed_windows) * window
    # per-step cost only: the generative side's warm-up before step 0 is timed by time_warmup
    cfg = dataclasses.replace(cfg, steps=steps, log_every=1, checkpoint_every=10**9, gen_warmup=0)
    if images is None:
        images = random_images(cfg, cfg.batch_size * steps, grey=True)
    device = resolve_device(cfg.device)
    with tempfile.TemporaryDirectory(prefix="contrasyn-speed-") as tmp:
        t0 = time.perf_counter()
        train_networks(images, cfg, out_dir=tmp, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
        seconds = read_seconds(Path(tmp) / "metrics.jsonl")
    batch = min(cfg.batch_size, len(images))
    result = summarize_seconds(seconds, window, warmup_windows, batch)
    return {"method": cfg.method, "batch_size": batch, **result, "call_seconds": round(wall, 2)}


def time_warmup(cfg: TrainConfig, rounds: int, grey: bool = True, first: int = 5) -> dict:
    """Seconds per round of the adversarial autoencoder's warm-up (``warmup_round``, what
    ``train.gen_warmup`` rounds cost before step 0), median over ``rounds`` after ``first``
    untimed ones, on random (grey by default) batches."""
    device = resolve_device(cfg.device)
    images = random_images(cfg, cfg.batch_size * 4, grey=grey)
    cfg = resolve_gen_channels(cfg, images)
    torch.manual_seed(cfg.seed)
    side = GenerativeSide(cfg).to(device).train()
    times = []
    for r in range(first + rounds):
        x = images[(r % 4) * cfg.batch_size : (r % 4 + 1) * cfg.batch_size].to(device)
        t0 = time.perf_counter()
        side.warmup_round(x, lambda: autocast(cfg.precision, device))
        _sync(device)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times[first:])
    return {
        "method": cfg.method,
        "gen_channels": cfg.gen_channels,
        "rounds": rounds,
        "round_seconds_median": round(median, 4),
        "preset_warmup_seconds": round(median * cfg.gen_warmup, 1),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_scoring(
    cfg: TrainConfig, score_cfg: ScoreConfig, n_bank: int, n_test: int, repeats: int
) -> dict:
    """``Scorer.fit`` on ``n_bank`` random images and ``Scorer.score_samples`` on ``n_test``
    (median of ``repeats``) with an untrained F of ``cfg`` (its precision and memory format;
    the weights do not change the cost), after a warm-up pass of one scoring batch of each.
    Every pass is R = ``score_cfg.ensemble`` draws x K rotations per image, the bank search
    included."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = build_model(cfg).to(device).to(memory_format=memory).eval()
    bank = random_images(cfg, n_bank, seed=1)
    test = random_images(cfg, n_test, seed=2)
    scorer = Scorer(cfg, score_cfg)
    t0 = time.perf_counter()
    scorer.fit(model, bank[: score_cfg.batch_size])  # warm-up: kernel set-up at this shape
    scorer.score_samples(model, test[: score_cfg.batch_size])
    _sync(device)
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    scorer.fit(model, bank)
    _sync(device)
    fit = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        scorer.score_samples(model, test)  # returns CPU tensors: synchronised
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {
        "score": score_cfg.score,
        "ensemble_draws": score_cfg.ensemble,
        "augment": score_cfg.augment,
        "bank_images": n_bank,
        "test_images": n_test,
        "repeats": repeats,
        "warmup_seconds": round(warmup, 2),
        "bank_fit_seconds": round(fit, 2),
        "bank_images_per_second": round(n_bank / fit, 2),
        "test_seconds_median": round(t, 3),
        "test_images_per_second": round(n_test / t, 2),
    }
