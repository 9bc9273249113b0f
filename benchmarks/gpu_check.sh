#!/usr/bin/env bash
# One short check for a GPU machine (under 8 minutes): paper-size ResNet-18 training throughput
# for csi and full (fp32 eager, bf16 eager, bf16 compiled, channels-last), scoring throughput,
# peak GPU memory, ratios to fp32 eager -> benchmarks/results/gpu-check.json.
#
#   bash benchmarks/gpu_check.sh                          # the check (cuda when available)
#   bash benchmarks/gpu_check.sh --quick --device cpu --out /tmp/gpu-check.json   # smoke test
#
# Arguments go to benchmarks/gpu_check.py (a later --out wins over the default); relative paths
# are relative to the repository root. The Python script time-boxes itself (--budget, default
# 420 s); `timeout` stops it hard after GPU_CHECK_TIMEOUT seconds (default 470), and the JSON,
# rewritten after every variant, keeps what was measured. PYTHON picks the interpreter
# (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi || true
fi
cmd=("$PYTHON" benchmarks/gpu_check.py --out benchmarks/results/gpu-check.json "$@")
if command -v timeout >/dev/null 2>&1; then
  exec timeout -k 10 "${GPU_CHECK_TIMEOUT:-470}" "${cmd[@]}"
fi
exec "${cmd[@]}"
