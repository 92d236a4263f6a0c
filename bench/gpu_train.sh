#!/usr/bin/env bash
# Paper-size SSRP training throughput on one GPU in bf16 autocast (well under 5 minutes).
# Prints progress on stderr; the last line is one JSON object:
#   step_b128_bf16 / encoder_b128_bf16: the stage-1 step (LxmertForPreTraining) and the encoders alone
#     (LxmertModel) against Hugging Face LXMERT, batch 128, COCO caption lengths, alternating
#   stage1_paper / stage2_paper: trainer samples/s (batch 128 / 512 pairs) and loader samples/s
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
PYTHONPATH=. timeout --foreground 280 "$PY" bench/train.py --device cuda --threads 8 --workers 8 --reps "${REPS:-5}"
