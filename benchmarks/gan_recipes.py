"""Which recipe makes the generative side learn at the ``cpu`` budget: the adversarial
autoencoder (``full``) or GAN (``csi+g``) trained alone, through the real
``GenerativeSide.warmup_round``, on one Fashion-MNIST class's ``cpu`` training subsample.

Every ``--every`` rounds the script measures ``fd-rand`` (the Fréchet distance of G's samples,
eval mode, to half of the class's training images) beside its floor (the distance between
the two disjoint halves of those images), and writes a grid of 64 samples; at the end the
seconds per round. Recipes (name: config overrides) are below; ``paper`` is the paper's
optimiser on G emitting F's three channels, as the ``cpu`` preset trained it before.

    python benchmarks/gan_recipes.py --classes 0 --rounds 600 \
        --out benchmarks/results/gan-recipes

Writes ``OUT/recipes.jsonl`` (one record per class, recipe and measurement; rerunning skips
what is there) and ``OUT/grids/class{K}-{recipe}-r{round}.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from contrasyn.api.splits import training_indices
from contrasyn.config import merge
from contrasyn.data import load_dataset
from contrasyn.device import autocast
from contrasyn.evaluation.bench import _inputs, benchmark_task
from contrasyn.evaluation.quality import RandomFeatures, sample_distance, save_grid
from contrasyn.methods.csi.adversarial import GenerativeSide, sample
from contrasyn.methods.csi.trainer import resolve_gen_channels
from contrasyn.methods.presets import get_preset

RECIPES: dict[str, dict] = {
    "paper": {"gen_channels": 3, "adam_betas": (0.9, 0.999), "gan_loss": "bce"},
    "paper-grey": {"adam_betas": (0.9, 0.999), "gan_loss": "bce"},
    "bce-b0.5": {"adam_betas": (0.5, 0.999), "gan_loss": "bce"},
    "bce-b0": {"adam_betas": (0.0, 0.9), "gan_loss": "bce"},
    "hinge-b0": {"adam_betas": (0.0, 0.9), "gan_loss": "hinge"},
    "hinge-b0.5": {"adam_betas": (0.5, 0.999), "gan_loss": "hinge"},
    "hinge-b0-lr1e-3": {
        "adam_betas": (0.0, 0.9), "gan_loss": "hinge", "gen_lr": 1e-3, "disc_lr": 1e-3,
    },
    "hinge-b0-rec10": {"adam_betas": (0.0, 0.9), "gan_loss": "hinge", "rec_weight": 10.0},
    "bce-b0.5-ema0.99": {"adam_betas": (0.5, 0.999), "gen_ema": 0.99},
    "bce-b0.5-ema0.995": {"adam_betas": (0.5, 0.999), "gen_ema": 0.995},
}  # fmt: skip


def run(
    cls: int, recipe: str, method: str, rounds: int, every: int, seed: int, out: Path
) -> list[dict]:
    ds = load_dataset("fashion-mnist")
    task = benchmark_task(ds, cls)
    cfg = merge(get_preset("cpu"), {"train": {**RECIPES[recipe], "method": method}})
    _, rest = training_indices(len(task.train_images), 0.0, cfg.train.max_train, seed)
    images = _inputs(task.train_images[rest], task.dataset, cfg)  # the cpu cell's 1,000
    train_cfg = resolve_gen_channels(cfg.train, images)
    device = torch.device("cpu")
    torch.manual_seed(seed)
    side = GenerativeSide(train_cfg).train()
    space = RandomFeatures()
    batch = train_cfg.batch_size
    records, spent = [], 0.0
    order = torch.Generator().manual_seed(seed)
    for r in range(1, rounds + 1):
        idx = torch.randint(len(images), (batch,), generator=order)
        tick = time.perf_counter()
        losses = side.warmup_round(images[idx], lambda: autocast(train_cfg.precision, device))
        spent += time.perf_counter() - tick
        if r % every == 0 or r == rounds:
            side.calibrate_sampler()  # as training's end does
            side.eval()
            fd, floor = sample_distance(side.sampler, images, space, seed=seed)
            grid = sample(side.sampler, 64, seed)
            side.train()
            name = f"class{cls}-{method}-{recipe}-r{r}.png"
            save_grid(list(grid.split(16)), out / "grids" / name)
            rec = {
                "class": cls, "method": method, "recipe": recipe, "seed": seed, "round": r,
                "fd_rand": float(f"{fd:.4g}"), "fd_rand_floor": float(f"{floor:.4g}"),
                "ratio": round(fd / floor, 3), "seconds_per_round": round(spent / r, 4),
                "gen_channels": train_cfg.gen_channels, "grid": f"grids/{name}",
                **{k: round(v, 4) for k, v in losses.items()},
            }  # fmt: skip
            print(json.dumps(rec), flush=True)
            records.append(rec)
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", default="0", help="comma-separated class indices")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--method", default="full", choices=("full", "csi+g"))
    parser.add_argument("--rounds", type=int, default=600)
    parser.add_argument("--every", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/gan-recipes")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "recipes.jsonl"
    done = set()
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            done.add((r["class"], r["method"], r["recipe"], r["seed"], r["round"]))
    for cls in (int(c) for c in args.classes.split(",")):
        for recipe in args.recipes.split(","):
            if (cls, args.method, recipe, args.seed, args.rounds) in done:
                continue
            records = run(cls, recipe, args.method, args.rounds, args.every, args.seed, out)
            with path.open("a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in records))


if __name__ == "__main__":
    main()
