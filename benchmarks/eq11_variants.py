"""Plant wrong versions of eq. 11 in a copy of the source and check that the tests fail.

Eq. 11 is ``max_x' sum_S ||z_S(x)|| sim(z_S(x), z_S(x'))``: one nearest training image x'
shared by every shift S, the norm factor inside the sum. Each variant below replaces the one
line of ``Scorer.score_samples`` that computes it, in a copy of ``src/`` and ``tests/``,
and runs ``tests/test_score.py``; a variant the tests do not fail on is a missing test.

    python benchmarks/eq11_variants.py --out benchmarks/results/eq11-variants.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINE = '            per_draw[0].add_(indices["paper"][0].max(d.z.flatten(1)))'
VARIANTS = {
    "norm factor averaged over the shifts, outside the max": (
        '            per_draw[0].add_(indices["paper"][0].max(F.normalize(d.z, dim=2)'
        ".flatten(1)) * d.z.norm(dim=2).mean(1))"
    ),
    "nearest neighbour per shift, then summed (no shared x')": (
        '            per_draw[0].add_(torch.stack([indices["z"][s].max(d.z[:, s]) '
        "for s in range(k)], 1).sum(1))"
    ),
    "max and sum swapped (max over shifts of the sum over the bank)": (
        "            per_draw[0].add_(torch.stack([(d.z[:, s] @ self.bank_z_[:, s].T).sum(1) "
        "for s in range(k)], 1).amax(1))"
    ),
}


def run(variant: str | None, tests: list[str]) -> dict:
    """Run ``tests`` against a copy of the source with ``variant`` planted (None: as is)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        shutil.copytree(ROOT / "src", copy / "src")
        shutil.copytree(ROOT / "tests", copy / "tests")
        shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
        score = copy / "src" / "contrasyn" / "score.py"
        text = score.read_text()
        if text.count(LINE) != 1:
            raise SystemExit(f"{score}: the eq. 11 line is not there once; update LINE")
        if variant is not None:
            score.write_text(text.replace(LINE, variant))
        env = {**os.environ, "PYTHONPATH": str(copy / "src")}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
        done = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True)
    failed = [ln.split()[1] for ln in done.stdout.splitlines() if ln.startswith("FAILED ")]
    return {"returncode": done.returncode, "failed": failed, "last": done.stdout.strip()[-200:]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--tests", default="tests/test_score.py")
    args = parser.parse_args(argv)
    tests = args.tests.split(",")
    results = {"as written": run(None, tests)}
    if results["as written"]["returncode"] != 0:
        raise SystemExit(f"the tests fail on the code as written: {results['as written']}")
    for name, line in VARIANTS.items():
        results[name] = run(line, tests)
        print(f"{name}: {'killed' if results[name]['returncode'] else 'SURVIVED'}", flush=True)
    Path(args.out).write_text(json.dumps({"tests": tests, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
