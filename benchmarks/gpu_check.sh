#!/usr/bin/env bash
# The Big2Small GPU check: batched vs naive fitting at the paper's settings, one layer at the paper's
# 10,000 steps against the rate-distortion limit, on-the-fly inference vs dense, evaluation throughput
# vs a plain loop; one table at the end. Sized for one H200 in under 8 minutes.
#
#   benchmarks/gpu_check.sh                # on the GPU (cuda when present)
#   benchmarks/gpu_check.sh --quick        # tiny settings: a smoke test that runs on a CPU in minutes
#   benchmarks/gpu_check.sh --parts fit,layer --paper-steps 2000   # a subset (see --help)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" benchmarks/gpu_check.py "$@"
