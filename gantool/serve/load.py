"""The load test behind `gantool bench --backends triton --concurrency C`: C requests kept in flight
with tritonclient's asyncio gRPC client for a bounded time and count, every answer checked against
eager fp32 for its own z, and Triton's statistics extension read before and after.

Each request carries `batch` rows drawn from a pool of distinct z's (POOL_REQUESTS requests' worth,
reused round-robin) whose eager outputs are computed before the load starts, so every answer is
checked against the reference of its own z while the load runs (a few µs per answer; none are
sampled out): its shape, NaN/Inf, and the dtype's elementwise tolerance. The first answer for each
pooled z is kept (LoadResult.pooled; topped up after the load to >= BULK_MIN_SAMPLES z) so the row
can be judged like an in-process one: the dtype's bulk bounds (SQNR, p99.9, mean) over them all.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

POOL_REQUESTS = 256  # distinct z's per (batch, concurrency) level, reused round-robin
MAX_CONSECUTIVE_ERRORS = 3  # per client coroutine: a dead server ends the level, not the time budget
STATS_KEYS = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass
class LoadSpec:
    url: str
    model: str
    batch: int
    concurrency: int
    input_name: str  # the served model's names (its signature), as the server reports them
    output_name: str
    duration_s: float = 5.0
    max_requests: int = 200_000
    timeout_s: float = 10.0  # per request (client_timeout); a dead or hung server errors within it
    warmup_requests: int = 8
    bulk_min_rows: int = 64  # gantool.bench.parity.BULK_MIN_SAMPLES


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    first_error: str = ""
    wrong: int = 0  # answers outside the tolerance (or of the wrong shape)
    checked: int = 0
    max_abs_err: float = 0.0
    nonfinite: int = 0
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    server: dict[str, Any] = field(default_factory=dict)
    pooled: dict[int, np.ndarray] = field(default_factory=dict)  # pool index -> the first answer for it


def z_pool(batch: int, latent: int, seed: int, n: int = POOL_REQUESTS) -> np.ndarray:
    """(n, batch, latent) float32: the seeded z's (gantool.noise) the requests carry."""
    from gantool import noise

    return noise.latent(n * batch, seed, latent).numpy().reshape(n, batch, latent)


def run_load(spec: LoadSpec, zs: np.ndarray, refs: np.ndarray, atol: float, rtol: float) -> LoadResult:
    """Drive the server for spec.duration_s (or spec.max_requests); statistics diffed around it."""
    res = LoadResult()
    before = server_stats(spec.url, spec.model, spec.timeout_s)
    asyncio.run(_drive(spec, zs, refs, atol, rtol, res))
    after = server_stats(spec.url, spec.model, spec.timeout_s)
    if before is not None and after is not None:
        res.server = stats_delta(before, after)
    return res


async def _drive(spec: LoadSpec, zs: np.ndarray, refs: np.ndarray, atol: float, rtol: float, res: LoadResult) -> None:
    from tritonclient.grpc import InferRequestedOutput
    from tritonclient.grpc.aio import InferenceServerClient, InferInput

    from gantool.errors import first_line

    client = InferenceServerClient(spec.url)
    tol = atol + rtol * np.abs(refs)
    inputs = []
    for z in zs:
        inp = InferInput(spec.input_name, list(z.shape), "FP32")
        inp.set_data_from_numpy(np.ascontiguousarray(z))
        inputs.append(inp)
    outputs = [InferRequestedOutput(spec.output_name)]
    counter = iter(range(spec.max_requests))

    async def one(i: int) -> np.ndarray:
        result = await client.infer(spec.model, [inputs[i]], outputs=outputs, client_timeout=spec.timeout_s)
        return result.as_numpy(spec.output_name)

    def check(i: int, out: np.ndarray) -> None:
        res.checked += 1
        if out is None or out.shape != refs[i].shape:
            res.wrong += 1
            return
        if i not in res.pooled:
            res.pooled[i] = out  # for the bulk bounds over the row's answers (load_rows)
        diff = np.abs(out - refs[i])
        finite = np.isfinite(out)
        res.nonfinite += int((~finite).sum())
        res.max_abs_err = max(res.max_abs_err, float(np.nanmax(diff)) if finite.any() else float("inf"))
        if not (finite.all() and (diff <= tol[i]).all()):
            res.wrong += 1

    async def worker(stop_at: float) -> None:
        bad_in_a_row = 0
        for n in counter:
            if time.perf_counter() >= stop_at:
                return
            i = n % len(inputs)
            t0 = time.perf_counter()
            try:
                out = await one(i)
            except Exception as e:  # noqa: BLE001 - tritonclient raises its own type; a timeout is one too
                res.errors += 1
                res.first_error = res.first_error or first_line(e)
                bad_in_a_row += 1
                if bad_in_a_row >= MAX_CONSECUTIVE_ERRORS:
                    return
                continue
            res.latencies_s.append(time.perf_counter() - t0)
            res.requests += 1
            bad_in_a_row = 0
            check(i, out)

    try:
        for i in range(min(spec.warmup_requests, len(inputs))):  # untimed; the first batches build ORT's caches
            try:
                check(i, await one(i))
            except Exception as e:  # noqa: BLE001
                res.errors += 1
                res.first_error = res.first_error or first_line(e)
                return
        res.checked = res.wrong = 0
        res.max_abs_err, res.nonfinite = 0.0, 0
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(t0 + spec.duration_s) for _ in range(spec.concurrency)))
        res.wall_s = time.perf_counter() - t0
        # untimed top-up: the bulk bounds need >= bulk_min_rows z, however few requests the load sent
        for i in range(len(inputs)):
            if sum(a.shape[0] for a in res.pooled.values()) >= spec.bulk_min_rows or res.errors:
                break
            if i not in res.pooled:
                try:
                    out = await one(i)
                except Exception as e:  # noqa: BLE001
                    res.errors += 1
                    res.first_error = res.first_error or first_line(e)
                    break
                if out is not None and out.shape == refs[i].shape:
                    res.pooled[i] = out
    finally:
        await client.close()


def server_stats(url: str, model: str, timeout_s: float) -> dict[str, Any] | None:
    """Triton's statistics extension for `model` (cumulative since load), or None when it cannot be read."""
    import tritonclient.grpc as grpcclient

    try:
        client = grpcclient.InferenceServerClient(url)
        try:
            doc = client.get_inference_statistics(model, as_json=True, client_timeout=timeout_s)
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - a dead server: the load's own errors say so
        return None
    stats = (doc.get("model_stats") or [{}])[0]
    return stats


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the server did during the level: per-request queue and compute means (ms), the number
    of executions, the mean batch the dynamic batcher formed, and a histogram of batch sizes."""
    def num(doc: dict[str, Any], *path: str) -> int:
        for p in path:
            doc = doc.get(p, {}) if isinstance(doc, dict) else {}
        return int(doc or 0)

    n = num(after, "inference_stats", "success", "count") - num(before, "inference_stats", "success", "count")
    out: dict[str, Any] = {"server_requests": n}
    for key in ("success", *STATS_KEYS):
        ns = num(after, "inference_stats", key, "ns") - num(before, "inference_stats", key, "ns")
        out[f"{'request' if key == 'success' else key}_ms"] = ns / n / 1e6 if n else None
    execs = num(after, "execution_count") - num(before, "execution_count")
    inferred = num(after, "inference_count") - num(before, "inference_count")
    out["executions"] = execs
    out["mean_batch"] = inferred / execs if execs else None
    hist: dict[int, int] = {}
    old = {int(b["batch_size"]): num(b, "compute_infer", "count") for b in before.get("batch_stats", [])}
    for b in after.get("batch_stats", []):
        size = int(b["batch_size"])
        count = num(b, "compute_infer", "count") - old.get(size, 0)
        if count:
            hist[size] = count
    out["batch_sizes"] = {str(k): hist[k] for k in sorted(hist)}
    return out


def summarize(spec: LoadSpec, res: LoadResult, percentiles: Callable[[list[float]], dict[str, float | None]]) -> dict[str, Any]:
    """The JSON a load row carries beside its samples/s."""
    wall = res.wall_s or spec.duration_s
    return {"concurrency": spec.concurrency, "request_batch": spec.batch, "duration_s": round(wall, 3),
            "requests": res.requests, "requests_per_s": res.requests / wall if wall else None,
            "errors": res.errors, "first_error": res.first_error or None, "checked": res.checked,
            "wrong": res.wrong, "nonfinite": res.nonfinite, "max_abs_err": res.max_abs_err,
            "client_latency_ms": percentiles(res.latencies_s), "timeout_s": spec.timeout_s, **res.server}
