"""What a pretrained backbone costs on this CPU: DN2's feature extraction at 32, 64, 128 and
224 px, and a training step of the CSI family on the pretrained trunk.

Part 1, ``dn2``: ``PretrainedKNN.features`` (the method's own code: resize, grey to RGB,
normalisation, EfficientNet-Lite0, channels-last) on 256 random 28 x 28 grey images, in bf16
where the CPU has native bf16 and in fp32; images/s is the median of 3 timed calls after one
warm-up. A fit extracts the training images' features once; scoring extracts the test
images' and searches the bank (not included: milliseconds at these bank sizes).

Part 2, ``csi`` on ``train.backbone=efficientnet_lite0`` at 64 px through the real trainer
(``_throughput.time_training``): the trunk frozen (``backbone_lr=0``), its first 7 of 9
parts frozen (``backbone_freeze=7``), and all of it trained; batch 32 x 4 rotations x 2
views. Random weights: the cost does not depend on them.

    python benchmarks/pretrained_speed.py --out benchmarks/results/pretrained-speed-cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _throughput import machine, time_training, write_json

from contrasyn.methods.csi_config import TrainConfig
from contrasyn.methods.pretrained import DN2Config, PretrainedKNN

RESOLUTIONS = (32, 64, 128, 224)
TRUNKS = {
    "frozen": {"backbone_lr": 0.0},
    "first-7-parts-frozen": {"backbone_freeze": 7},
    "all-trained": {},
}


def feature_speed(resolution: int, precision: str, n: int = 256) -> float:
    """Images/s of DN2's feature extraction at ``resolution``."""
    config = DN2Config(weights="random", resolution=resolution, precision=precision)
    method = PretrainedKNN(config)
    method.backbone_ = method._backbone("random")
    images = torch.rand(n, 1, 28, 28)
    method.features(images[:32])
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        method.features(images)
        times.append(time.perf_counter() - t0)
    return round(n / statistics.median(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    features = {
        f"{res}px": {p: feature_speed(res, p) for p in ("bf16", "fp32")} for res in RESOLUTIONS
    }
    steps = {}
    for name, fields in TRUNKS.items():
        cfg = TrainConfig(
            method="csi", backbone="efficientnet_lite0", backbone_weights="random",
            backbone_resolution=64, image_size=28, channels=1, batch_size=32,
            lr_reference_batch=32, precision="auto", channels_last=True, **fields,
        )  # fmt: skip
        steps[name] = time_training(cfg, warmup_windows=2, timed_windows=5)
    out = {
        "machine": machine(args.threads),
        "dn2_feature_images_per_second": features,
        "csi_pretrained_64px_steps": steps,
    }
    write_json(args.out, out)
    print(out)


if __name__ == "__main__":
    main()
