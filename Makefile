# Two entry points on a fresh machine:
#   make demo   - create .venv, install, run the main job end to end on the bundled data
#                 (again: reuses a finished run, resumes a half-finished one; FRESH=1 starts over)
#   make test   - create .venv, install, run the test suite
# CPU=1 (for a new .venv) installs the CPU-only route: torch from PyTorch's CPU index and
# onnxruntime instead of onnxruntime-gpu, about 1.1 GB instead of 6.5 GB.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
ORT_EXTRA := $(if $(filter 1 yes true,$(CPU)),cpu,gpu)

.PHONY: demo test bench bench-ci bench-baseline clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
ifeq ($(ORT_EXTRA),cpu)
	# CPU-only wheels from PyTorch's own index; never a silent fallback to the CUDA build.
	$(BIN)/pip install -q --index-url $(TORCH_CPU_INDEX) "torch==2.14.1" "torchvision==0.29.1" || \
		$(BIN)/pip install -q --index-url $(TORCH_CPU_INDEX) torch torchvision
else
	# torch/torchvision pinned to the builds this kind of machine carries on disk.
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/pip install -q torch torchvision
endif
	$(BIN)/pip install -q -e ".[dev,$(ORT_EXTRA)]"
	touch $(STAMP)

# Printed at the end of demo and test (as rustup/uv print their PATH line): gantool is in the venv,
# not on the PATH. README.md's first screen says the same line (tests/test_readme_commands.py).
ACTIVATE := source $(BIN)/activate
PATH_HINT = gantool is installed in $(VENV), not on your PATH: run '$(ACTIVATE)' (then gantool -h), or call $(BIN)/gantool

demo: $(STAMP)
	# train (or reuse / resume), export, verify, eval, bench -> runs/demo/REPORT.md (gantool demo -h)
	@rc=0; $(BIN)/python -m gantool demo --out runs/demo $(if $(filter 1 yes true,$(FRESH)),--fresh) || rc=$$?; \
		echo "$(PATH_HINT)"; \
		exit $$rc

test: $(STAMP)
	@rc=0; $(BIN)/python -m pytest -q tests $(PYTEST_ARGS) || rc=$$?; \
		echo "$(PATH_HINT)"; \
		exit $$rc

# The ratio gate's short suite (docs/bench.md): an untrained checkpoint (speed does not depend on
# the weights), ONNX + TorchScript, three backends at two batches, and the train-loop ratio.
GATE := benchmarks/out/gate
GATE_BENCH = $(BIN)/python -m gantool bench --checkpoint $(GATE)/run --exported $(GATE)/exported \
	--backends eager,torchscript,ort --precisions fp32 --batch-sizes 64,1024 --device cpu --train \
	--max-time 5 --plot benchmarks/out/gate.png

$(GATE)/exported/manifest.json: $(STAMP)
	mkdir -p $(GATE)/run
	$(BIN)/python -c "from gantool.checkpoint import save_untrained_checkpoint as s; s('$(GATE)/run/checkpoint.pt', 1234, 'ci gate, untrained')"
	$(BIN)/python -m gantool export --checkpoint $(GATE)/run --format onnx,torchscript --out $(GATE)/exported --no-verify

bench-ci: $(STAMP) $(GATE)/exported/manifest.json
	# A short pytest-benchmark session (< 3 min on 2 cores): prints the summary table, writes the
	# JSON report and compares it with its committed baseline (printed, for the record) ...
	mkdir -p benchmarks/out
	$(BIN)/python -m pytest -q benchmarks --benchmark-only --benchmark-min-rounds=3 --benchmark-max-time=0.5 --benchmark-sort=name \
		--benchmark-json=benchmarks/out/benchmark.json --benchmark-columns=median,iqr,ops,rounds
	cd benchmarks && ../$(BIN)/pytest-benchmark compare baseline/cpu-2core.json out/benchmark.json \
		--columns=median,ops --group-by=name --sort=name
	# ... then the gate that fails CI: samples/s ratios against the committed baseline.
	$(GATE_BENCH) --json benchmarks/out/bench.json --compare benchmarks/baseline/bench-cpu-2core.json --max-regression 30%

bench-baseline: $(STAMP) $(GATE)/exported/manifest.json
	# Refresh the gate's baseline on this machine (say in the commit how busy it was).
	$(GATE_BENCH) --json benchmarks/baseline/bench-cpu-2core.json

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks benchmarks/out
