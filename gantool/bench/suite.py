"""A bench run: resolve backends x precisions x batch sizes, time each row, rank them, describe the machine."""
from __future__ import annotations

import gc
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from gantool import __version__
from gantool.bench.backends import (BACKENDS, DEFAULT_BACKENDS, INT8_BACKENDS, check_requested, default_precisions,
                                    find_artifact, guard, missing_reason, precision_support, read_artifacts,
                                    row_device)
from gantool.bench.roofline import PeakCache, achieved_gflops, flops_per_sample
from gantool.bench.timing import BenchResult, compare, make_inputs, measure, parity_rows, _is_oom
from gantool.device import INT8_ONLY_ONNX, PRECISIONS, cpu_isa, cpu_name, device_name, resolve_device
from gantool.errors import ConfigError, DeviceError, GantoolError, first_line
from gantool.runners import Runner, load_runner


@dataclass
class BenchConfig:
    """What to measure. Empty backends/precisions mean the defaults for the device."""

    checkpoint: Path | None = None
    exported: Path | None = None
    backends: list[str] = field(default_factory=list)
    precisions: list[str] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=lambda: [1, 64, 1024, 4096])
    device: str = "auto"
    warmup: int = 5
    min_time: float = 1.0  # seconds of timed calls per row, at least
    min_repeats: int = 10
    max_repeats: int = 100_000
    threads: int | None = None
    n_inputs: int = 4  # distinct prepared z's, rotated so caches don't flatter
    peak_probe: bool = True
    seed: int = 0
    url: str | None = None  # Triton server's gRPC HOST:PORT (backend triton)
    triton_model: str = "generator_onnx"


def environment(device: torch.device) -> dict[str, Any]:
    """What a number depends on: machine, threads and library versions."""
    versions: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                                "numpy": np.__version__, "gantool": __version__}
    for mod in ("onnxruntime", "onnx", "openvino"):
        try:
            m = __import__(mod)
            versions[mod] = m.__version__
        except Exception as e:  # noqa: BLE001 - a missing/broken optional lib is recorded, not fatal
            versions[mod] = f"unavailable: {first_line(e)}"
    env = {"device": str(device), "device_name": device_name(device), "cpu": cpu_name(), "cpu_isa": cpu_isa(),
           "cpu_count": __import__("os").cpu_count(), "threads": torch.get_num_threads(),
           "platform": platform.platform(), "versions": versions,
           "float32_matmul_precision": torch.get_float32_matmul_precision(),
           "cuda": None}
    if "onnxruntime" in sys.modules:
        env["onnxruntime_providers"] = sys.modules["onnxruntime"].get_available_providers()
        env["onnxruntime_path"] = str(Path(sys.modules["onnxruntime"].__file__).parent)
    if torch.cuda.is_available():
        env["cuda"] = {"torch_cuda": torch.version.cuda, "device_count": torch.cuda.device_count(),
                       "name": torch.cuda.get_device_name(), "capability": list(torch.cuda.get_device_capability())}
    return env


# What a runner reports about how it ran that a reader needs beside the number (OpenVINO's precision hint...).
RUNTIME_KEYS = ("inference_precision_hint", "openvino", "quantization")


def default_backends(device: str) -> list[str]:
    """Every backend meaningful on the device; OpenVINO (an optional extra) only where it is installed."""
    import importlib.util

    out = list(DEFAULT_BACKENDS.get(device, DEFAULT_BACKENDS["cpu"]))
    if device == "cpu" and importlib.util.find_spec("openvino") is not None:
        out.insert(out.index("ort") + 1, "openvino")
    return out


def peak_dtype(precision: str) -> str:
    """An int8 row's % of peak is against the fp32 GEMM peak: above 100% is past the fp32 roofline."""
    return "fp32" if precision == "int8" else precision


class Bench:
    """One bench run: resolves backends, keeps the eager fp32 reference and the peaks per run."""

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
            if b not in BACKENDS:
                raise ConfigError(f"unknown backend {b!r}; choose from: {', '.join(BACKENDS)}")
        for p in cfg.precisions:
            if p not in PRECISIONS:
                raise ConfigError(f"unknown precision {p!r}; choose from: {', '.join(PRECISIONS)}")
        if any(b <= 0 for b in cfg.batch_sizes) or not cfg.batch_sizes:
            raise ConfigError(f"batch sizes must be > 0, got {cfg.batch_sizes}")
        self.entries, self.manifest = read_artifacts(cfg.exported)
        self.precisions = cfg.precisions or default_precisions(self.dev, self.entries)
        if cfg.precisions == ["int8"] and not set(self.backends) & set(INT8_BACKENDS):
            raise ConfigError(f"--precisions int8 with backends {', '.join(self.backends)}: {INT8_ONLY_ONNX}")
        self.checkpoint = cfg.checkpoint or self._manifest_checkpoint()
        check_requested(self.backends, self.explicit, self.entries, cfg.exported, self.checkpoint)
        if self.checkpoint is None:
            raise ConfigError("bench checks every backend against eager fp32 and needs the source "
                              "checkpoint: pass --checkpoint RUN")
        self.peaks = PeakCache()
        self._ref_runner: Runner | None = None
        self._refs: dict[tuple, torch.Tensor] = {}

    def _manifest_checkpoint(self) -> Path | None:
        """The checkpoint the artifacts were exported from, when it is still on disk."""
        src = self.manifest.get("source_checkpoint")
        return Path(src) if src and Path(src).exists() else None

    def reference(self, z: torch.Tensor) -> torch.Tensor:
        """Eager fp32 output for z, on the bench device when it works there, else on CPU.
        Every backend sees the same first z at a batch size, so each is computed once."""
        key = (z.shape[0], float(z[0, 0]), float(z[-1, -1]))
        if key not in self._refs:
            if self._ref_runner is None:
                dev = self.where if self.dev != "cuda" or torch.cuda.is_available() else "cpu"
                self._ref_runner = load_runner(self.checkpoint, "eager", device=dev, dtype="fp32")
            self._refs[key] = self._ref_runner(z)  # <= 4096 rows (parity_rows): small
        return self._refs[key]

    def rows_for(self, backend: str, precision: str) -> list[BenchResult]:
        """Load once, then measure each batch size; failures become rows, never exceptions."""
        spec = BACKENDS[backend]
        dev = row_device(spec, self.where)
        support = precision_support(dev, precision)
        rows = lambda status, reason, art=None: [BenchResult(backend, precision, dev, b, status, reason, art,  # noqa: E731
                                                             precision_support=support) for b in self.cfg.batch_sizes]
        source: Path = self.checkpoint  # type: ignore[assignment]
        if spec.format is not None:
            art = find_artifact(self.entries, self.cfg.exported, spec.format, precision, dev) if self.entries else None
            if art is None:
                return rows("skipped", missing_reason(spec.format, precision, self.cfg.exported, dev))
            source = art
        art_s = str(source) if spec.format else None
        opts = {"threads": self.cfg.threads} if backend in ("ort", "openvino") and self.cfg.threads else {}
        if spec.remote:
            if not self.cfg.url:
                return rows("unavailable", "no server given: pass --url HOST:PORT (a Triton server's gRPC port)")
            source, opts, art_s = self.cfg.url, {"model": self.cfg.triton_model}, f"{self.cfg.url}/{self.cfg.triton_model}"
        t0 = time.perf_counter()
        try:
            runner = load_runner(source, backend, device=dev, dtype=precision, **opts)
        except DeviceError as e:
            return rows("unavailable", first_line(e), art_s)
        except GantoolError as e:  # an artifact that cannot be used with this precision/device
            return rows("unavailable" if dev.startswith("cuda") else ("skipped" if isinstance(e, ConfigError) else "error"),
                        first_line(e), art_s)
        except Exception as e:  # noqa: BLE001 - e.g. an EP without kernels for this dtype
            return rows("skipped" if not _is_oom(e) else "oom", f"cannot load: {first_line(e)}", art_s)
        load_s = time.perf_counter() - t0
        why_not = guard(backend, dev, runner)
        if why_not:
            return rows("unavailable", why_not, art_s)
        out = []
        for b in self.cfg.batch_sizes:
            self.progress(f"{backend} {precision} batch {b}")
            row = self.measure_row(runner, backend, precision, dev, b, art_s)
            row.load_s = round(load_s, 4)
            row.precision_support = support
            row.runtime = {k: v for k, v in runner.info.extra.items() if k in RUNTIME_KEYS} or None
            if spec.remote:
                row.server = dict(runner.info.extra)
            out.append(row)
        del runner
        gc.collect()
        return out

    def measure_row(self, runner: Runner, backend: str, precision: str, dev: str, batch: int,
                    art: str | None) -> BenchResult:
        row = BenchResult(backend, precision, dev, batch, "ok", artifact=art, runtime=runner.info.extra.get("runtime"))
        try:
            zs = make_inputs(batch, runner.info.latent_dim, self.cfg.n_inputs, self.cfg.seed)
            idx = parity_rows(batch)
            ref = self.reference(zs[0] if idx is None else zs[0][idx])
            xs = [runner.prepare(z) for z in zs]
            first, t = measure(runner, xs, self.cfg.warmup, self.cfg.min_time, self.cfg.min_repeats,
                               self.cfg.max_repeats)
            out = first
            row.parity = compare(ref, out if idx is None or out.shape[0] != batch else out[idx], precision)
            del xs, first
        except Exception as e:  # noqa: BLE001 - one row failing must not stop the others
            row.status = "oom" if _is_oom(e) else "error"
            row.reason = first_line(e)
            self._free()
            return row
        row.first_call_ms = t["first_s"] * 1e3
        row.warmup, row.repeats, row.timer = self.cfg.warmup, len(t["times"]), t["timer"]
        row.median_ms, row.p90_ms, row.p99_ms = t["median"] * 1e3, t["p90"] * 1e3, t["p99"] * 1e3
        row.min_ms, row.mean_ms = t["min"] * 1e3, t["mean"] * 1e3
        row.samples_per_s = batch / t["median"]
        row.gflops = achieved_gflops(row.samples_per_s, self.flops)
        if self.cfg.peak_probe and not BACKENDS[backend].remote:
            self.peaks.get(dev, peak_dtype(precision))  # probe now; rows get their % of peak at the end (run)
        if not row.parity["passed"]:
            row.status = "parity-failed"
            row.reason = row.parity.get("error") or (
                f"max |diff| {row.parity['max_abs_err']:.3g} > atol {row.parity['atol']:.3g}"
                + (f", {row.parity['nonfinite']} non-finite" if row.parity["nonfinite"] else ""))
        row.ranked = row.status == "ok"
        return row

    def _free(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def run(self) -> dict[str, Any]:
        from gantool.checkpoint import load_generator, sha256_file, resolve_checkpoint_path

        old_threads = torch.get_num_threads()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        try:
            _, mcfg, _ = load_generator(self.checkpoint)
            self.flops = flops_per_sample(mcfg)
            ckpt = resolve_checkpoint_path(self.checkpoint)
            results: list[BenchResult] = []
            for backend in self.backends:
                for precision in self.precisions:
                    if precision == "int8" and backend not in INT8_BACKENDS and not self.cfg.precisions:
                        continue  # the default int8 rows are the ONNX backends' only
                    self.progress(f"{backend} {precision}: loading")
                    results += self.rows_for(backend, precision)
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
                        if r.gflops is not None and not BACKENDS[r.backend].remote else None)
                if peak:
                    r.peak_gflops, r.pct_peak = peak.gflops, 100 * r.gflops / peak.gflops
        ranked = sorted((r for r in results if r.ranked), key=lambda r: -r.samples_per_s)
        for i, r in enumerate(ranked, 1):
            r.rank = i  # type: ignore[attr-defined]
        return {
            "schema": "gantool.bench/1",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": {"backends": self.backends, "precisions": self.precisions,
                       "batch_sizes": self.cfg.batch_sizes, "device": str(self.device),
                       "warmup": self.cfg.warmup, "min_time_s": self.cfg.min_time,
                       "min_repeats": self.cfg.min_repeats, "threads": self.cfg.threads or old_threads,
                       "n_inputs": self.cfg.n_inputs},
            "environment": env,
            "model": {"checkpoint": str(ckpt), "checkpoint_sha256": sha256_file(ckpt),
                      "flops_per_sample": self.flops, "latent_dim": mcfg.latent_dim,
                      "img_shape": list(mcfg.img_shape)},
            "peaks": [p.to_dict() for p in self.peaks.all()],
            "results": [dict(r.to_dict(), rank=getattr(r, "rank", None)) for r in results],
        }


def run_bench(cfg: BenchConfig, progress: Callable[[str], None] | None = None,
              train: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measure every (backend, precision, batch) row; with `train` (kwargs for
    gantool.bench.train_speed.compare_train_speed) also gantool's training loop against the seed's."""
    bench = Bench(cfg, progress)
    report = bench.run()
    if train is not None:
        from gantool.bench.train_speed import compare_train_speed

        progress and progress("train: gantool loop vs seed loop")
        report["train"] = compare_train_speed(**train)
    return report
