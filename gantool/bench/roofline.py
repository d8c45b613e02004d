"""Roofline numbers for bench rows: FLOPs per sample from the model, and this machine's measured GEMM peak."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from gantool.device import parse_dtype, sync
from gantool.model import flops_per_sample

# Square GEMM size per device type: big enough to reach the GEMM rate the library gets on that
# device, small enough that the probe costs well under a second (1024^3 x2 = 2.1 GFLOP a call on CPU).
PROBE_SIZE = {"cpu": 1024, "cuda": 8192, "mps": 4096}


@dataclass
class Peak:
    """The best GEMM rate seen on (device, dtype): the denominator of a row's % of peak."""

    device: str
    dtype: str
    gflops: float
    probe: str  # what was measured, e.g. "matmul 1024x1024x1024 bf16, best of 5"

    def to_dict(self) -> dict:
        return {"device": self.device, "dtype": self.dtype, "gflops": round(self.gflops, 2), "probe": self.probe}


def achieved_gflops(samples_per_s: float, flops: int) -> float:
    return samples_per_s * flops / 1e9


def measure_peak(device: str | torch.device, dtype: str, size: int | None = None,
                 min_time: float = 0.3, min_repeats: int = 5) -> Peak:
    """Time `size`^3 matmuls in `dtype` on `device` and return the best rate in GFLOP/s.

    Best-of rather than median: the peak is what the hardware + library can reach, and other
    processes on a shared machine only ever make a call slower.
    """
    dev = torch.device(device)
    tdtype = parse_dtype(dtype)
    n = size or PROBE_SIZE.get(dev.type, 1024)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dev, tdtype)
    b = torch.randn(n, n, generator=g).to(dev, tdtype)
    with torch.inference_mode():
        for _ in range(2):  # warm-up: library init, kernel selection, clocks
            torch.mm(a, b)
        sync(dev)
        best, count, start = float("inf"), 0, time.perf_counter()
        while count < min_repeats or time.perf_counter() - start < min_time:
            t0 = time.perf_counter()
            torch.mm(a, b)
            sync(dev)
            best = min(best, time.perf_counter() - t0)
            count += 1
            if count >= 1000:
                break
    gflops = 2 * n**3 / best / 1e9
    return Peak(str(dev), dtype, gflops, f"matmul {n}x{n}x{n} {dtype}, best of {count}")


class PeakCache:
    """Measures each (device, dtype) peak once per bench run, with torch's current thread count."""

    def __init__(self, size: int | None = None, min_time: float = 0.3):
        self.size, self.min_time = size, min_time
        self._peaks: dict[tuple[str, str], Peak | None] = {}

    def get(self, device: str, dtype: str) -> Peak | None:
        """The peak, or None when the probe cannot run there (e.g. fp16 GEMM on an old CPU)."""
        key = (str(torch.device(device)), dtype)
        if key not in self._peaks:
            try:
                self._peaks[key] = measure_peak(device, dtype, self.size, self.min_time)
            except (RuntimeError, TypeError):
                self._peaks[key] = None
        return self._peaks[key]

    def refresh(self) -> None:
        """Probe every key again and keep the better rate: on a shared machine one probe can land
        in a busy moment, and a contended peak would inflate every row's % of peak."""
        for key, old in list(self._peaks.items()):
            if old is None:
                continue
            try:
                new = measure_peak(key[0], key[1], self.size, self.min_time)
            except (RuntimeError, TypeError):
                continue
            if new.gflops > old.gflops:
                self._peaks[key] = new

    def all(self) -> list[Peak]:
        return [p for p in self._peaks.values() if p is not None]
