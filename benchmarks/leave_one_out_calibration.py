"""Does the threshold keep its promise with few images? Held-out against leave-one-out.

For each training-set size n and each of ``--reps`` draws, n + 4,000 images of one source
(8 x 8 pixels of Beta(2, 5) noise: exchangeable by construction) are drawn; raw-pixel kNN
is fitted on the first n through ``Detector`` (every image in the bank, the threshold
calibrated on each one's distance to the others) and, for comparison, the held-out rule
the methods that learn from their images use (a tenth held out, ``holdout_count``; kNN on
the rest, the threshold among the held-out scores). Each threshold's realised false-alarm
rate on the 4,000 new images is set against what its ``Calibration`` states: the expected
rate and the 90% interval.

    python benchmarks/leave_one_out_calibration.py \
        --out benchmarks/results/leave-one-out-calibration.json
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from contrasyn.api.calibration import calibrate, conformal_threshold
from contrasyn.api.detector import Detector
from contrasyn.api.splits import holdout_count
from contrasyn.methods.baselines.knn import PixelKNN

NEW = 4000
RATE = 0.05


def held_out(images: np.ndarray, new: np.ndarray, seed: int) -> tuple[float, object]:
    """The held-out rule on kNN: a tenth of the images held out, the rest the bank."""
    n = len(images)
    order = np.random.default_rng(seed).permutation(n)
    hold, rest = order[: holdout_count(n, 0.1)], order[holdout_count(n, 0.1) :]
    knn = PixelKNN().fit(torch.from_numpy(images[rest]))
    anomaly = knn.anomaly_score(torch.from_numpy(images[hold])).numpy()
    threshold = conformal_threshold(anomaly, RATE)
    rate = float(np.mean(knn.anomaly_score(torch.from_numpy(new)).numpy() > threshold))
    return rate, calibrate(anomaly, threshold, RATE)


def leave_one_out(images: np.ndarray, new: np.ndarray, seed: int) -> tuple[float, object]:
    det = Detector(method="knn", preset="tiny", image_size=8, channels=1, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a size too small for the rate warns; it is recorded
        det.fit(images)
    rate = float(np.mean(det.predict(new) == -1))
    return rate, det.calibration_


def summary(rates: list[float], cals: list) -> dict:
    r = np.array(rates)
    low, high = np.array([c.low for c in cals]), np.array([c.high for c in cals])
    return {
        "calibration_images": int(np.median([c.n for c in cals])),
        "stated_expected_rate": float(np.mean([c.expected for c in cals])),
        "realised_rate": float(r.mean()),
        "inside_interval": float(np.mean((low <= r) & (r <= high))),
        "below_interval": float(np.mean(r < low)),
        "above_interval": float(np.mean(r > high)),
        "interval_width": float(np.mean(high - low)),
        "guaranteed": float(np.mean([c.guaranteed for c in cals])),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20,50,200")
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    out: dict = {"target_rate": RATE, "new_images": NEW, "reps": args.reps, "sizes": {}}
    for n in (int(s) for s in args.sizes.split(",")):
        rng = np.random.default_rng(n)
        results: dict[str, tuple[list, list]] = {"held-out": ([], []), "leave-one-out": ([], [])}
        for rep in range(args.reps):
            x = rng.beta(2.0, 5.0, size=(n + NEW, 1, 8, 8)).astype(np.float32)
            for name, rule in (("held-out", held_out), ("leave-one-out", leave_one_out)):
                rate, cal = rule(x[:n], x[n:], rep)
                results[name][0].append(rate)
                results[name][1].append(cal)
        out["sizes"][str(n)] = {name: summary(*v) for name, v in results.items()}
        print(n, json.dumps(out["sizes"][str(n)], indent=1))
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
