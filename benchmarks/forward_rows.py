"""How many rows an inference forward should have on a CPU (``device.CPU_FORWARD_ROWS``).

Scoring pushes every test image through the network under several transformations: 4
rotations for the CSI family (256 images a batch: 1,024 rows), 36 for Rot+Trans (64 images:
2,304 rows), 72 for GOAD (16 images: 1,152 rows). Part 1 times one forward of all those rows
against the same rows in chunks of 64, 128, 256 and 512 (random weights and images: the
cost does not depend on them), on the networks those methods score with at the ``cpu``
preset (width 16, 32 x 32): CSI's F in bf16 autocast and in fp32, channels-last as the
preset; Rot+Trans's classifier in fp32. Part 2 times a fitted ``csi`` Detector's
``anomaly_score`` (the whole user path) with the chunking on and with it off
(``CPU_FORWARD_ROWS`` set above any batch). Repeats are interleaved, figures are medians,
and every figure is also a ratio to the unchunked forward of the same run.

    OMP_NUM_THREADS=1 python benchmarks/forward_rows.py \
        --out benchmarks/results/forward-rows-cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import contrasyn.device as device
from contrasyn.device import autocast, bf16_is_fast
from contrasyn.evaluation.bench import _cpu_model
from contrasyn.methods.baselines.rot import TransformClassifier
from contrasyn.methods.csi.nets import CSINet

CHUNKS = (64, 128, 256, 512)


def time_forwards(net: torch.nn.Module, batch: torch.Tensor, precision: str, repeats: int):
    """Median seconds of one forward of ``batch`` and of its 64..512-row chunks."""
    sizes = (len(batch), *CHUNKS)
    times: dict[int, list[float]] = {s: [] for s in sizes}
    with torch.inference_mode(), autocast(precision, torch.device("cpu")):
        for s in sizes:  # warm-up: oneDNN picks its kernels per shape
            net(batch[:s])
        for _ in range(repeats):
            for s in sizes:
                t0 = time.perf_counter()
                for chunk in batch.split(s):
                    net(chunk)
                times[s].append(time.perf_counter() - t0)
    whole = statistics.median(times[len(batch)])
    return {
        str(s): {
            "seconds": statistics.median(v),
            "ratio_to_one_forward": statistics.median(v) / whole,
        }
        for s, v in times.items()
    }


def detector_scoring(repeats: int) -> dict:
    """A fitted ``csi`` Detector (``cpu`` preset, 1 epoch on random images) scoring 1,024 test
    images, with 64-row forwards and with one forward per score batch."""
    from contrasyn.api.detector import Detector

    torch.manual_seed(0)
    fast = {"epochs": 1, "batch_size": 32, "lr_reference_batch": 32, "warmup_epochs": 0.5}
    det = Detector(preset="cpu", progress=False, device="cpu", settings={"train": fast})
    det.fit(torch.rand(256, 3, 32, 32))
    test = torch.rand(1024, 3, 32, 32)
    default = device.CPU_FORWARD_ROWS
    settings = {"64-row forwards": default, "one forward a batch": 1 << 30}
    times: dict[str, list[float]] = {k: [] for k in settings}
    scores = {}
    for name, rows in settings.items():
        device.CPU_FORWARD_ROWS = rows
        scores[name] = det.anomaly_score(test[:64])  # warm-up
    for _ in range(repeats):
        for name, rows in settings.items():
            device.CPU_FORWARD_ROWS = rows
            t0 = time.perf_counter()
            scores[name] = det.anomaly_score(test)
            times[name].append(time.perf_counter() - t0)
    device.CPU_FORWARD_ROWS = default
    a, b = scores.values()
    out = {k: {"test_images_per_s": len(test) / statistics.median(v)} for k, v in times.items()}
    out["speed-up"] = statistics.median(times["one forward a batch"]) / statistics.median(
        times["64-row forwards"]
    )
    out["max_abs_score_difference"] = float(abs(torch.as_tensor(a) - torch.as_tensor(b)).max())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    started = time.perf_counter()
    torch.manual_seed(0)
    last = torch.channels_last
    csi = CSINet(width=16).eval().to(memory_format=last)
    rot = TransformClassifier((4, 3, 3), 16, 1).eval()
    images = torch.rand(1024, 3, 32, 32).contiguous(memory_format=last)
    forward = {}
    # bf16 only where it is native (``precision: auto``); elsewhere it is ~10x slower
    for precision in ("bf16", "fp32") if bf16_is_fast(torch.device("cpu")) else ("fp32",):
        name = f"csi F, 1,024 rows, {precision}, channels-last"
        forward[name] = time_forwards(csi, images, precision, args.repeats)
    name = "rot classifier, 2,304 rows, fp32"
    forward[name] = time_forwards(rot, torch.rand(2304, 1, 32, 32), "fp32", args.repeats)
    result = {
        "cpu": _cpu_model(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "forward": forward,
        "detector_csi_anomaly_score": detector_scoring(args.repeats),
    }
    result["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
