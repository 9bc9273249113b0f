"""The pointing game: do anomaly maps point at the anomalous part of an image?

A synthetic check with a known answer. A square patch cut from a test image of *another*
class (an anomaly) is pasted into a normal test image, at the same place it was cut from,
somewhere inside the 28 x 28 garment area of Fashion-MNIST's 32 x 32 frame; patches that
barely change the image (mean absolute change < ``--min-change``) are redrawn. The map's peak
(its largest value) "hits" when it falls inside the pasted square. A map that points nowhere
in particular hits with probability patch area / image area (``chance``).

The detector is ``Detector(method="csi", preset="cpu")`` trained on the normal class's train
images (saved in ``--model-dir`` and reused by a rerun). Candidates: occlusion with four fills
and three window sizes, and gradient maps; plus a map made without the model, the absolute
difference to the mean normal training image (smoothed over 3 x 3 pixels), to show how much
the model adds. The candidates are compared on a selection set of ``--select`` pasted images;
the best occlusion setting and the gradient map are then measured on ``--n`` fresh pasted
images (other normal images, other patches), which is the figure reported.

    .venv/bin/python benchmarks/pointing_game.py --out benchmarks/results/pointing-game-cpu.json

(the committed run's own options, niceness and threads are in its JSON file).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _throughput import machine, write_json  # benchmarks/, the script's folder

from contrasyn.api.detector import Detector
from contrasyn.api.maps import map_panel, save_png
from contrasyn.api.metrics import auroc
from contrasyn.data import load_dataset, to_model_input
from contrasyn.evaluation.bench import benchmark_task
from contrasyn.evaluation.bench import detector as bench_detector
from contrasyn.methods.presets import get_preset
from contrasyn.version import __version__

# name -> Detector.anomaly_map keywords
CANDIDATES = {
    "occlusion-blur-8/4": {"method": "occlusion", "fill": "blur", "patch": 8, "stride": 4},
    "occlusion-mean-8/4": {"method": "occlusion", "fill": "mean", "patch": 8, "stride": 4},
    "occlusion-black-8/4": {"method": "occlusion", "fill": "black", "patch": 8, "stride": 4},
    "occlusion-grey-8/4": {"method": "occlusion", "fill": "grey", "patch": 8, "stride": 4},
    "occlusion-blur-12/4": {"method": "occlusion", "fill": "blur", "patch": 12, "stride": 4},
    "occlusion-blur-6/3": {"method": "occlusion", "fill": "blur", "patch": 6, "stride": 3},
    "gradient": {"method": "gradient"},
}


def wilson(hits: int, n: int, z: float = 1.96) -> list[float]:
    """The 95% Wilson score interval of a proportion."""
    if n == 0:
        return [0.0, 1.0]
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def paste(
    normals: np.ndarray,
    sources: np.ndarray,
    patch: int,
    min_change: float,
    rng: np.random.Generator,
    lo: int = 2,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Each normal image with a ``patch`` square of a random source image pasted at a random
    place inside [lo, size - lo) (the same place in both); masks (N, S, S) of the squares."""
    size = normals.shape[1]
    out, masks, where = normals.copy(), np.zeros(normals.shape[:3], bool), []
    for i in range(len(normals)):
        for _ in range(200):
            r, c = rng.integers(lo, size - lo - patch + 1, size=2)
            j = int(rng.integers(len(sources)))
            new = sources[j, r : r + patch, c : c + patch]
            old = normals[i, r : r + patch, c : c + patch]
            change = float(np.abs(new.astype(float) - old.astype(float)).mean() / 255)
            if change >= min_change:
                break
        out[i, r : r + patch, c : c + patch] = new
        masks[i, r : r + patch, c : c + patch] = True
        where.append({"row": int(r), "col": int(c), "source": j, "change": round(change, 3)})
    return out, masks, where


def peak_hits(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Whether each map's largest value lies inside its mask (NaN counts as -inf)."""
    flat = np.nan_to_num(maps.reshape(len(maps), -1), nan=-np.inf)
    peak = flat.argmax(1)
    return masks.reshape(len(masks), -1)[np.arange(len(masks)), peak]


def mass_inside(maps: np.ndarray, masks: np.ndarray) -> float:
    """Mean share of each map's positive part that lies inside the mask."""
    pos = np.clip(np.nan_to_num(maps), 0, None)
    total = pos.reshape(len(pos), -1).sum(1)
    inside = (pos * masks).reshape(len(pos), -1).sum(1)
    ok = total > 0
    return float((inside[ok] / total[ok]).mean()) if ok.any() else 0.0


def difference_maps(images: np.ndarray, mean_normal: np.ndarray) -> np.ndarray:
    """The model-free baseline: |image - mean normal training image|, summed over channels,
    averaged over 3 x 3 pixels."""
    diff = np.abs(images.astype(np.float32) / 255 - mean_normal[None]).sum(-1)
    t = torch.from_numpy(diff)[:, None]
    return torch.nn.functional.avg_pool2d(t, 3, 1, 1, count_include_pad=False)[:, 0].numpy()


def measure(det: Detector, name: str, kwargs: dict, images: np.ndarray, masks: np.ndarray) -> dict:
    t0 = time.perf_counter()
    maps = det.anomaly_map(images, **kwargs)
    seconds = time.perf_counter() - t0
    hits = peak_hits(maps, masks)
    return {
        "candidate": name,
        "settings": kwargs,
        "n": len(hits),
        "hits": int(hits.sum()),
        "accuracy": round(float(hits.mean()), 4),
        "interval95": wilson(int(hits.sum()), len(hits)),
        "mass_inside": round(mass_inside(maps, masks), 4),
        "seconds": round(seconds, 1),
        "seconds_per_image": round(seconds / len(hits), 4),
    }, maps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="Fashion-MNIST folder (default: its usual place)")
    p.add_argument("--normal-class", type=int, default=0)
    p.add_argument("--patch", type=int, default=10, help="side of the pasted square, pixels")
    p.add_argument("--min-change", type=float, default=0.15)
    p.add_argument("--select", type=int, default=100, help="pasted images to choose on")
    p.add_argument("--n", type=int, default=200, help="fresh pasted images to report on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--model-dir",
        default="runs/pointing-game",
        help="training checkpoints (a rerun resumes, and a finished run is not retrained)",
    )
    p.add_argument(
        "--reuse",
        metavar="RUN_DIR",
        help="start from the finished checkpoint of this benchmark cell's run folder (the same "
        "model: runs/fashion-mnist/csi/classK/seedS of a cpu-preset benchmark)",
    )
    p.add_argument("--out", default="benchmarks/results/pointing-game-cpu.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    ds = load_dataset("fashion-mnist", **({"root": args.root} if args.root else {}))
    # the model of the benchmark's csi cell (class, seed, cpu preset): the same task, the same
    # Detector (no threshold hold-out: the task has its own validation split), the same images
    task = benchmark_task(ds, args.normal_class)
    checkpoints = Path(args.model_dir) / "checkpoints"
    if args.reuse and not (checkpoints / "last.json").is_file():
        # a finished benchmark cell's checkpoint: training resumes at its end (the trainer
        # checks the configuration and the images are the same)
        checkpoints.mkdir(parents=True, exist_ok=True)
        for name in ("last.safetensors", "last.json", "metrics.jsonl"):
            shutil.copy2(Path(args.reuse) / name, checkpoints / name)
        print(f"reusing the checkpoint of {args.reuse}", flush=True)
    cfg = get_preset("cpu")
    det = bench_detector("csi", "cpu", {}, args.seed, checkpoints)
    t0 = time.perf_counter()
    det.fit(to_model_input(task.train_images, 32, cfg.train.channels, "pad"))
    fit_seconds = round(time.perf_counter() - t0, 1)
    print(f"fitted in {fit_seconds} s (training resumed from {checkpoints})", flush=True)

    def framed(images: np.ndarray) -> np.ndarray:  # 28 x 28 in the 32 x 32 frame the model sees
        return np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))

    test = framed(task.test_images)
    normal_idx = np.flatnonzero(task.test_is_anomaly == 0)
    sources = test[task.test_is_anomaly == 1]
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(normal_idx)
    if len(order) < args.select + args.n:
        raise SystemExit(f"only {len(order)} normal test images for {args.select} + {args.n}")
    size = test.shape[1]
    chance = args.patch**2 / size**2
    mean_normal = framed(task.train_images).astype(np.float32).mean(0) / 255
    chance_area = args.patch**2 / (size - 4) ** 2

    def pasted_set(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        clean = test[idx]
        images, masks, where = paste(clean, sources, args.patch, args.min_change, rng)
        return clean, images, masks, where

    def detectability(clean: np.ndarray, images: np.ndarray) -> dict:
        a_clean, a_pasted = det.anomaly_score(clean), det.anomaly_score(images)
        y = np.r_[np.zeros(len(clean)), np.ones(len(images))]
        return {
            "auroc_pasted_vs_clean": round(auroc(y, np.r_[a_clean, a_pasted]), 4),
            "share_score_raised": round(float((a_pasted > a_clean).mean()), 4),
        }

    # selection
    sel_clean, sel_images, sel_masks, _ = pasted_set(order[: args.select])
    selection = []
    for name, kwargs in CANDIDATES.items():
        row, _ = measure(det, name, kwargs, sel_images, sel_masks)
        selection.append(row)
        print(f"selection {name}: {row['accuracy']:.3f} ({row['seconds']} s)", flush=True)
    diff_hits = peak_hits(difference_maps(sel_images, mean_normal), sel_masks)
    occlusion = [r for r in selection if r["settings"]["method"] == "occlusion"]
    # the most accurate occlusion setting; among equals, the cheapest
    best = max(occlusion, key=lambda r: (r["hits"], -r["seconds"]))
    chosen = {"occlusion": best["candidate"], "gradient": "gradient"}

    # the report, on fresh pasted images
    rep_clean, rep_images, rep_masks, where = pasted_set(order[args.select : args.select + args.n])
    report = []
    shown = {}
    for name in chosen.values():
        row, maps = measure(det, name, CANDIDATES[name], rep_images, rep_masks)
        report.append(row)
        shown[name] = maps
        print(f"report {name}: {row['accuracy']:.3f} ({row['seconds']} s)", flush=True)
    rep_diff = difference_maps(rep_images, mean_normal)
    hits = peak_hits(rep_diff, rep_masks)
    report.append(
        {
            "candidate": "no-model: |x - mean normal image|",
            "n": len(hits),
            "hits": int(hits.sum()),
            "accuracy": round(float(hits.mean()), 4),
            "interval95": wilson(int(hits.sum()), len(hits)),
            "mass_inside": round(mass_inside(rep_diff, rep_masks), 4),
        }
    )

    # a picture: eight pasted images, the pasted square outlined, and the chosen map
    out = Path(args.out)
    picture = out.with_suffix(".png")
    rows = []
    for i in range(min(8, len(rep_images))):
        img = np.repeat(rep_images[i], 3, axis=2) if rep_images.shape[3] == 1 else rep_images[i]
        panel = map_panel(img, shown[chosen["occlusion"]][i])
        scale = panel.shape[0] // size
        r, c = where[i]["row"] * scale, where[i]["col"] * scale
        side = args.patch * scale
        for box in (panel[:, : panel.shape[0]],):
            box[r, c : c + side] = box[r + side - 1, c : c + side] = (0, 200, 255)
            box[r : r + side, c] = box[r : r + side, c + side - 1] = (0, 200, 255)
        rows.append(panel)
    gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([x for r in rows for x in (r, gap)][:-1])
    save_png(picture, grid)

    result = {
        "what": "pointing game: the peak of the anomaly map inside a pasted patch of an "
        "anomalous class's image",
        "command": "python benchmarks/pointing_game.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "dataset": "fashion-mnist",
        "normal_class": args.normal_class,
        "class_name": task.class_names[args.normal_class],
        "image_size": int(size),
        "patch": args.patch,
        "chance": round(chance, 4),
        "chance_garment_area": round(chance_area, 4),
        "chance_means": "patch area / frame area (a peak anywhere in the 32 x 32 frame); "
        "chance_garment_area: / the 28 x 28 area the patches are pasted in",
        "min_change": args.min_change,
        "seed": args.seed,
        "model": {
            "method": "csi",
            "preset": "cpu",
            "score": det.score_name_,
            "n_train": det.n_train_,
            "fit_seconds": fit_seconds,
            "as": "the csi cell of `contrasyn benchmark --dataset fashion-mnist --methods csi "
            "--preset cpu` for this class and seed (contrasyn.evaluation.bench.detector)",
            "reused_checkpoint": args.reuse,
        },
        "selection": {
            "n": args.select,
            "candidates": selection,
            "no_model_accuracy": round(float(diff_hits.mean()), 4),
            "detectability": detectability(sel_clean, sel_images),
        },
        "chosen": chosen,
        "report": {
            "n": args.n,
            "rows": report,
            "detectability": detectability(rep_clean, rep_images),
        },
        "picture": picture.name,
        "machine": machine(args.threads),
        "versions": {"contrasyn": __version__, "torch": torch.__version__},
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    write_json(out, result)
    print(json.dumps({"chosen": chosen, "report": report, "chance": result["chance"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
