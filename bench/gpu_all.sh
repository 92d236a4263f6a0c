#!/usr/bin/env bash
# Every GPU check in one go, about 8 minutes on one H100: trainer, BUTD features, Stanza parsing,
# back-translation (tiny models: a smoke test of the CUDA path) and the tests marked `gpu`.
#
#   bash bench/gpu_all.sh          # logs under $OUT (or bench/out), one per check; a summary at the end
#
# Each check has its own time cap and a failing check does not stop the others. The last line of each
# benchmark log is that benchmark's JSON; the summary prints them. Set PYTHON to choose the interpreter.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-bench/out}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHON=$PY OUT=$OUT_DIR PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

check() {  # check NAME CAP_SECONDS COMMAND...
  local name=$1 cap=$2 start rc
  shift 2
  start=$(date +%s)
  timeout "$cap" "$@" >"$OUT_DIR/$name.log" 2>&1
  rc=$?
  echo "== $name: exit $rc in $(($(date +%s) - start)) s (cap $cap s)"
}

check train 150 env REPS="${REPS:-3}" bash bench/gpu_train.sh
check gpu_tests 45 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/features/test_features_extractor.py \
  tests/parse/test_parse_parser.py tests/train/test_train_model.py
check features 100 env IMAGES="${IMAGES:-128}" bash bench/gpu_features.sh
check parse 90 env BATCHES="${PARSE_BATCHES:-5000}" CAPTIONS="${PARSE_CAPTIONS:-5000}" bash bench/gpu_parse.sh
check backtranslate 60 env N_CAPTIONS="${N_CAPTIONS:-1000}" bash bench/gpu_backtranslate.sh tiny

for name in train gpu_tests features parse backtranslate; do
  echo "== $name (last lines)"
  tail -n 3 "$OUT_DIR/$name.log" | cut -c1-3000
done
