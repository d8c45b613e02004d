"""Timing rows: one row on its own (sequential order), or every loaded row of a batch size in interleaved
rounds; then parity (untimed) and the row's statistics. Mixed into gantool.bench.suite.Bench."""
from __future__ import annotations

import gc
from dataclasses import dataclass

import numpy as np
import torch

from gantool.backends import get as get_backend
from gantool.bench.backends import peak_dtype
from gantool.bench.conditions import MemoryProbe, matmul_precision
from gantool.bench.gate import REFERENCE
from gantool.bench.stats import summarize
from gantool.bench.parity import check_parity, parity_batch, parity_rows
from gantool.bench.timing import BenchResult, Measured, Timer, make_inputs, measure, _is_oom
from gantool.errors import first_line
from gantool.runners import Runner
from gantool.bench.roofline import achieved_gflops

# What a runner reports about how it ran that a reader needs beside the number (OpenVINO's precision hint...).
RUNTIME_KEYS = ("inference_precision_hint", "openvino", "quantization")


@dataclass
class Loaded:
    """A (backend, precision) whose runner loaded: what each of its rows records besides its timing."""

    backend: str
    precision: str
    dev: str
    runner: Runner
    art: str | None
    load_s: float
    support: str | None

    def annotate(self, row: BenchResult) -> BenchResult:
        row.load_s = self.load_s
        row.engine_build_s = self.runner.info.extra.get("engine_build_s")
        row.precision_support = self.support
        row.runtime = {k: v for k, v in self.runner.info.extra.items() if k in RUNTIME_KEYS} or row.runtime
        if get_backend(self.backend).remote:
            row.server = dict(self.runner.info.extra)
        return row

    def close(self) -> None:
        del self.runner
        gc.collect()


def _matches(pattern: str, backend: str, precision: str, batch: int) -> bool:
    parts = (pattern.split(":") + ["*", "*"])[:3]
    return all(p in ("*", "", v) for p, v in zip(parts, (backend, precision, str(batch))))



class RowTiming:
    """Bench's row methods; the Bench supplies cfg, where, progress, peaks, interleaved, reference()."""

    def _inputs(self, runner: Runner, batch: int) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor]:
        """The row's rotated z's, the indices parity checks, and eager's output for them."""
        zs = make_inputs(batch, runner.info.latent_dim, self.cfg.n_inputs, self.cfg.seed)
        idx = parity_rows(batch)
        return zs, idx, self.reference(zs[0] if idx is None else zs[0][idx])

    @staticmethod
    def _row(runner: Runner, backend: str, precision: str, dev: str, batch: int, art: str | None,
             mode: str) -> BenchResult:
        """A row about to be timed, with the options and runtime its runner reports."""
        return BenchResult(backend, precision, dev, batch, "ok", artifact=art, mode=mode,
                           options=dict(runner.info.extra.get("options") or {}), runtime=runner.info.extra.get("runtime"))

    def measure_row(self, runner: Runner, backend: str, precision: str, dev: str, batch: int,
                    art: str | None, mode: str = "latency") -> BenchResult:
        row = self._row(runner, backend, precision, dev, batch, art, mode)
        probe = MemoryProbe(dev, backend)
        try:
            zs, idx, ref = self._inputs(runner, batch)
            probe.start()
            with matmul_precision(precision) as mm:
                m = measure(runner, zs, self.cfg.warmup, self.cfg.stop_rule(), mode, self.cfg.streams)
            row.options["float32_matmul_precision"] = mm
            row.peak_mem_mb, row.mem_source = probe.stop()
            self._judge(row, runner, m, idx, ref, zs)
        except Exception as e:  # noqa: BLE001 - one row failing must not stop the others
            return self._failed(row, e)
        return self._finish(row, m)

    def measure_group(self, group: list["Loaded"], mode: str, batch: int) -> list[BenchResult]:
        """Interleaved order (the default, issue 24): every loaded row of this mode and batch size
        warmed up, then timed in rounds (gantool.bench.rounds), each row a short slice per round in a
        fresh seeded order; each row's speed over eager fp32's comes from the paired rounds."""
        from gantool.bench.rounds import interleave, paired_ratio

        rows, timers, ctx = [], [], []
        probe = MemoryProbe(self.where, "interleaved")
        probe.start()
        for L in group:
            row = self._row(L.runner, L.backend, L.precision, L.dev, batch, L.art, mode)
            self.progress(f"{L.backend} {L.precision} {mode} batch {batch}: warm-up")
            try:
                zs, idx, ref = self._inputs(L.runner, batch)
                with matmul_precision(L.precision) as mm:
                    timer = Timer(L.runner, zs, self.cfg.warmup, mode, self.cfg.streams,
                                  context=lambda p=L.precision: matmul_precision(p))
                row.options["float32_matmul_precision"] = mm
            except Exception as e:  # noqa: BLE001 - this row fails; the others are still timed
                rows.append(L.annotate(self._failed(row, e)))
                continue
            timers.append(timer)
            ctx.append((L, row, zs, idx, ref))
        self.progress(f"{mode} batch {batch}: {len(timers)} rows in interleaved rounds")
        try:
            rounds = interleave(timers, self.cfg.stop_rule(), self.cfg.seed + batch, self.cfg.slice_s)
        except Exception as e:  # noqa: BLE001 - a row that breaks mid-round fails them all, said so
            return rows + [L.annotate(self._failed(row, e)) for L, row, *_ in ctx]
        mem = probe.stop()
        ref_i = next((i for i, (L, *_) in enumerate(ctx) if (L.backend, L.precision) == REFERENCE), None)
        self.interleaved.append({"mode": mode, "batch": batch, "seed": self.cfg.seed + batch,
                                 "slice_s": self.cfg.slice_s, "rows": [f"{L.backend} {L.precision}" for L, *_ in ctx],
                                 "rounds": len(rounds), "orders": [r["order"] for r in rounds]})
        for i, ((L, row, zs, idx, ref), timer) in enumerate(zip(ctx, timers)):
            m = timer.measured(self.cfg.stop_rule())
            row.peak_mem_mb = mem[0]
            row.mem_source = None if mem[1] is None else f"{mem[1]}; shared by the rows interleaved at this batch"
            try:
                self._judge(row, L.runner, m, idx, ref, zs)
            except Exception as e:  # noqa: BLE001
                rows.append(L.annotate(self._failed(row, e)))
                continue
            row = self._finish(row, m)
            if ref_i is not None and i != ref_i:
                row.ratio = paired_ratio(rounds, ref_i, i)
            rows.append(L.annotate(row))
        return rows

    def _judge(self, row: BenchResult, runner: Runner, m: Measured, idx: torch.Tensor | None, ref: torch.Tensor,
               zs: list[torch.Tensor]) -> None:
        """Parity of the row's first output (untimed; a small batch's bulk judged on >= 64 z), and its profile."""
        backend, precision, batch = row.backend, row.precision, row.batch
        with matmul_precision(precision):
            bulk = parity_batch(runner, self.reference, batch, precision, self.cfg.seed)
        row.parity = check_parity(ref, m, idx, batch, precision, bulk)
        if self.cfg.profile_dir and any(_matches(p, backend, precision, batch) for p in self.cfg.profile_rows or ["*"]):
            with matmul_precision(precision):
                row.profile = [str(p) for p in runner.profile_call(zs[0], self.cfg.profile_dir,
                                                                    f"{backend}-{precision}-{row.mode}-b{batch}")]

    def _failed(self, row: BenchResult, e: Exception) -> BenchResult:
        row.status = "oom" if _is_oom(e) else "error"
        row.reason = first_line(e)
        self._free()
        return row

    def _finish(self, row: BenchResult, m: Measured) -> BenchResult:
        self.fill(row, m, row.batch)
        if self.cfg.peak_probe and not get_backend(row.backend).remote:
            self.peaks.get(row.device, peak_dtype(row.precision))  # probe now; rows get their % of peak at the end
        if not row.parity["passed"]:
            row.status = "parity-failed"
            row.reason = row.parity.get("error") or (
                f"max |diff| {row.parity['max_abs_err']:.3g} > atol {row.parity['atol']:.3g}"
                + (f", {row.parity['nonfinite']} non-finite" if row.parity["nonfinite"] else ""))
        row.ranked = row.status == "ok"
        return row

    def fill(self, row: BenchResult, m: Measured, batch: int) -> None:
        s = summarize(m.times, self.cfg.percentiles)
        ms = lambda v: None if v is None else v * 1e3  # noqa: E731
        row.first_call_ms, row.capture_ms = m.first_s * 1e3, ms(m.capture_s)
        row.warmup, row.repeats, row.timer = self.cfg.warmup, s["n"], m.timer
        row.calls_per_sample, row.streams, row.ci_met = m.calls_per_sample, m.streams, m.ci_met
        row.median_ms, row.ci_low_ms, row.ci_high_ms = s["median"] * 1e3, ms(s["ci_low"]), ms(s["ci_high"])
        row.ci_rel, row.iqr_ms, row.min_ms, row.mean_ms = s["ci_rel"], s["iqr"] * 1e3, s["min"] * 1e3, s["mean"] * 1e3
        row.percentiles_ms = {k: ms(v) for k, v in s["percentiles"].items()}
        row.percentile_notes = s["percentile_notes"]
        row.p90_ms, row.p99_ms = ms(_pct(m.times, 90, s["n"])), ms(_pct(m.times, 99, s["n"]))
        if row.p99_ms is None:
            row.percentile_notes.setdefault("p99", f"n={s['n']} < 100 samples")
        if self.cfg.raw_times:
            row.times_ms = [float(t) * 1e3 for t in m.times]
        row.samples_per_s = batch / s["median"]
        row.gflops = achieved_gflops(row.samples_per_s, self.flops)

    def _free(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

def _pct(times: np.ndarray, p: float, n: int) -> float | None:
    from gantool.bench.stats import percentile_min_n

    return float(np.percentile(times, p)) if n >= percentile_min_n(p) else None


