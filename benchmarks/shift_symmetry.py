"""Does a rotation map a class onto itself? ``fit``'s own test (``rotation_ratios`` in
``contrasyn.methods.csi.symmetry``) on every class of the real datasets and on controls:
for each rotation k, the median distance of the turned training images to the nearest
(unturned) training image, over the median distance of the images to their nearest other
training image. Near 1 or below, turned images look like the class, and the rotation is no
shift for it; ``train.shift_symmetry`` (0.9) is the line fit draws.

Controls, each from the same images: ``noise`` (uniform pixels, no orientation at all: the
ratio a structureless class gives), ``sym180`` (each image made 180-degree symmetric,
``max(x, rot180 x)``: the ratio of an exactly symmetric class) and ``sym180+noise<s>``
(the same plus Gaussian pixel noise of standard deviation s, clipped to [0, 1]: a
symmetric part photographed with sensor noise).

At few images the ratio is noisier: ``subsets`` gives, per training-set size, the smallest
ratio of any class (over its three turns) and the range of ``noise``'s and of
``sym180+noise0.2``'s 180-degree ratio, over 5 seeded subsets of every class.

    python benchmarks/shift_symmetry.py --out benchmarks/results/shift-symmetry.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from contrasyn.data import load_dataset
from contrasyn.methods.csi.symmetry import rotation_ratios

NOISE = (0.02, 0.05, 0.1, 0.2)
SIZES = (20, 50, 100)
SUBSETS = 5


def controls(images: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The control image sets made from one class's ``images`` (N, C, S, S) in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    sym = torch.maximum(images, torch.rot90(images, 2, (2, 3)))
    out = {"noise": torch.rand(images.shape, generator=generator), "sym180": sym}
    for s in NOISE:
        noisy = sym + s * torch.randn(sym.shape, generator=generator)
        out[f"sym180+noise{s:g}"] = noisy.clamp(0, 1)
    return out


def subsets(x: np.ndarray, c: int, size: int) -> list[dict[str, float]]:
    """The ratios of ``SUBSETS`` seeded subsets of ``size`` of one class's images ``x``."""
    rng = np.random.default_rng(c)
    out = []
    for _ in range(SUBSETS):
        idx = rng.choice(len(x), size, replace=False)
        images = torch.tensor(x[idx], dtype=torch.float32).permute(0, 3, 1, 2) / 255
        made = controls(images, seed=c)
        out.append({
            "class": min(rotation_ratios(images).values()),
            "noise": rotation_ratios(made["noise"])[2],
            "sym180+noise0.2": rotation_ratios(made["sym180+noise0.2"])[2],
        })  # fmt: skip
    return out


def summary(draws: list[dict[str, float]]) -> dict[str, float | list[float]]:
    """Smallest class ratio and the controls' ranges over a size's draws."""
    return {
        "class_min": round(min(d["class"] for d in draws), 3),
        **{
            kind: [round(min(d[kind] for d in draws), 3), round(max(d[kind] for d in draws), 3)]
            for kind in ("noise", "sym180+noise0.2")
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="fashion-mnist,digits")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    found: dict[str, dict[str, dict[str, dict[int, float]]]] = {}
    small: dict[str, dict[int, dict]] = {}
    for name in args.datasets.split(","):
        ds = load_dataset(name)
        found[name] = {}
        draws: dict[int, list[dict[str, float]]] = {n: [] for n in SIZES}
        for c, cname in enumerate(ds.class_names):
            x = ds.train_images[ds.train_labels == c][: args.per_class]
            images = torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2) / 255
            sets = {"class": images, **controls(images, seed=c)}
            found[name][f"{c} {cname}"] = row = {
                kind: {k: round(r, 3) for k, r in rotation_ratios(imgs).items()}
                for kind, imgs in sets.items()
            }
            print(name, c, cname, json.dumps(row), flush=True)
            for n in SIZES:
                draws[n] += subsets(ds.train_images[ds.train_labels == c], c, n)
        small[name] = {n: summary(d) for n, d in draws.items()}
        print(name, "subsets", json.dumps(small[name]), flush=True)
    command = " ".join(["python benchmarks/shift_symmetry.py", *(argv or sys.argv[1:])])
    args.out.write_text(
        json.dumps({"command": command, "ratios": found, "subsets": small}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
