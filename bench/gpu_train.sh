#!/usr/bin/env bash
# Paper-size SSRP training throughput on one GPU in bf16 autocast (well under 5 minutes).
# Prints progress on stderr; the last line is one JSON object:
#   paper_bf16_b128: SSRP-Cross encoder vs transformers.LxmertModel forward+backward, batch 128
#   stage1_paper / stage2_paper: trainer samples/s (batch 128 / 512 pairs) and loader samples/s
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
args=(--device cuda --threads 8 --workers 8 --reps "${REPS:-5}")
[ "${COMPILE:-0}" = 1 ] && args+=(--compile)  # COMPILE=1: also time our encoder under torch.compile
PYTHONPATH=. timeout --foreground 280 "$PY" bench/train.py "${args[@]}"
