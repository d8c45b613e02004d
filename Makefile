# Two entry points on a fresh machine:
#   make demo   - create .venv, install, run the main job end to end on the bundled data
#   make test   - create .venv, install, run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-ci clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision pinned to the builds this kind of machine carries on disk.
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/pip install -q torch torchvision
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gantool train --out runs/demo
	$(BIN)/gantool export --checkpoint runs/demo --format all --out exported
	$(BIN)/gantool verify --exported exported --json runs/demo/verify.json
	$(BIN)/gantool eval --checkpoint runs/demo --json runs/demo/eval.json
	$(BIN)/gantool bench --exported exported --checkpoint runs/demo --batch-sizes 1,64,4096 --json runs/demo/bench.json --plot runs/demo/bench.png

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench-ci: $(STAMP)
	# A short pytest-benchmark session (< 3 min on 2 cores): prints the summary table, writes the
	# JSON report, then compares it with the committed baseline (docs/bench.md: refreshing it).
	mkdir -p benchmarks/out
	$(BIN)/python -m pytest -q benchmarks --benchmark-only --benchmark-min-rounds=3 --benchmark-max-time=0.5 --benchmark-sort=name \
		--benchmark-json=benchmarks/out/benchmark.json --benchmark-columns=median,iqr,ops,rounds
	cd benchmarks && ../$(BIN)/pytest-benchmark compare baseline/cpu-2core.json out/benchmark.json \
		--columns=median,ops --group-by=name --sort=name

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks benchmarks/out
