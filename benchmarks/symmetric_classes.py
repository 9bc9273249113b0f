"""Classes that a rotation leaves unchanged: all four shifts against the shifts fit keeps.

Every image of a dataset (train and test, every class) is made symmetric under the
180-degree turn, ``max(x, rot180(x))`` pixel by pixel, so each class is one that the turn
maps onto itself image by image (a symmetric part seen from above). ``csi`` is then
benchmarked twice on the same cells through ``run_benchmark``: with ``shift_symmetry=null``
(the four rotations, as CSI always trains) and with the preset's ``shift_symmetry`` (fit
finds the symmetry on the training images and keeps the rotations 0 and 90 degrees). The
two folders pair by cell; ``compare.py`` on their validation columns says which wins.

    python benchmarks/symmetric_classes.py --dataset fashion-mnist --classes all --seeds 0 \
        --time 90s --max-test 1000 --out benchmarks/results/symmetric-classes-cpu
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from contrasyn.budget import parse_duration
from contrasyn.data import load_dataset
from contrasyn.data.base import ImageDataset
from contrasyn.evaluation.bench import run_benchmark

ARMS = {"all-shifts": {"shift_symmetry": None}, "fitted": {}}


def symmetric(ds: ImageDataset) -> ImageDataset:
    """``ds`` with every image replaced by its pixel-wise max with its 180-degree turn."""

    def turn(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.maximum(x, np.rot90(x, 2, axes=(1, 2))))

    return ImageDataset(
        name=f"{ds.name}-sym180",
        train_images=turn(ds.train_images),
        train_labels=ds.train_labels,
        test_images=turn(ds.test_images),
        test_labels=ds.test_labels,
        class_names=ds.class_names,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--classes", default="all")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--time", default="90s", help="each fit's budget (csi by the clock)")
    parser.add_argument("--max-test", type=int, default=None)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = symmetric(load_dataset(args.dataset))
    classes = (
        list(range(ds.num_classes))
        if args.classes == "all"
        else [int(c) for c in args.classes.split(",")]
    )
    seeds = [int(s) for s in args.seeds.split(",")]
    command = " ".join(["python benchmarks/symmetric_classes.py", *(argv or sys.argv[1:])])
    for arm in args.arms.split(","):
        train = {"time_budget": parse_duration(args.time), **ARMS[arm]}
        run_benchmark(
            ds, classes, ["csi"], seeds, "cpu", {"train": train}, args.out / arm,
            command=command, report=False, max_test=args.max_test,
        )  # fmt: skip


if __name__ == "__main__":
    main()
