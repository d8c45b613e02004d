"""A bench run: resolve backends x precisions x modes x batch sizes, time each row, rank them."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from gantool.backends import Backend, default_backends
from gantool.backends import get as get_backend
from gantool.bench.backends import (check_requested, default_precisions, find_artifact, guard, missing_reason,
                                    peak_dtype, precision_reason, precision_support, read_artifacts, row_device)
from gantool.bench.conditions import matmul_precision
from gantool.bench.machine import environment
from gantool.bench.roofline import PeakCache, flops_per_sample
from gantool.bench.rows import Loaded, RowTiming
from gantool.bench.watch import MachineWatch
from gantool.bench.timing import MODES, BenchResult, StopRule, _is_oom
from gantool.device import INT8_ONLY_ONNX, PRECISIONS, resolve_device
from gantool.errors import ConfigError, DeviceError, GantoolError, first_line
from gantool.runners import Runner, load_runner
from gantool.source import GeneratorSource, generator_source, recorded_checkpoint, source_of_manifest

FAILED = ("error", "parity-failed")  # statuses that make `gantool bench` exit non-zero


@dataclass
class BenchConfig:
    """What to measure. Empty backends/precisions mean the defaults for the device."""

    checkpoint: "Path | GeneratorSource | None" = None  # a gantool checkpoint or a user generator (gantool.source)
    exported: Path | None = None
    backends: list[str] = field(default_factory=list)
    precisions: list[str] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=lambda: [1, 64, 1024, 4096])
    modes: list[str] = field(default_factory=lambda: ["latency"])
    device: str = "auto"
    warmup: int = 5
    min_time: float = 0.5  # seconds of timed samples per row, at least
    max_time: float = 10.0  # the cap: stop here even if the CI is still wider than ci_target
    min_repeats: int = 10
    repeats: int | None = None  # exactly this many samples (no CI rule)
    ci_target: float = 0.02  # stop once the median's 95% CI is within ±2%
    max_repeats: int = 1_000_000
    percentiles: list[float] = field(default_factory=lambda: [50.0, 90.0, 99.0])
    raw_times: bool = False
    streams: int = 2  # throughput mode on CUDA: lanes, each on its own stream
    threads: int | None = None
    inter_op_threads: int | None = None
    graph_opt_level: str | None = None
    ort_options: dict[str, str] = field(default_factory=dict)
    cache_dir: Path | None = None  # TensorRT engine + timing caches
    profile_dir: Path | None = None
    profile_rows: list[str] = field(default_factory=list)  # "backend:precision:batch" globs; empty = all
    n_inputs: int = 4  # distinct prepared z's, rotated so caches don't flatter
    peak_probe: bool = True
    seed: int = 0
    url: str | None = None  # Triton server's gRPC HOST:PORT (backend triton)
    triton_model: str | None = None  # None: the one ready model the server holds (triton_runner.find_model)
    concurrency: list[int] = field(default_factory=list)  # triton: load-test rows at these concurrencies
    duration: float = 5.0  # seconds of load per (batch, concurrency) row
    # Rows of one batch size timed in interleaved rounds (gantool.bench.rounds), each a slice of about
    # slice_s per round in a seeded random order; False: each row's samples all at once, row after row.
    interleave: bool = True
    slice_s: float = 0.1

    def stop_rule(self) -> StopRule:
        return StopRule(self.min_repeats, self.min_time, max(self.max_time, self.min_time), self.ci_target,
                        self.repeats, self.max_repeats)


class Bench(RowTiming):
    """One bench run: resolves backends, keeps the eager fp32 reference and the peaks per run;
    the rows themselves are timed by RowTiming (gantool.bench.rows)."""

    def __init__(self, cfg: BenchConfig, progress: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.progress = progress or (lambda msg: None)
        try:
            self.device = resolve_device(cfg.device)
        except GantoolError:
            # --device cuda without CUDA: every row says unavailable; nothing is timed on CPU.
            self.device = torch.device(cfg.device)
        self.dev = self.device.type
        # Rows and runners use the indexed device when one is given (cuda:LOCAL_RANK under torchrun).
        self.where = str(self.device) if self.device.index is not None else self.dev
        self.explicit = bool(cfg.backends)
        self.backends = cfg.backends or default_backends(self.dev)
        for b in self.backends:
            get_backend(b)  # an unknown name: one line with the choices
        for p in cfg.precisions:
            if p not in PRECISIONS:
                raise ConfigError(f"unknown precision {p!r}; choose from: {', '.join(PRECISIONS)}")
        for m in cfg.modes:
            if m not in MODES:
                raise ConfigError(f"unknown mode {m!r}; choose from: {', '.join(MODES)}")
        if any(b <= 0 for b in cfg.batch_sizes) or not cfg.batch_sizes:
            raise ConfigError(f"batch sizes must be > 0, got {cfg.batch_sizes}")
        if cfg.ort_options:
            from gantool.runners.ort_options import check_applies

            check_applies(cfg.ort_options, self.backends)
        self.entries, self.manifest = read_artifacts(cfg.exported)
        self.precisions = cfg.precisions or default_precisions(self.dev, self.entries)
        if cfg.precisions == ["int8"] and not any(get_backend(b).int8 for b in self.backends):
            raise ConfigError(f"--precisions int8 with backends {', '.join(self.backends)}: {INT8_ONLY_ONNX}")
        self.source = generator_source(cfg.checkpoint) if cfg.checkpoint is not None else self._manifest_source()
        check_requested(self.backends, self.explicit, self.entries, cfg.exported, self.source)
        if self.source is None:
            raise ConfigError("bench checks every backend against eager fp32 and needs the source generator: "
                              "pass --checkpoint RUN or --generator FILE.py:CALLABLE")
        self.peaks = PeakCache()
        self._ref_runner: Runner | None = None
        self._refs: dict[tuple, torch.Tensor] = {}
        self.interleaved: list[dict[str, Any]] = []  # each interleaved (mode, batch): its rows, rounds, orders

    def _served_precisions(self) -> list[str]:
        """A served model's rows: --precisions when given (a precision it does not serve is a skipped row
        saying what it serves), else the one it serves (its config's gantool.dtype), never the local
        device's defaults (a server is not this CPU: no bf16 row because this CPU multiplies bf16)."""
        if self.cfg.precisions:
            return list(self.cfg.precisions)
        from gantool.runners.triton_runner import probe_dtype

        return [probe_dtype(self.cfg.url, self.cfg.triton_model) or "fp32"] if self.cfg.url else ["fp32"]

    def _manifest_source(self) -> GeneratorSource | None:
        """The generator the artifacts were exported from: a checkpoint still on disk, or the user's
        generator re-imported from the recorded path (one line when it is gone or changed)."""
        src = recorded_checkpoint(self.manifest)
        if src is not None and not Path(src).exists():
            return None  # a checkpoint moved away: --checkpoint names it (the error below says so)
        return source_of_manifest(self.manifest)

    def reference(self, z: torch.Tensor) -> torch.Tensor:
        """Eager IEEE fp32 output for z, on the bench device when it works there, else on CPU.
        Every backend sees the same first z at a batch size, so each is computed once."""
        key = (z.shape[0], float(z[0, 0]), float(z[-1, -1]))
        if key not in self._refs:
            if self._ref_runner is None:
                dev = self.where if self.dev != "cuda" or torch.cuda.is_available() else "cpu"
                self._ref_runner = load_runner(self.source, "eager", device=dev, dtype="fp32")
            with matmul_precision("fp32"):
                self._refs[key] = self._ref_runner(z)  # <= 4096 rows (parity_rows): small
        return self._refs[key]

    def _load_kwargs(self, spec: Backend) -> dict[str, Any]:
        """The bench options a backend takes (the table's `options`), as its loader's keywords."""
        c, kw = self.cfg, {}
        if "threads" in spec.options and c.threads:
            kw["threads"] = c.threads
        if "ort_session" in spec.options:
            from gantool.runners.onnx_runner import SessionSettings

            kw["settings"] = SessionSettings(c.threads if "threads" in spec.options else None, c.inter_op_threads,
                                             c.graph_opt_level, dict(c.ort_options))
        if "trt" in spec.options:
            kw.update(trt_batch_sizes=list(c.batch_sizes), cache_dir=c.cache_dir)
        return kw

    def load(self, backend: str, precision: str) -> "Loaded | list[BenchResult]":
        """The row's runner, loaded once for every mode and batch size; or its rows saying why not
        (failures become rows, never exceptions)."""
        spec = get_backend(backend)
        dev = row_device(spec, self.where)
        support = precision_support(dev, precision)
        rows = lambda status, reason, art=None: [BenchResult(backend, precision, dev, b, status, reason, art, mode=m,  # noqa: E731
                                                             precision_support=support)
                                                 for m in self.cfg.modes for b in self.cfg.batch_sizes]
        why = precision_reason(precision, dev)
        if why:
            return rows(*why)
        source: Any = self.source
        stored = "fp32" if precision == "tf32" else precision  # tf32 runs the fp32 weights
        if spec.format is not None:
            art = find_artifact(self.entries, self.cfg.exported, spec.format, stored, dev) if self.entries else None
            if art is None:
                return rows("skipped", missing_reason(spec.format, stored, self.cfg.exported, dev))
            source = art
        art_s = str(source) if spec.format else None
        opts = self._load_kwargs(spec)
        if spec.remote:
            if not self.cfg.url:
                return rows("unavailable", "no server given: pass --url HOST:PORT (a Triton server's gRPC port)")
            source = self.cfg.url
            opts = {"model": self.cfg.triton_model, "signature": self.manifest.signature}
            art_s = f"{self.cfg.url}/{self.cfg.triton_model or '(the ready model)'}"
        t0 = time.perf_counter()
        try:
            with matmul_precision(precision):
                # ONNX Runtime sessions take tf32 themselves (the CUDA EP's use_tf32); torch runs it under matmul_precision
                runner = load_runner(source, backend, device=dev,
                                     dtype=precision if "ort_session" in spec.options else stored, **opts)
        except DeviceError as e:  # no device, or the provider did not load: the only "unavailable"
            return rows("unavailable", first_line(e), art_s)
        except ConfigError as e:  # a combination that cannot exist (e.g. the CPU EP on CUDA)
            return rows("skipped", first_line(e), art_s)
        except Exception as e:  # noqa: BLE001 - anything else is a failure, shown as one
            return rows("oom" if _is_oom(e) else "error", f"cannot load: {first_line(e)}", art_s)
        load_s = time.perf_counter() - t0
        if spec.remote:
            art_s = f"{self.cfg.url}/{runner.model}"
        status_reason = guard(backend, dev, runner)
        if status_reason:
            return rows(*status_reason, art_s)
        return Loaded(backend, precision, dev, runner, art_s, round(load_s, 4), support)

    def rows_for(self, backend: str, precision: str) -> list[BenchResult]:
        """Sequential order (--no-interleave, torchrun): load once, then each mode and batch size in turn."""
        loaded = self.load(backend, precision)
        if isinstance(loaded, list):
            return loaded
        if get_backend(backend).remote and self.cfg.concurrency:
            from gantool.bench.load_rows import load_rows

            return load_rows(self, loaded.runner, precision, loaded.art)
        out = []
        for mode in self.cfg.modes:
            for b in self.cfg.batch_sizes:
                self.progress(f"{backend} {precision} {mode} batch {b}")
                out.append(loaded.annotate(self.measure_row(loaded.runner, backend, precision, loaded.dev, b,
                                                            loaded.art, mode)))
        loaded.close()
        return out

    def _run_interleaved(self, pairs: list[tuple[str, str]], watch: MachineWatch | None) -> list[BenchResult]:
        """Load every (backend, precision), then time each (mode, batch) group in interleaved rounds;
        load tests (--concurrency) run after, each on its own."""
        results: list[BenchResult] = []
        group: list[Loaded] = []
        load_tests = []
        for backend, precision in pairs:
            self.progress(f"{backend} {precision}: loading")
            loaded = self.load(backend, precision)
            if isinstance(loaded, list):
                results += loaded
            elif get_backend(backend).remote and self.cfg.concurrency:
                load_tests.append(loaded)
            else:
                group.append(loaded)
        for mode in self.cfg.modes:
            for b in self.cfg.batch_sizes:
                if group:
                    results += self.measure_group(group, mode, b)
                if watch:
                    watch.sample(f"after {mode} batch {b}")
        for loaded in group:
            loaded.close()
        for loaded in load_tests:
            from gantool.bench.load_rows import load_rows

            results += load_rows(self, loaded.runner, loaded.precision, loaded.art)
        # the table and JSON keep the order a reader expects: backend by backend, as requested
        rank = {pair: i for i, pair in enumerate(pairs)}
        results.sort(key=lambda r: rank.get((r.backend, r.precision), len(rank)))
        return results

    def run(self) -> dict[str, Any]:
        old_threads = torch.get_num_threads()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        try:
            loaded = self.source.load("cpu")
            contract = loaded.signature
            # FLOPs as torch.utils.flop_counter counts the module (any G); the export recorded the same count
            self.flops = self.manifest.get("flops_per_sample") or flops_per_sample(loaded.module, contract)
            del loaded
            ckpt = self.source.checkpoint
            results: list[BenchResult] = []
            # The machine's peak before, between and after the backends (gantool.bench.watch): a machine
            # that slowed down or filled with other work is said, not hidden behind tight intervals.
            server = None
            if self.cfg.url and "triton" in self.backends:  # its own CPU time is the load test, not other work
                from gantool.bench.watch import ServerCpu

                server = ServerCpu(self.cfg.url)
            watch = MachineWatch(self.where, server=server) if self.cfg.peak_probe else None
            if watch:
                watch.sample("start")
            pairs = [(b, p) for b in self.backends
                     for p in (self._served_precisions() if get_backend(b).remote else self.precisions)
                     if not (p == "int8" and not get_backend(b).int8 and not self.cfg.precisions)]  # int8: ONNX only by default
            if self.cfg.interleave:
                results += self._run_interleaved(pairs, watch)
            else:
                for backend, precision in pairs:
                    self.progress(f"{backend} {precision}: loading")
                    results += self.rows_for(backend, precision)
                    if watch and precision == self.precisions[-1]:
                        watch.sample(f"after {backend}")
            if self.dev == "cuda" and not torch.cuda.is_available():
                env = environment(torch.device("cpu"))  # versions and CPU; nothing ran on a GPU
                env.update(device=str(self.device), device_name=f"unavailable: no CUDA device for torch {torch.__version__}")
            else:
                env = environment(self.device)
        finally:
            torch.set_num_threads(old_threads)
        if self.cfg.peak_probe:
            self.peaks.refresh()
            for r in results:
                peak = (self.peaks.get(r.device, peak_dtype(r.precision))
                        if r.gflops is not None and not get_backend(r.backend).remote else None)
                if peak:
                    r.peak_gflops, r.pct_peak = peak.gflops, 100 * r.gflops / peak.gflops
        ranked = sorted((r for r in results if r.ranked), key=lambda r: -r.samples_per_s)
        for i, r in enumerate(ranked, 1):
            r.rank = i  # type: ignore[attr-defined]
        c = self.cfg
        return {
            "schema": "gantool.bench/1",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": {"backends": self.backends, "precisions": self.precisions, "modes": c.modes,
                       "batch_sizes": c.batch_sizes, "device": str(self.device), "warmup": c.warmup,
                       "min_time_s": c.min_time, "max_time_s": c.max_time, "min_repeats": c.min_repeats,
                       "repeats": c.repeats, "ci_target": c.ci_target, "percentiles": c.percentiles,
                       "streams": c.streams, "seed": c.seed, "threads": c.threads or old_threads,
                       "inter_op_threads": c.inter_op_threads, "graph_opt_level": c.graph_opt_level,
                       "ort_options": c.ort_options, "n_inputs": c.n_inputs},
            "environment": env,
            "model": {"source": self.source.record(), "checkpoint": str(ckpt) if ckpt else None,
                      "checkpoint_sha256": self.source.identity if ckpt else None,
                      "flops_per_sample": self.flops, "latent_dim": contract.latent_dim,
                      "img_shape": list(contract.img_shape)},
            "peaks": [p.to_dict() for p in self.peaks.all()],
            "conditions": watch.conditions() if watch else None,
            "order": {"interleaved": self.cfg.interleave, "groups": self.interleaved},
            "results": [dict(r.to_dict(), rank=getattr(r, "rank", None)) for r in results],
        }


def run_bench(cfg: BenchConfig, progress: Callable[[str], None] | None = None,
              train: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measure every (backend, precision, mode, batch) row; with `train` (kwargs for
    gantool.bench.train_speed.compare_train_speed) also gantool's training loop against the seed's."""
    bench = Bench(cfg, progress)
    report = bench.run()
    if train is not None:
        from gantool.bench.train_speed import compare_train_speed

        progress and progress("train: gantool loop vs seed loop")
        report["train"] = compare_train_speed(**train)
    return report


def failures(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows that make `gantool bench` exit non-zero (unless --allow-failures): errors and parity failures."""
    return [r for r in report["results"] if r["status"] in FAILED]
