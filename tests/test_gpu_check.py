"""benchmarks/gpu_check.sh (and gpu_check.py) in --quick mode on the CPU, and the timing
helper's median over the timed steps (benchmarks/_throughput.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _throughput import read_seconds, summarize_seconds  # noqa: E402


def _write_metrics(path: Path, seconds: list[float]) -> Path:
    lines = [json.dumps({"step": i, "loss": 1.0, "seconds": s}) for i, s in enumerate(seconds)]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_median_excludes_the_slow_warmup(tmp_path):
    # A 30 s first step (set-up, compilation), then steps of 0.5 s.
    seconds = read_seconds(_write_metrics(tmp_path / "metrics.jsonl", [30.0, 30.5, 31.0, 31.5]))
    r = summarize_seconds(seconds, window=1, warmup_windows=1, batch_size=32)
    assert r["warmup_seconds"] == 30.0
    assert r["step_seconds_median"] == 0.5
    assert r["images_per_second"] == 64.0
    assert r["timed_steps"] == 3
    # Without the warm-up excluded, the slow step would be part of the timing.
    assert summarize_seconds(seconds, 1, 0, 32)["images_per_second_mean"] < 5


def test_windows_are_whole_adversarial_cycles():
    # gen_every = 2: every second step also runs an adversarial round (the slow ones);
    # the trailing half cycle (step 6) is dropped.
    seconds = [5.0, 6.0, 7.0, 9.0, 10.0, 12.0, 13.0]
    r = summarize_seconds(seconds, window=2, warmup_windows=1, batch_size=8)
    assert r["window_seconds_median"] == 3.0
    assert r["images_per_second"] == pytest.approx(8 * 2 / 3.0, abs=0.01)
    assert (r["warmup_steps"], r["timed_steps"]) == (2, 4)
    with pytest.raises(ValueError, match="none left"):
        summarize_seconds(seconds, window=2, warmup_windows=3, batch_size=8)


def test_read_seconds_needs_every_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 0, "seconds": 1.0}) + "\n")
    path.write_text(path.read_text() + json.dumps({"step": 2, "seconds": 2.0}) + "\n")
    with pytest.raises(ValueError, match="log_every"):
        read_seconds(path)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_quick_on_cpu(tmp_path):
    out = tmp_path / "gpu-check.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), "--quick", "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["finished"] and data["quick"]
    assert data["settings"]["changed_by_this_script"] is None
    train = data["train"]
    expected = {f"{m}-{p}-eager" for m in ("csi", "full") for p in ("fp32", "bf16", "bf16-cl")}
    assert set(train) == expected
    for name, entry in train.items():
        assert "error" not in entry, (name, entry)
        assert entry["images_per_second"] > 0
        assert entry["peak_gpu_memory_mib"] is None  # CPU
        assert data["ratios_vs_fp32_eager"][name] == entry["ratio_vs_fp32_eager"] > 0
    assert train["csi-fp32-eager"]["ratio_vs_fp32_eager"] == 1.0
    assert train["full-bf16-eager"]["window_steps"] == 2  # a whole adversarial cycle
    assert set(data["score"]) == {"score-fp32-eager", "score-bf16-eager"}
    for name, entry in data["score"].items():
        assert entry["test_images_per_second"] > 0, (name, entry)
        assert name in data["ratios_vs_fp32_eager"]
    assert set(data["skipped"]) == {
        "csi-bf16-compile",
        "full-bf16-compile",
        "csi-bf16-cl-compile",
        "csi-fp32-compile",
    }
