"""Bench rows of mode "load" (`--backends triton --concurrency C`): one row per (request batch,
concurrency), in the same table/JSON/plot as the in-process rows. samples/s is what the server
answered per wall second; median/p90/p99 are the client's request latencies; the row's `load`
holds requests/s, errors, answers checked, Triton's queue/compute times and the batches formed."""
from __future__ import annotations

from typing import Any

import numpy as np

from gantool.bench.timing import BenchResult

POOL_ROWS = 16_384  # z rows whose eager output is held for checking (64 MB of 1x28x28 images)


def load_rows(bench: Any, runner: Any, precision: str, art: str | None) -> list[BenchResult]:
    cfg = bench.cfg
    rows = []
    for b in cfg.batch_sizes:
        for c in cfg.concurrency:
            bench.progress(f"triton load: batch {b}, concurrency {c}, {cfg.duration:g} s")
            rows.append(load_row(bench, runner, precision, b, c, art))
    return rows


def load_row(bench: Any, runner: Any, precision: str, batch: int, concurrency: int, art: str | None) -> BenchResult:
    import torch

    from gantool.bench.parity import BULK_MIN_SAMPLES
    from gantool.errors import first_line
    from gantool.serve.load import POOL_REQUESTS, LoadSpec, run_load, summarize, z_pool
    from gantool.verify.compare import TOLERANCES

    cfg = bench.cfg
    precision = runner.info.dtype  # the served model's (its config's gantool.dtype), judged by its bounds
    row = BenchResult(runner.info.backend, precision, "remote", batch, "ok", artifact=art, mode="load",
                      timer="perf_counter", warmup=8)
    row.concurrency = concurrency  # type: ignore[attr-defined]
    row.server = dict(runner.info.extra)
    tol = TOLERANCES[precision]
    spec = LoadSpec(url=cfg.url, model=runner.model, batch=batch, concurrency=concurrency,
                    duration_s=cfg.duration, input_name=runner.input_name, output_name=runner.output_name,
                    bulk_min_rows=BULK_MIN_SAMPLES)
    try:
        latent = runner.info.latent_dim
        zs = z_pool(batch, latent, cfg.seed, max(4, min(POOL_REQUESTS, POOL_ROWS // batch)))
        ref = bench.reference(torch.from_numpy(zs.reshape(-1, latent)))
        refs = ref.numpy().reshape(zs.shape[0], batch, *runner.info.img_shape)
        res = run_load(spec, zs, refs, tol.atol, tol.rtol)
    except Exception as e:  # noqa: BLE001 - one row failing must not stop the others
        row.status, row.reason = "error", first_line(e)
        return row
    row.load = summarize(spec, res, lambda t: _percentiles(t, cfg.percentiles))  # type: ignore[attr-defined]
    bulk = judge_pooled(res.pooled, refs, tol)
    row.parity = {"passed": res.checked > 0 and res.wrong == 0 and bulk.get("passed", False),
                  "max_abs_err": res.max_abs_err if res.checked else None,
                  "atol": tol.atol, "rtol": tol.rtol, "nonfinite": res.nonfinite,
                  "p999_abs_err": bulk.get("p999_abs"), "sqnr_db": bulk.get("sqnr_db"), "bulk": bulk,
                  "checked": f"{res.checked} of {res.requests} answers, each against eager fp32 for its own z "
                             f"(shape, NaN/Inf, {precision} atol/rtol); {precision} bulk bounds over the "
                             f"{bulk.get('z', 0)} z of the first answer per pooled request"}
    if res.latencies_s:
        t = np.asarray(res.latencies_s)
        row.repeats = len(t)
        row.median_ms, row.mean_ms, row.min_ms = (float(np.median(t)) * 1e3, float(t.mean()) * 1e3,
                                                  float(t.min()) * 1e3)
        row.p90_ms = float(np.percentile(t, 90)) * 1e3 if len(t) >= 10 else None
        row.p99_ms = float(np.percentile(t, 99)) * 1e3 if len(t) >= 100 else None
        row.percentiles_ms = {k: (None if v is None else v) for k, v in row.load["client_latency_ms"].items()}
        row.samples_per_s = res.requests * batch / res.wall_s if res.wall_s else None
    if res.errors:
        row.status = "error"
        row.reason = (f"{res.errors} of {res.errors + res.requests} requests failed (timeout {spec.timeout_s:g} s): "
                      f"{res.first_error}")
    elif not res.requests:
        row.status, row.reason = "error", "no request was answered"
    elif res.wrong:
        row.status = "parity-failed"
        row.reason = f"{res.wrong} of {res.checked} answers differ from eager (max |diff| {res.max_abs_err:.3g})"
    elif not bulk.get("passed"):
        row.status = "parity-failed"
        row.reason = f"served {precision} answers, pooled ({bulk.get('z', 0)} z): {bulk.get('error')}"
    row.ranked = row.status == "ok"
    return row


def judge_pooled(pooled: dict[int, np.ndarray], refs: np.ndarray, tol: Any) -> dict[str, Any]:
    """The served dtype's bulk bounds (gantool.verify.compare.bulk_stats: p99.9, mean, SQNR; the ones
    verify and in-process bench rows use) over the row's pooled answers against eager fp32."""
    import torch

    from gantool.bench.parity import BULK_MIN_SAMPLES
    from gantool.verify.compare import bulk_stats

    if not pooled:
        return {"passed": False, "z": 0, "error": "no answer to judge"}
    keys = sorted(pooled)
    out = torch.from_numpy(np.concatenate([pooled[k] for k in keys]).astype(np.float32))
    ref = torch.from_numpy(np.concatenate([refs[k] for k in keys]).astype(np.float32))
    if out.shape[0] < BULK_MIN_SAMPLES:
        return {"passed": False, "z": out.shape[0],
                "error": f"only {out.shape[0]} z answered, the bulk bounds need {BULK_MIN_SAMPLES}"}
    stats, broken = bulk_stats(ref, out, tol)
    return {**stats, "z": out.shape[0], "passed": not broken, **({"error": "; ".join(broken)} if broken else {})}


def _bulk_said(bulk: dict[str, Any]) -> str:
    if not bulk:
        return "not judged"
    sqnr = "inf" if bulk.get("sqnr_db") is None else f"{bulk['sqnr_db']:.1f} dB"
    return f"{'pass' if bulk.get('passed') else 'FAIL'} over {bulk.get('z', 0)} z (SQNR {sqnr})"


def _percentiles(times: list[float], ps: list[float]) -> dict[str, float | None]:
    """Client latency percentiles in ms; None until there are enough requests (p99 needs 100)."""
    from gantool.bench.stats import percentile_min_n

    n = len(times)
    return {f"p{p:g}": (float(np.percentile(times, p)) * 1e3 if n and n >= percentile_min_n(p) else None) for p in ps}


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per load row: throughput, latency, errors, answers checked, where the server's time
    went (Triton's statistics, per request), the batches it formed, and the in-process ORT row at
    the batch size the batcher formed (same run), when there is one."""
    from gantool.bench.report import fmt_rate

    out = []
    for r in report["results"]:
        load = r.get("load")
        if r.get("mode") != "load" or not load:
            continue
        lat = load["client_latency_ms"]
        ms = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
        line = (f"triton c{load['concurrency']} b{r['batch']}: {fmt_rate(r['samples_per_s'])} samples/s, "
                f"{fmt_rate(load['requests_per_s'])} requests/s, client p50/p90/p99 "
                f"{'/'.join(ms(lat.get(k)) for k in ('p50', 'p90', 'p99'))} ms, {load['errors']} errors, "
                f"{load['checked']}/{load['requests']} answers checked ({load['wrong']} wrong), served "
                f"{r['precision']}: bulk bounds {_bulk_said((r.get('parity') or {}).get('bulk') or {})}")
        if load.get("executions"):
            sizes = ", ".join(f"{k}x{v}" for k, v in load["batch_sizes"].items())
            line += (f"; server per request: queue {ms(load['queue_ms'])} ms, compute {ms(load['compute_infer_ms'])} ms "
                     f"(+ in {ms(load['compute_input_ms'])} / out {ms(load['compute_output_ms'])}), whole "
                     f"{ms(load['request_ms'])} ms; {load['executions']} batches, mean {load['mean_batch']:.1f} "
                     f"[size x count: {sizes}]")
            ref = in_process_row(report, load["mean_batch"])  # Triton counts a batch in samples, not requests
            if ref is not None and r["samples_per_s"]:
                line += (f"; {100 * r['samples_per_s'] / ref['samples_per_s']:.0f}% of in-process {ref['backend']} "
                         f"{ref['precision']} b{ref['batch']} ({fmt_rate(ref['samples_per_s'])} samples/s)")
        out.append(line)
    return out


def in_process_row(report: dict[str, Any], formed: float) -> dict[str, Any] | None:
    """The ranked in-process ort fp32 latency row whose batch is nearest (in log scale) the mean batch formed."""
    import math

    rows = [r for r in report["results"] if r["backend"] == "ort" and r["precision"] == "fp32" and r["ranked"]
            and r.get("mode") == "latency"]
    if not rows or not formed:
        return None
    return min(rows, key=lambda r: abs(math.log(r["batch"]) - math.log(formed)))
