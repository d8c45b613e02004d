#!/usr/bin/env bash
# The GPU check: makes a checkpoint, exports it, benches every backend on CUDA (eager, compile,
# compile-reduce-overhead, TorchScript, AOTInductor, ORT CUDA EP with I/O binding and CUDA graphs)
# at batch 1 .. 262144 in fp32/bf16/fp16, runs the training comparison, and writes
# bench-<card>.json (+ .png when matplotlib is there) into $OUT, or the dir given as $1.
#
#   benchmarks/gpu_check.sh [OUT_DIR]            # on a CUDA machine, < 10 minutes
#   benchmarks/gpu_check.sh --dry-run [OUT_DIR]  # on a CPU: tiny sizes, checks the script itself
#
# The package is used from the checkout (PYTHONPATH), not installed. An onnxruntime-gpu unpacked
# into /tmp/site is put first on the path; without one, the ort-cuda rows say why they could not run.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=()
if [[ "${1:-}" == "--dry-run" ]]; then DRY=(--dry-run); shift; fi
OUT_DIR="${1:-${OUT:-benchmarks/results}}"
PY="${PYTHON:-python3}"
if [[ -x .venv/bin/python && -z "${PYTHON:-}" ]]; then PY=.venv/bin/python; fi

if [[ -d /tmp/site/onnxruntime ]]; then
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  echo "gpu_check: using onnxruntime from /tmp/site" >&2
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  echo "gpu_check: no /tmp/site/onnxruntime; using whatever onnxruntime is importable" >&2
fi
mkdir -p "$OUT_DIR"

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
    print("onnxruntime providers:", ort.get_available_providers())
except Exception:
    pass
PYEOF
} > "$OUT_DIR/environment.txt" 2>&1
cat "$OUT_DIR/environment.txt" >&2

# Leave a margin under 10 minutes: the driver stops starting new backends after --budget-s.
timeout "${GPU_CHECK_TIMEOUT:-570}" "$PY" benchmarks/gpu_check.py --out "$OUT_DIR" ${DRY[@]+"${DRY[@]}"} --budget-s "${GPU_CHECK_BUDGET:-420}"
