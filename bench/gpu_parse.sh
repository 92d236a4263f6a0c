#!/usr/bin/env bash
# Parse benchmark on one GPU, under 5 minutes: bulk vs per-sentence Stanza, and tree distances.
#
#   bench/gpu_parse.sh                 # tiny Stanza package, built here (no network needed)
#   SSRP_MODELS=models bench/gpu_parse.sh   # the real package, if `ssrp models fetch parse bert --to models` was run
#
# The last line printed is bench/parse.py's JSON. Stanza's Chu-Liu/Edmonds decoding runs in Python on the CPU
# whatever the device, so compare depparse batch sizes and CPU threads here before choosing workers per GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
MODELS=${SSRP_MODELS:-}
ARGS=(--device cuda --captions "${CAPTIONS:-10000}" --baseline 300 --threads 4)
if [ -n "$MODELS" ]; then ARGS+=(--models "$MODELS"); fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

for batch in ${BATCHES:-5000 20000}; do  # a failing or capped batch size does not stop the next one
  echo "== depparse_batch_size=$batch"
  out=$(timeout --foreground 130 env PYTHONPATH=. "$PY" bench/parse.py "${ARGS[@]}" --depparse-batch-size "$batch" 2>&1) \
    || echo "exit status $? at depparse_batch_size=$batch"
  printf '%s\n' "$out" | grep -v '^{' | grep -v '^\s*$' | tail -n 10 || true
  printf "%s\n" "$out" | grep "^{" | tail -n 1 || true
done
