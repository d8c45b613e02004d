"""Generator inference per backend at a few batch sizes (pytest-benchmark); each checked against eager first."""
from __future__ import annotations

import itertools
import os

import pytest
import torch

from gantool.bench.parity import compare
from gantool.bench.timing import make_inputs
from gantool.bench.backends import find_artifact, read_artifacts
from gantool.runners import load_runner

BATCHES = [int(b) for b in os.environ.get("GANTOOL_BENCH_BATCHES", "1,64,4096").split(",")]
BACKENDS = os.environ.get("GANTOOL_BENCH_BACKENDS", "eager,compile,torchscript,ort,aoti").split(",")
FORMAT = {"torchscript": "torchscript", "ort": "onnx", "ort-cuda": "onnx", "aoti": "aoti"}
# (backend, dtype, batch): fp32 everywhere, plus the bf16 path the speed target is about.
CASES = [(b, "fp32", n) for b in BACKENDS for n in BATCHES] + [("eager", "bf16", max(BATCHES))]

_runners: dict[tuple[str, str], object] = {}


@pytest.fixture(scope="session")
def runner_for(bench_checkpoint, bench_exported, bench_device):
    """Load each (backend, dtype) once a session."""
    entries, _ = read_artifacts(bench_exported)

    def get(backend: str, dtype: str):
        if (backend, dtype) not in _runners:
            if backend in FORMAT:
                src = find_artifact(entries, bench_exported, FORMAT[backend], dtype, bench_device)
                if src is None:
                    pytest.skip(f"no {dtype} {FORMAT[backend]} artifact exported for {bench_device}")
            else:
                src = bench_checkpoint
            _runners[backend, dtype] = load_runner(src, backend, device=bench_device, dtype=dtype)
        return _runners[backend, dtype]

    return get


@pytest.mark.parametrize("backend,dtype,batch", CASES, ids=[f"{b}-{d}-{n}" for b, d, n in CASES])
def test_inference(benchmark, runner_for, backend, dtype, batch):
    runner = runner_for(backend, dtype)
    zs = make_inputs(batch, runner.info.latent_dim, 4, seed=0)
    reference = load_runner(runner_for("eager", "fp32").info.source, "eager", device="cpu")(zs[0])
    first = runner.to_cpu(runner.run(runner.prepare(zs[0])))  # also the first (compiling) call, untimed
    parity = compare(reference, first, dtype)
    assert parity["passed"], f"{backend} {dtype} batch {batch} disagrees with eager fp32: {parity}"

    xs = itertools.cycle([runner.prepare(z) for z in zs])  # rotated so caches don't flatter

    def call():
        runner.run(next(xs))
        runner.sync()

    benchmark.group = f"batch {batch}"
    benchmark.extra_info.update(backend=backend, dtype=dtype, batch=batch, device=runner.info.device,
                                threads=torch.get_num_threads(), parity_max_abs=parity["max_abs_err"])
    benchmark(call)
    if benchmark.stats is not None:  # None with --benchmark-disable
        benchmark.extra_info["samples_per_s"] = batch / benchmark.stats.stats.median
