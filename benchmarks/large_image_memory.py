"""Peak memory of decoding one large image through the product's loader (the README's
"Memory for large images" figures).

Each image is written to a temporary folder (horizontal stripes on black: it compresses to a
few MB), then a fresh Python process imports ``contrasyn.data.load_images``, resets its peak
resident memory (Linux: ``/proc/self/clear_refs``), loads the image at the default 32 x 32
and reads the peak (``VmHWM``) less the memory it had before: what decoding that image
costs, the imports excluded. (``ru_maxrss`` cannot tell: a child process starts with its
parent's peak.) 12000 x 12000 is 144 million pixels, under Pillow's decompression-bomb limit
(about 179 million). Linux only.

    python benchmarks/large_image_memory.py --out benchmarks/results/large-image-memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from contrasyn.evaluation.bench import _cpu_model

SIDE = 12000
# name, Pillow mode, channels of the array it is made from
IMAGES = (("rgb.png", "RGB", 3), ("grey.png", "L", 1), ("rgb.jpg", "RGB", 3))

MEASURE = """
import re, sys
from pathlib import Path
from contrasyn.data import load_images
def kib(field):
    return int(re.search(field + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1])
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from now
before = kib("VmRSS")
images, _ = load_images([sys.argv[1]], 32)
print((kib("VmHWM") - before) * 1024, *images.shape)
"""


def make(path: Path, mode: str, channels: int) -> None:
    arr = np.zeros((SIDE, SIDE, channels), np.uint8)
    arr[::97] = 255
    Image.fromarray(arr[..., 0] if channels == 1 else arr, mode).save(path)


def measure(path: Path, runs: int) -> dict:
    """``MEASURE`` in ``runs`` fresh processes: each run's peak growth in MB, the largest, and
    the shape the loader returned."""
    grown, shape = [], None
    for _ in range(runs):
        run = subprocess.run(
            [sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, check=True
        )
        size, *shape = run.stdout.split()
        grown.append(int(size) / 1e6)
    return {"peak_growth_MB_runs": grown, "peak_growth_MB": max(grown), "shape": shape}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--runs", type=int, default=3, help="measurements of each image (default 3)")
    args = p.parse_args()
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, mode, channels in IMAGES:
            path = Path(tmp) / name
            make(path, mode, channels)
            results[f"{SIDE}x{SIDE} {name}"] = {
                "file_bytes": path.stat().st_size,
                "decoded_bytes_at_1_byte_a_channel": SIDE * SIDE * channels,
                **measure(path, args.runs),
            }
            path.unlink()
    out = {
        "cpu": _cpu_model(),
        "python": sys.version.split()[0],
        "pillow": Image.__version__,
        "images": results,
        "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
