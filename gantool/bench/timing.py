"""Time a Runner: one clock per device, CUDA graphs captured before timing, sampling until the median's CI is tight."""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from gantool import noise
from gantool.bench.stats import ci_rel
from gantool.runners import Runner

INPUT_BUDGET_BYTES = 256 << 20  # rotated z buffers per row stay under this
MODES = ("latency", "throughput")
BLOCK_S = 0.01  # throughput mode: back-to-back calls per sample fill about this much time


@dataclass
class BenchResult:
    """One row: a (backend, precision, mode, batch) measured, or why it was not."""

    backend: str
    precision: str
    device: str
    batch: int
    status: str  # ok | parity-failed | unavailable | skipped | oom | error
    reason: str = ""
    artifact: str | None = None
    mode: str = "latency"
    load_s: float | None = None
    engine_build_s: float | None = None  # TensorRT: engine build (or cache load) inside load_s
    first_call_ms: float | None = None  # includes compilation for compile/compile-reduce-overhead
    capture_ms: float | None = None  # CUDA-graph capture, before timing, apart from every sample
    warmup: int = 0
    repeats: int = 0  # n: timed samples
    calls_per_sample: int = 1  # throughput mode: back-to-back calls in one timed sample
    streams: int = 1
    timer: str = ""
    median_ms: float | None = None
    ci_low_ms: float | None = None  # distribution-free 95% CI of the median
    ci_high_ms: float | None = None
    ci_rel: float | None = None  # CI half-width / median
    ci_met: bool | None = None  # stopped because the CI reached the target (not the time cap)
    iqr_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    percentiles_ms: dict[str, float | None] = field(default_factory=dict)
    percentile_notes: dict[str, str] = field(default_factory=dict)
    min_ms: float | None = None
    mean_ms: float | None = None
    times_ms: list[float] | None = None  # --raw-times
    samples_per_s: float | None = None
    gflops: float | None = None
    peak_gflops: float | None = None
    pct_peak: float | None = None
    peak_mem_mb: float | None = None
    mem_source: str | None = None
    parity: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # provider / session options the runner used
    profile: list[str] | None = None  # --profile: the trace files of this row's profiled call
    ranked: bool = False
    precision_support: str | None = None  # bf16 / fp16: "native" or "emulated" from the device's flags
    # What ran the row beyond backend/device: web's browser, ORT-Web version, EP and threads;
    # OpenVINO's inference_precision_hint; an int8 file's quantization method.
    runtime: dict[str, Any] | None = None
    server: dict[str, Any] | None = None  # remote rows: url, model, model_version, server_version
    concurrency: int | None = None  # mode "load": requests kept in flight (bench --concurrency)
    load: dict[str, Any] | None = None  # mode "load": requests/s, errors, answers checked, Triton's statistics
    # Interleaved order: this row's speed over eager fp32's at the same batch and mode, from the paired
    # rounds (gantool.bench.rounds): {"median", "ci_low", "ci_high", "n"}; None for eager fp32 itself
    ratio: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StopRule:
    """When a row has enough samples: `repeats` exactly, or once min_repeats and min_time are met,
    when the median's 95% CI is within ±ci_target, or at max_time (the cap), whichever is first."""

    min_repeats: int = 10
    min_time: float = 0.5
    max_time: float = 10.0
    ci_target: float = 0.02
    repeats: int | None = None
    max_repeats: int = 1_000_000

    def done(self, times: list[float], elapsed: float, every_call: bool = False) -> bool:
        """`every_call`: check the CI now (interleaved rounds judge a row once a round), not only
        every ~5 % more samples."""
        n = len(times)
        if self.repeats:
            return n >= self.repeats
        if n >= self.max_repeats:
            return True
        if n < self.min_repeats or elapsed < self.min_time:
            return False
        if elapsed >= self.max_time:
            return True
        if not every_call and n % max(1, n // 20):  # re-check the CI every ~5% more samples, not after each call
            return False
        rel = ci_rel(times)
        return rel is not None and rel <= self.ci_target


def cuda_event() -> Any:
    """A timing event; a seam for tests (a fake event pair stands in without a GPU)."""
    return torch.cuda.Event(enable_timing=True)


class HostClock:
    """perf_counter between device syncs: the clock for CPU rows (sync is a no-op there)."""

    name = "perf_counter"

    def __init__(self, lanes: list[Runner]):
        self.lanes = lanes

    def start(self) -> None:
        for lane in self.lanes:
            lane.sync()
        self.t0 = time.perf_counter()

    def stop(self) -> float:
        for lane in self.lanes:
            lane.sync()
        return time.perf_counter() - self.t0


class EventClock:
    """CUDA events on the stream each backend runs on (runner.stream): the one clock for every
    CUDA row, torch and ONNX Runtime alike. With several lanes (throughput mode), every lane's
    stream waits on the start event and the main stream waits on each lane's end event, so
    [start, end] spans all of their work."""

    name = "cuda-events"

    def __init__(self, lanes: list[Runner]):
        self.lanes = lanes
        self.main = lanes[0].stream

    def start(self) -> None:
        for lane in self.lanes:
            lane.sync()  # every sample starts on an idle device
        self.ev0 = cuda_event()
        self.ev0.record(self.main)
        for lane in self.lanes[1:]:
            lane.stream.wait_event(self.ev0)

    def stop(self) -> float:
        for lane in self.lanes[1:]:
            done = cuda_event()
            done.record(lane.stream)
            self.main.wait_event(done)
        ev1 = cuda_event()
        ev1.record(self.main)
        ev1.synchronize()
        return self.ev0.elapsed_time(ev1) / 1e3


class OwnClock:
    """A runner that times its own calls (a browser page's performance.now()): the host<->page
    round trip is not the model's, so each sample is the time the runner reports for its call."""

    def __init__(self, runner: Runner):
        self.runner, self.name = runner, runner.clock

    def start(self) -> None:
        self.runner.sync()

    def stop(self) -> float:
        self.runner.sync()
        return float(self.runner.last_run_s)


def clock_for(lanes: list[Runner]) -> HostClock | EventClock | OwnClock:
    if lanes[0].clock is not None:
        return OwnClock(lanes[0])
    return EventClock(lanes) if lanes[0].device.type == "cuda" and lanes[0].stream is not None else HostClock(lanes)


@dataclass
class Measured:
    """What measure() saw: outputs to check (float32 CPU) and per-call times in seconds."""

    first: torch.Tensor
    replayed: torch.Tensor | None
    first_s: float
    capture_s: float | None
    times: np.ndarray
    timer: str
    mode: str
    streams: int
    calls_per_sample: int
    ci_met: bool
    lane_options: list[dict[str, Any]] = field(default_factory=list)


class Timer:
    """One row's timing: the first call (timed alone), CUDA-graph capture (timed apart), one replay kept
    for parity and `warmup` untimed calls happen at construction; then `take` adds timed samples, all at
    once (measure, sequential order) or a slice per round (gantool.bench.rounds, interleaved order).

    latency: every sample is one call started on an idle device.
    throughput: every sample is a block of back-to-back calls with no sync between them (on CUDA
    spread over `streams` lanes, each on its own stream); the sample is the block time / calls.
    Inputs are prepared (moved, cast, bound) before anything is timed; calls rotate over them.
    """

    def __init__(self, runner: Runner, zs: list[torch.Tensor], warmup: int, mode: str = "latency", streams: int = 2,
                 context: Callable[[], Any] | None = None):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}; choose from {MODES}")
        self.runner, self.mode, self.n_z = runner, mode, len(zs)
        # what each slice runs under (e.g. its row's matmul precision, when rows take turns)
        self.context = context or contextlib.nullcontext
        self.lanes = lanes = runner.lanes(streams) if mode == "throughput" else [runner]
        self.xs = xs = [[lane.prepare(z) for z in zs] for lane in lanes]
        one = clock_for([runner])
        one.start()
        y = runner.run(xs[0][0])
        self.first_s = one.stop()
        # Copy now: graph backends reuse their output buffer, so the next call would overwrite it.
        self.first = runner.to_cpu(y).clone()
        self.capture_s, self.replayed = None, None
        if runner.graph:
            one.start()
            for lane, lx in zip(lanes, xs):
                lane.capture(lx[0])
            self.capture_s = one.stop()
            self.replayed = runner.to_cpu(runner.run(xs[0][0])).clone()  # a replay of the captured graph
        t0 = time.perf_counter()
        for i in range(warmup):
            lanes[i % len(lanes)].run(xs[i % len(lanes)][i % len(zs)])
        for lane in lanes:
            lane.sync()
        per_call = (time.perf_counter() - t0) / warmup if warmup else self.first_s
        # A self-timing runner reports one call at a time, so its throughput samples are single calls too.
        self.k = 1 if mode == "latency" or runner.clock is not None else \
            int(min(256, max(2 * len(lanes), np.ceil(BLOCK_S / max(per_call, 1e-7)))))
        self.clock = clock_for(lanes)
        self.times: list[float] = []
        self.elapsed = 0.0  # wall seconds spent taking samples (the stop rule's time)
        self._i = 0

    def take(self, enough: Callable[[list[float], float], bool], rewarm: int = 0) -> list[float]:
        """Timed samples until enough(this call's samples, its seconds) says so; returns them (seconds per call).
        `rewarm` untimed calls first: after another backend ran, caches and thread pools are its."""
        new: list[float] = []
        with self.context():
            for i in range(rewarm):
                self.lanes[0].run(self.xs[0][(self._i + i) % self.n_z])
            self.lanes[0].sync()
            start = time.perf_counter()
            self._take(new, start, enough)
        self.elapsed += time.perf_counter() - start
        self.times += new
        return new

    def _take(self, new: list[float], start: float, enough: Callable[[list[float], float], bool]) -> None:
        while not enough(new, time.perf_counter() - start):
            self.clock.start()
            if self.mode == "latency":
                self.runner.run(self.xs[0][self._i % self.n_z])
            else:
                for j in range(self._i, self._i + self.k):
                    lane = j % len(self.lanes)
                    self.lanes[lane].run_async(self.xs[lane][(j // len(self.lanes)) % self.n_z])
            new.append(self.clock.stop() / self.k)
            self._i += self.k

    def measured(self, stop: StopRule) -> "Measured":
        rel = ci_rel(self.times)
        return Measured(self.first, self.replayed, self.first_s, self.capture_s, np.asarray(self.times),
                        self.clock.name, self.mode, len(self.lanes), self.k,
                        bool(not stop.repeats and rel is not None and rel <= stop.ci_target),
                        [dict(lane.info.extra.get("options") or {}) for lane in self.lanes[:1]])


def measure(runner: Runner, zs: list[torch.Tensor], warmup: int, stop: StopRule, mode: str = "latency",
            streams: int = 2) -> Measured:
    """One row on its own (sequential order, --no-interleave): Timer, then samples until `stop` says enough."""
    t = Timer(runner, zs, warmup, mode, streams)
    t.take(lambda new, elapsed: stop.done(t.times + new, elapsed))
    return t.measured(stop)


def make_inputs(batch: int, latent: int, n: int, seed: int) -> list[torch.Tensor]:
    """n distinct float32 CPU z's (the first one is the parity input), within INPUT_BUDGET_BYTES."""
    n = max(1, min(n, INPUT_BUDGET_BYTES // max(1, batch * latent * 4)))
    need, free = 2 * n * batch * latent * 4, _available_bytes()  # latent()'s blocks + their cat
    if free is not None and need > free:  # fail now (an oom row), not after filling the machine's RAM
        raise MemoryError(f"batch {batch}: its z needs {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB available")
    return list(noise.latent(n * batch, seed, latent).split(batch))


def _available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    msg = str(e).lower()
    return any(s in msg for s in ("out of memory", "can't allocate memory", "failed to allocate memory",
                                  "bad_alloc", "cannot allocate memory"))
