"""Does a rotation map a class onto itself? For each class, the median distance of its turned
training images to the nearest (unturned) training image, over the median distance of its
images to their nearest other training image: near 1 or below, turned images look like the
class (a 0 or an 8 turned by 180 degrees), and the rotation is no shift for that class.

    python benchmarks/shift_symmetry.py --out benchmarks/results/shift-symmetry.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from contrasyn.data import load_dataset
from contrasyn.methods.csi.score import nearest_distance


def ratios(images: torch.Tensor) -> dict[int, float]:
    """Per rotation k (x 90 degrees): median nearest distance of the turned images to the
    images, over the median leave-one-out nearest distance of the images."""
    flat = images.flatten(1)
    own = nearest_distance(flat, flat, others=True).median().item()
    turned = {
        k: nearest_distance(torch.rot90(images, k, (2, 3)).flatten(1), flat).median().item()
        for k in (1, 2, 3)
    }
    return {k: round(v / own, 3) for k, v in turned.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="fashion-mnist,digits")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    found = {}
    for name in args.datasets.split(","):
        ds = load_dataset(name)
        found[name] = {}
        for c, cname in enumerate(ds.class_names):
            x = ds.train_images[ds.train_labels == c][: args.per_class]
            images = torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2) / 255
            found[name][f"{c} {cname}"] = ratios(images)
            print(name, c, cname, found[name][f"{c} {cname}"], flush=True)
    command = " ".join(["python benchmarks/shift_symmetry.py", *(argv or sys.argv[1:])])
    args.out.write_text(json.dumps({"command": command, "ratios": found}, indent=2) + "\n")


if __name__ == "__main__":
    main()
