#!/usr/bin/env bash
# GPU check of the BUTD extractor, under 5 minutes on one H100:
#   images/s of the full R101 configuration (random weights, 36 regions, 640x480 images resized to
#   600x800, decoding excluded) at fp32, tf32 and fp16, peak GPU memory, and the cosine of tf32 and
#   fp16 region features to fp32 ones on the same boxes. Target: 100 images/s at fp16.
#
#   bash bench/gpu_features.sh            # writes bench/out/gpu_features.{txt,json} (or under $OUT)
#   IMAGES=512 BATCH=64 bash bench/gpu_features.sh
#
# Needs python with torch + torchvision (CUDA build) and this repo's dependencies; set PYTHON to
# choose the interpreter (default .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
"$PY" -c "import torch, torchvision; assert torch.cuda.is_available(), 'no CUDA device visible'"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
OUT_DIR=${OUT:-bench/out}
mkdir -p "$OUT_DIR"
timeout --foreground 290 env PYTHONPATH=. "$PY" bench/features.py --gpu --images "${IMAGES:-256}" --batch "${BATCH:-32}" \
    --chunk "${CHUNK:-2400}" | tee "$OUT_DIR/gpu_features.txt"
tail -n 1 "$OUT_DIR/gpu_features.txt" > "$OUT_DIR/gpu_features.json"
