#!/usr/bin/env bash
# Back-translation throughput on one GPU with the real fairseq WMT19 single models (under 5 minutes).
#
#   bench/gpu_backtranslate.sh MODELS [COCO_CAPTIONS_JSON]
#
# MODELS holds translation/{en-de,de-en,en-ru,ru-en} from `ssrp models fetch translate --to MODELS`,
# fetched beforehand (the GPU host needs no network). If MODELS was fetched on another machine, its
# signed checksums.json does not verify under this machine's key: pin the four model.pt digests with
#   SSRP_TRUST_SHA256="<hex> <hex> <hex> <hex>" bench/gpu_backtranslate.sh MODELS
# (print them on the fetch machine with: sha256sum MODELS/translate/*/model.pt).
# COCO_CAPTIONS_JSON (e.g. annotations/captions_val2017.json) gives real captions; default: a mini-COCO.
# MODELS=tiny runs the same on the tiny models (a smoke test of the CUDA/fp16 path; figures meaningless).
# Prints the GPU, a few example paraphrases, and (last line) the JSON figures of bench/backtranslate.py.
set -euo pipefail
MODELS=${1:?usage: bench/gpu_backtranslate.sh MODELS [COCO_CAPTIONS_JSON]}
CAPTIONS_JSON=${2:-}
PY=${PYTHON:-.venv/bin/python}
N=${N_CAPTIONS:-4000}

args=(--device cuda --captions "$N" --per-caption 50 --fixed-batch 64 --threads 4 --repeat 2 --show 5)
if [ "$MODELS" != tiny ]; then
  for d in en-de de-en en-ru ru-en; do
    [ -f "$MODELS/translate/$d/model.pt" ] || { echo "missing $MODELS/translate/$d/model.pt" >&2; exit 2; }
  done
  args+=(--models "$MODELS")
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[ -n "$CAPTIONS_JSON" ] && args+=(--captions-file "$CAPTIONS_JSON")
for h in ${SSRP_TRUST_SHA256:-}; do args+=(--trust-sha256 "$h"); done
export PYTHONPATH=.
# 4 models of ~270M parameters: hashing + loading takes about a minute; the four timed runs a few more.
timeout --foreground 290 "$PY" bench/backtranslate.py "${args[@]}"
