#!/usr/bin/env bash
# The GPU check (<= 8 minutes on one GPU): trains briefly on CUDA, exports fp32/fp16/bf16 ONNX,
# TorchScript and CUDA AOTInductor, verifies them, benches every CUDA backend (eager, compile,
# compile-reduce-overhead, TorchScript, AOTI, ORT CUDA / CUDA graphs / TensorRT) at batch 1, 64,
# 4096 and 65536 in fp32/tf32/bf16/fp16, latency and throughput modes, compares the training loops,
# and writes bench-<card>.json + .png and environment.txt into $OUT (or the dir given as $1).
#
#   benchmarks/gpu_check.sh [OUT_DIR]            # on a CUDA machine
#   benchmarks/gpu_check.sh --dry-run [OUT_DIR]  # on a CPU: toy sizes, checks the script itself
#
# onnxruntime-gpu: where the machine has none, a wheel carried in split parts
# (${ORT_WHEEL_PARTS:-shared/wheels/onnxruntime_gpu-*.whl.part*}, e.g. the cp312 wheel cut with
# `split -b 40M`) is joined with cat and installed with `pip install --no-deps --target /tmp/site`;
# /tmp/site then goes first on PYTHONPATH and gpu_check.py calls onnxruntime.preload_dlls().
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=()
if [[ "${1:-}" == "--dry-run" ]]; then DRY=(--dry-run); shift; fi
OUT_DIR="${1:-${OUT:-benchmarks/results}}"
PY="${PYTHON:-python3}"
if [[ -x .venv/bin/python && -z "${PYTHON:-}" ]]; then PY=.venv/bin/python; fi
SITE="${ORT_SITE:-/tmp/site}"
mkdir -p "$OUT_DIR"

shopt -s nullglob
PARTS=(${ORT_WHEEL_PARTS:-shared/wheels/onnxruntime_gpu-*.whl.part*})
shopt -u nullglob
if [[ ! -d "$SITE/onnxruntime" && ${#PARTS[@]} -gt 0 ]]; then
  WHEEL_NAME="$(basename "${PARTS[0]}")"; WHEEL_NAME="${WHEEL_NAME%%.part*}"
  echo "gpu_check: joining ${#PARTS[@]} parts into /tmp/$WHEEL_NAME" >&2
  if [[ ${#DRY[@]} -eq 0 ]]; then
    cat "${PARTS[@]}" > "/tmp/$WHEEL_NAME"
    "$PY" -m pip install -q --no-deps --target "$SITE" "/tmp/$WHEEL_NAME"
  else
    echo "gpu_check: dry run: would pip install --no-deps --target $SITE /tmp/$WHEEL_NAME" >&2
  fi
fi
if [[ -d "$SITE/onnxruntime" ]]; then
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  echo "gpu_check: using onnxruntime from $SITE" >&2
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  echo "gpu_check: no $SITE/onnxruntime and no wheel parts; using whatever onnxruntime is importable" >&2
fi

# What the machine is, kept beside the numbers.
{
  echo "date: $(date -u +%FT%TZ)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || echo "nvidia-smi: not found"
  "$PY" - <<'PYEOF' || true
import importlib, sys
print("python", sys.version.split()[0])
for m in ("torch", "onnxruntime", "onnx", "onnxscript", "typer", "rich", "matplotlib", "mlxtend", "jsonschema", "pytest_benchmark"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"), getattr(mod, "__file__", ""))
    except Exception as e:
        print(m, "unavailable:", type(e).__name__, str(e)[:200])
try:
    import onnxruntime as ort
    print("onnxruntime providers in the wheel:", ort.get_available_providers())
except Exception:
    pass
PYEOF
} > "$OUT_DIR/environment.txt" 2>&1
cat "$OUT_DIR/environment.txt" >&2

# 8 minutes in all: no new bench backend starts after --budget-s; the hard stop is the timeout.
timeout "${GPU_CHECK_TIMEOUT:-470}" "$PY" benchmarks/gpu_check.py --out "$OUT_DIR" ${DRY[@]+"${DRY[@]}"} --budget-s "${GPU_CHECK_BUDGET:-330}"
