"""Time a Runner: the measure loop, latency percentiles and samples/s, its inputs, and parity of its first output."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from gantool.runners import Runner
from gantool import noise

INPUT_BUDGET_BYTES = 256 << 20  # rotated z buffers per row stay under this


@dataclass
class BenchResult:
    """One row: a (backend, precision, batch) measured, or why it was not."""

    backend: str
    precision: str
    device: str
    batch: int
    status: str  # ok | parity-failed | unavailable | skipped | oom | error
    reason: str = ""
    artifact: str | None = None
    load_s: float | None = None
    first_call_ms: float | None = None  # includes compilation for compile/compile-reduce-overhead
    warmup: int = 0
    repeats: int = 0
    timer: str = ""
    median_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    min_ms: float | None = None
    mean_ms: float | None = None
    samples_per_s: float | None = None
    gflops: float | None = None
    peak_gflops: float | None = None
    pct_peak: float | None = None
    parity: dict[str, Any] | None = None
    ranked: bool = False
    precision_support: str | None = None  # bf16 / fp16: "native" or "emulated" from the device's flags
    # What ran the row beyond backend/device: web's browser, ORT-Web version, EP and threads;
    # OpenVINO's inference_precision_hint; an int8 file's quantization method.
    runtime: dict[str, Any] | None = None
    server: dict[str, Any] | None = None  # remote rows: url, model, model_version, server_version

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(runner: Runner, xs: list[Any], warmup: int, min_time: float, min_repeats: int,
            max_repeats: int = 100_000) -> tuple[Any, dict[str, Any]]:
    """First call (timed alone), warm-up (untimed), then timed calls until both min_repeats and
    min_time are reached. Inputs are already prepared; calls rotate over them.

    On CUDA, torch-stream backends are timed with CUDA events around each call; others (ONNX
    Runtime runs its own stream) with a host clock between two device syncs. Every timed call
    starts on an idle device, so each sample is one call's latency.
    Returns (first output as float32 CPU, timing dict in seconds).
    """
    cuda_events = runner.device.type == "cuda" and not runner.info.backend.startswith("ort")
    own = runner.clock is not None  # a browser page times itself: the host<->page round trip is not the model's
    runner.sync()
    t0 = time.perf_counter()
    first = runner.run(xs[0])
    runner.sync()
    first_s = runner.last_run_s if own else time.perf_counter() - t0
    # Copy now: CUDA-graph backends (reduce-overhead, ort-cuda-graph) reuse their output buffer,
    # so the next call would overwrite the output parity is about to check.
    first = runner.to_cpu(first).clone()  # to_cpu of a CPU fp32 tensor is the same tensor
    for i in range(warmup):
        runner.run(xs[i % len(xs)])
    runner.sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - start < min_time):
        x = xs[len(times) % len(xs)]
        if cuda_events:
            ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            runner.sync()
            ev0.record()
            runner.run(x)
            ev1.record()
            ev1.synchronize()
            times.append(ev0.elapsed_time(ev1) / 1e3)
        else:
            runner.sync()
            t = time.perf_counter()
            runner.run(x)
            runner.sync()
            times.append(runner.last_run_s if own else time.perf_counter() - t)
    arr = np.asarray(times)
    return first, {
        "first_s": first_s, "times": arr, "timer": "cuda-events" if cuda_events else (runner.clock or "perf_counter+sync"),
        "median": float(np.median(arr)), "p90": float(np.percentile(arr, 90)),
        "p99": float(np.percentile(arr, 99)), "min": float(arr.min()), "mean": float(arr.mean()),
    }


def make_inputs(batch: int, latent: int, n: int, seed: int) -> list[torch.Tensor]:
    """n distinct float32 CPU z's (the first one is the parity input), within INPUT_BUDGET_BYTES."""
    n = max(1, min(n, INPUT_BUDGET_BYTES // max(1, batch * latent * 4)))
    return list(noise.latent(n * batch, seed, latent).split(batch))


PARITY_ROWS = 2048  # large batches: parity on the first and last 2048 samples (rows are independent)


def parity_rows(batch: int) -> torch.Tensor | None:
    """Indices of the samples whose output is checked; None = all of them."""
    if batch <= 2 * PARITY_ROWS:
        return None
    return torch.cat([torch.arange(PARITY_ROWS), torch.arange(batch - PARITY_ROWS, batch)])


def compare(reference: torch.Tensor, out: torch.Tensor, dtype: str) -> dict[str, Any]:
    """A backend's first output vs eager fp32 on the same z, with gantool.verify.compare's per-dtype tolerance."""
    from gantool.verify.compare import TOLERANCES
    from gantool.verify.compare import compare as parity_compare

    tol = TOLERANCES[dtype]
    if tuple(out.shape) != tuple(reference.shape):
        return {"passed": False, "atol": tol.atol, "error": f"output shape {tuple(out.shape)}, eager gives {tuple(reference.shape)}"}
    res, failures = parity_compare(reference, out, tol)
    d = {"passed": res.passed, "max_abs_err": res.max_abs, "max_rel_err": res.max_rel, "atol": tol.atol,
         "rtol": tol.rtol, "nonfinite": res.nonfinite}
    if failures:
        d["error"] = str(failures[0])
    return d


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    msg = str(e).lower()
    return any(s in msg for s in ("out of memory", "can't allocate memory", "failed to allocate memory",
                                  "bad_alloc", "cannot allocate memory"))
