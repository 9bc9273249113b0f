"""The training-bank search, exact vs FAISS: time, memory and recall at banks of 1e3 to 1e6.

For each bank size M (1e3, 1e4, 1e5, 1e6 vectors of d = 128, float32; ``--quick``: 1e3 and
1e4) and 1,000 queries, through ``contrasyn.methods.csi.score.build_index`` as the Scorer uses it:

- ``exact`` (the default index): the chunked matrix product, median seconds of repeats, its
  peak extra memory computed (one chunk x chunk block of products) and measured (growth of
  the peak resident set, ``VmHWM`` reset through ``/proc/self/clear_refs``; glibc's malloc is
  held at its initial 128 KiB mmap threshold, ``mallopt``, so that freed blocks go back to the
  system and a reused block is not missed);
- ``faiss``: build seconds and resident growth, index bytes (``faiss.serialize_index``), and
  per ``nprobe``: median query seconds, its ratio to the exact search's in the same run,
  recall@1 (the fraction of queries whose returned max equals the exact max within 1e-5)
  and the mean absolute error of the max. Banks under 39 x nlist vectors (nlist =
  4 sqrt(M): under ~24,000) get FAISS's exact flat index, so one row, no nprobe.

Data: not uniform random vectors (IVF's worst case, no structure) but a clustered mixture
like a feature bank: 100 random unit directions, each vector one of them plus Gaussian noise
of the same norm, normalised (cosine to its centre ~0.7); the queries are fresh draws from
the same mixture, unit vectors too (the ``csi`` and ``paper`` scores search with unnormalised
ones, which changes no cost). Seeded, so a rerun searches the same vectors. The machine's
load average at the start is recorded: times on a shared machine are upper bounds.

    nice -n 10 python benchmarks/bank_search.py --out benchmarks/results/bank-search-cpu.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

SIZES = [1_000, 10_000, 100_000, 1_000_000]
QUICK_SIZES = [1_000, 10_000]
NPROBES = [8, 32, 128]
DIM, QUERIES, CLUSTERS, TOLERANCE = 128, 1_000, 100, 1e-5


def mixture(n: int, centres: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``n`` unit vectors: a random centre plus isotropic noise of norm ~1, normalised."""
    which = torch.randint(len(centres), (n,), generator=g)
    noise = torch.randn(n, centres.shape[1], generator=g) / centres.shape[1] ** 0.5
    return F.normalize(centres[which] + noise, dim=1)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_growth(fn):
    """``(fn(), MiB)``: how far the peak resident set rose above its level before ``fn``.
    Linux only (``None`` elsewhere): the peak (``VmHWM``) is reset to the current level."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _rss_kib("VmRSS")
    except OSError:
        return fn(), None
    out = fn()
    return out, round((_rss_kib("VmHWM") - before) / 1024, 1)


def return_freed_blocks() -> None:
    """Keep glibc's mmap threshold at 128 KiB (its dynamic raise would keep freed blocks of
    up to 32 MiB resident, and a search reusing them would show no growth)."""
    try:
        ctypes.CDLL(None).mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def timed(fn, repeats: int) -> tuple[object, float]:
    """The last result of ``fn`` and its median seconds over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def one_size(
    m: int,
    centres: torch.Tensor,
    n_queries: int = QUERIES,
    nprobes: list[int] = NPROBES,
    repeats: int = 3,
    chunk: int = 4096,
    seed: int = 0,
) -> dict:
    import faiss

    from contrasyn.methods.csi.score import build_index

    g = torch.Generator().manual_seed(seed + m)
    bank = mixture(m, centres, g)
    queries = mixture(n_queries, centres, g)
    row: dict = {"bank_size": m, "bank_mib": round(bank.numel() * 4 / 2**20, 2)}

    exact_index = build_index(bank, "exact", chunk=chunk)
    exact_index.max(queries[:10])  # warm-up
    (exact, seconds), rss = peak_growth(lambda: timed(lambda: exact_index.max(queries), repeats))
    block = min(n_queries, chunk) * min(m, chunk)
    row["exact"] = {
        "seconds_median": round(seconds, 4),
        "queries_per_second": round(n_queries / seconds, 1),
        # one block of products (the running max and the output are a few KiB)
        "peak_extra_mib_computed": round(block * 4 / 2**20, 2),
        "peak_rss_growth_mib": rss,
    }
    print(m, "exact", json.dumps(row["exact"]), flush=True)

    t0 = time.perf_counter()
    index, build_rss = peak_growth(lambda: build_index(bank, "faiss", nprobes[0], seed=seed))
    build_seconds = time.perf_counter() - t0
    row["faiss"] = {
        "index": "ivf-flat" if index.ivf else "flat (bank under 39 x nlist: exact fallback)",
        "nlist": index.nlist if index.ivf else None,
        "build_seconds": round(build_seconds, 3),
        "build_rss_growth_mib": build_rss,
        "index_mib": round(len(faiss.serialize_index(index.index)) / 2**20, 2),
        "search": [],
    }
    for nprobe in nprobes if index.ivf else [None]:
        if nprobe is not None:
            index.index.nprobe = nprobe
        index.max(queries[:10])  # warm-up
        got, seconds = timed(lambda index=index: index.max(queries), repeats)
        error = (got - exact).abs()
        result = {
            "nprobe": nprobe,
            "seconds_median": round(seconds, 4),
            "queries_per_second": round(n_queries / seconds, 1),
            "ratio_to_exact": round(seconds / row["exact"]["seconds_median"], 3),
            "recall_at_1": round((error <= TOLERANCE).float().mean().item(), 4),
            "mean_abs_error": float(f"{error.mean().item():.3g}"),
        }
        row["faiss"]["search"].append(result)
        print(m, "faiss", json.dumps(result), flush=True)
    row["faiss"]["build_over_exact_search"] = round(
        build_seconds / row["exact"]["seconds_median"], 2
    )
    return row


def run(
    sizes: list[int],
    n_queries: int = QUERIES,
    nprobes: list[int] = NPROBES,
    repeats: int = 3,
    chunk: int = 4096,
    seed: int = 0,
) -> dict:
    import faiss
    import numpy as np

    from contrasyn.checkpoint import versions

    centres = F.normalize(torch.randn(CLUSTERS, DIM, generator=torch.Generator().manual_seed(seed)))
    return {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "faiss_threads": faiss.omp_get_max_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "load_average_at_start": list(os.getloadavg()),
        },
        "versions": {**versions(), "faiss": faiss.__version__, "numpy": np.__version__},
        "setup": {
            "dim": DIM,
            "queries": n_queries,
            "data": f"mixture of {CLUSTERS} clusters on the unit sphere (see the docstring)",
            "chunk": chunk,
            "repeats": repeats,
            "recall_tolerance": TOLERANCE,
            "seed": seed,
        },
        "rows": [one_size(m, centres, n_queries, nprobes, repeats, chunk, seed) for m in sizes],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/bank-search-cpu.json")
    parser.add_argument("--quick", action="store_true", help="banks of 1e3 and 1e4 only")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    return_freed_blocks()  # process-wide: here, not in ``run``, which tests import
    results = run(QUICK_SIZES if args.quick else SIZES, repeats=args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
