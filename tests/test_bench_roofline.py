"""Roofline: FLOPs per sample of the seed G, the GEMM probe, and one probe per (device, dtype) a run."""
from __future__ import annotations

import pytest

from gantool.bench import roofline
from gantool.config import ModelConfig
from gantool.model import build_generator


def test_flops_per_sample_counts_the_seed_linear_layers():
    # 100->256->512->1024->784, 2 FLOPs a multiply-add
    want = 2 * (100 * 256 + 256 * 512 + 512 * 1024 + 1024 * 784)
    assert roofline.flops_per_sample(build_generator(ModelConfig()), 100) == want
    assert roofline.flops_per_sample(build_generator(ModelConfig(g_hidden=(8,))), 100) == 2 * (100 * 8 + 8 * 784)


def test_flops_per_sample_counts_the_dcgan_transposed_convolutions():
    # 100 -> 128@7x7 (a 7x7 kernel on a 1x1 map), -> 64@14x14 and -> 1@28x28 (4x4 kernels, stride 2:
    # each output pixel sums in_ch x 4 of the 16 taps, i.e. in_ch x 16 MACs per input pixel)
    g = build_generator(ModelConfig(g_arch="dcgan", g_channels=(128, 64)))
    want = 2 * (100 * 128 * 49 + 128 * 7 * 7 * 64 * 16 + 64 * 14 * 14 * 1 * 16)
    assert roofline.flops_per_sample(g, 100) == want


def test_achieved_gflops():
    assert roofline.achieved_gflops(1000.0, 2_000_000) == pytest.approx(2.0)


def test_measure_peak_reports_a_positive_rate_and_what_it_measured():
    p = roofline.measure_peak("cpu", "fp32", size=128, min_time=0.0, min_repeats=2)
    assert p.gflops > 0 and p.device == "cpu" and p.dtype == "fp32"
    assert "128x128x128 fp32" in p.probe
    assert set(p.to_dict()) == {"device", "dtype", "gflops", "probe"}


def test_peak_cache_probes_each_device_dtype_once(monkeypatch):
    calls = []

    def fake(device, dtype, size=None, min_time=0.3):
        calls.append((str(device), dtype))
        return roofline.Peak(str(device), dtype, 10.0, "fake")

    monkeypatch.setattr(roofline, "measure_peak", fake)
    cache = roofline.PeakCache()
    for _ in range(3):
        assert cache.get("cpu", "fp32").gflops == 10.0
    cache.get("cpu", "bf16")
    assert calls == [("cpu", "fp32"), ("cpu", "bf16")]
    assert len(cache.all()) == 2


def test_peak_cache_returns_none_when_the_probe_cannot_run(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no GEMM kernel for this dtype")

    monkeypatch.setattr(roofline, "measure_peak", broken)
    assert roofline.PeakCache().get("cpu", "fp16") is None


def test_refresh_keeps_the_better_of_two_probes(monkeypatch):
    rates = iter([5.0, 20.0, 30.0, 1.0])
    monkeypatch.setattr(roofline, "measure_peak",
                        lambda device, dtype, size=None, min_time=0.3: roofline.Peak(str(device), dtype, next(rates), "fake"))
    cache = roofline.PeakCache()
    cache.get("cpu", "fp32")  # 5
    cache.refresh()  # 20 > 5: kept
    assert cache.get("cpu", "fp32").gflops == 20.0
    cache.refresh()  # 30
    cache.refresh()  # 1 < 30: ignored (a busy moment)
    assert cache.get("cpu", "fp32").gflops == 30.0
