#!/usr/bin/env bash
# The GPU check in one command, for a lent CUDA machine (< 8 minutes on one GPU):
#   bench/gpu_check.sh [OUT]            (default OUT: results/gpu-check-<date>)
# Runs the CUDA-marked tests, the no-sync check of every fixed-step loop, the eager vs graph
# timing table (gmm2d-vp, checkerboard-vp, the CIFAR-10 U-Net) and the quick suite on CUDA;
# everything it measured lands under OUT (summary.md, timing.csv, sync.csv, tests.txt, suite/).
# Extra arguments go to `python -m bench.harness.gpu_check` (e.g. --parts timing --repeats 3).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-results/gpu-check-$(date -u +%Y%m%d-%H%M%S)}"
shift || true
PY="${PYTHON:-python}"
[ -x .venv/bin/python ] && PY="${PYTHON:-.venv/bin/python}"
mkdir -p "$OUT"
# under 8 minutes whatever hangs (tests <= 150 s, suite <= 120 s); summary.md is written part by part
timeout 460 "$PY" -m bench.harness.gpu_check --out "$OUT" --device cuda --suite-n 500 --tests-timeout 150 --suite-timeout 120 "$@" 2>&1 | tee "$OUT/gpu_check.log" \
  || echo "gpu check: stopped early (exit $?); what was measured is in $OUT"
echo "gpu check: $OUT/summary.md"
