"""The ORT CUDA/TensorRT runner against a fake onnxruntime (no GPU): provider options, bindings, run options, graph capture."""
from __future__ import annotations

import ctypes
import sys
import types

import numpy as np
import pytest
import torch

from gantool.bench import timing
from gantool.bench.parity import check_parity
from gantool.bench.timing import StopRule, measure


class FakeStream:
    made = []

    def __init__(self, *a, **k):
        self.cuda_stream = 0xABC + len(FakeStream.made)
        self.waits = []
        FakeStream.made.append(self)

    def synchronize(self):
        pass

    def wait_event(self, ev):
        self.waits.append(ev)


class FakeEvent:
    """A CUDA event pair stand-in: elapsed_time is the gap between the fake clock ticks at record()."""

    log: list = []
    tick = [0.0]

    def __init__(self, *a, **k):
        self.t = None

    def record(self, stream=None):
        FakeEvent.tick[0] += 0.25  # ms
        self.t, self.stream = FakeEvent.tick[0], stream
        FakeEvent.log.append(("record", stream, FakeSession.last.runs if FakeSession.last else 0))

    def synchronize(self):
        pass

    def elapsed_time(self, other):
        return other.t - self.t


def _array(ptr: int, shape, dtype=np.float32) -> np.ndarray:
    n = int(np.prod(shape))
    buf = (ctypes.c_float * n).from_address(ptr)
    return np.frombuffer(buf, dtype=np.float32, count=n).reshape(shape)


class FakeBinding:
    def __init__(self):
        self.inputs, self.outputs = [], []

    def bind_input(self, name, device, idx, dtype, shape, ptr):
        self.inputs.append((name, device, idx, np.dtype(dtype).name, tuple(shape), ptr))

    def bind_output(self, name, device, idx, dtype, shape, ptr):
        self.outputs.append((name, device, idx, np.dtype(dtype).name, tuple(shape), ptr))


class FakeRunOptions:
    def __init__(self):
        self.entries = {}

    def add_run_config_entry(self, k, v):
        self.entries[k] = v


def generator(z: np.ndarray) -> np.ndarray:  # (N, 100) -> (N, 1, 28, 28): a fixed function of z
    return np.tanh(np.repeat(z[:, :1], 784, axis=1)).reshape(-1, 1, 28, 28)


class FakeSession:
    last = None
    broken_replay = False

    def __init__(self, path, so, providers):
        self.providers, self.so, self.runs, self.calls = providers, so, 0, []
        self.elem = "tensor(float16)" if "fp16" in str(path) else "tensor(float)"
        self.bindings: list[FakeBinding] = []
        self.graph_runs: dict[str, int] = {}
        FakeSession.last = self

    def get_providers(self):
        return [p[0] if isinstance(p, tuple) else p for p in self.providers]

    def get_inputs(self):
        return [types.SimpleNamespace(name="z", type=self.elem, shape=["batch", 100])]

    def get_outputs(self):
        return [types.SimpleNamespace(name="images", type=self.elem, shape=["batch", 1, 28, 28])]

    def get_modelmeta(self):
        return types.SimpleNamespace(custom_metadata_map={"gantool.latent_dim": "100", "gantool.image_shape": "1,28,28"})

    def io_binding(self):
        b = FakeBinding()
        self.bindings.append(b)
        return b

    def run_with_iobinding(self, b, ro=None):
        self.runs += 1
        entries = dict(ro.entries) if ro is not None else {}
        gid = entries.get("gpu_graph_id")
        replay = False
        if gid is not None:
            self.graph_runs[gid] = self.graph_runs.get(gid, 0) + 1
            replay = self.graph_runs[gid] > 3  # captured on the 3rd run; later runs replay
        self.calls.append({"binding": id(b), "run_options": entries, "replay": replay})
        (_, _, _, _, ishape, iptr), (_, _, _, _, oshape, optr) = b.inputs[0], b.outputs[0]
        out = _array(optr, oshape)
        out[:] = 0.0 if (replay and FakeSession.broken_replay) else generator(_array(iptr, ishape))


@pytest.fixture
def fake_ort(monkeypatch):
    ort = types.ModuleType("onnxruntime")
    ort.__version__ = "0.fake"
    ort.get_available_providers = lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    ort.SessionOptions = lambda: types.SimpleNamespace(entries={}, add_session_config_entry=lambda k, v: None)
    ort.RunOptions = FakeRunOptions
    ort.InferenceSession = FakeSession
    ort.ExecutionMode = types.SimpleNamespace(ORT_PARALLEL="parallel")
    ort.GraphOptimizationLevel = types.SimpleNamespace(ORT_ENABLE_ALL="all", ORT_DISABLE_ALL="disable")
    monkeypatch.setitem(sys.modules, "onnxruntime", ort)
    from gantool.runners import ort_cuda_runner as mod

    monkeypatch.setattr(mod, "memory_device", lambda index: torch.device("cpu"))  # "device" buffers on the host
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: __import__("contextlib").nullcontext())
    monkeypatch.setattr(timing, "cuda_event", FakeEvent)
    FakeEvent.log.clear()
    FakeStream.made.clear()
    FakeSession.broken_replay = False
    return mod


def _provider_opts(session, name):
    return next(p[1] for p in session.providers if isinstance(p, tuple) and p[0] == name)


@pytest.mark.parametrize("precision,tf32", [("fp32", "0"), ("tf32", "1")])
def test_fp32_asks_for_ieee_and_tf32_for_tensor_cores(fake_ort, exported_dir, precision, tf32):
    r = fake_ort.OrtCudaRunner(exported_dir / "generator.fp32.onnx", "cuda", precision)
    opts = _provider_opts(r.session, "CUDAExecutionProvider")
    assert opts["use_tf32"] == tf32 and opts["user_compute_stream"] == str(r.stream.cuda_stream)
    assert r.info.dtype == precision and r.info.extra["options"]["cuda"]["use_tf32"] == tf32


def test_graph_mode_binds_static_buffers_once_per_batch_with_a_graph_id(fake_ort, exported_dir):
    r = fake_ort.OrtCudaRunner(exported_dir / "generator.fp32.onnx", "cuda", "fp32", cuda_graph=True)
    assert _provider_opts(r.session, "CUDAExecutionProvider")["enable_cuda_graph"] == "1"
    xs = [r.prepare(torch.randn(n, 100)) for n in (4, 4, 4, 8, 8)]
    s = r.session
    assert len(s.bindings) == 2  # one static binding per batch size, none per rotated input
    assert all(x.binding is None for x in xs)  # a prepared input holds only z: no spare output buffer
    assert [b.outputs[0][4] for b in s.bindings] == [(4, 1, 28, 28), (8, 1, 28, 28)]
    for x in xs:
        r.run(x)
    ids = [c["run_options"]["gpu_graph_id"] for c in s.calls]
    assert ids == ["1", "1", "1", "2", "2"]  # batch 4 -> graph 1, batch 8 -> graph 2
    bound = {id(b) for b in s.bindings}
    assert all(c["binding"] in bound for c in s.calls)


def test_capture_precedes_timing_and_parity_checks_a_replayed_output(fake_ort, exported_dir):
    r = fake_ort.OrtCudaRunner(exported_dir / "generator.fp32.onnx", "cuda", "fp32", cuda_graph=True)
    zs = [torch.randn(4, 100) for _ in range(3)]
    m = measure(r, zs, warmup=0, stop=StopRule(min_repeats=5, min_time=0, repeats=5))
    assert m.timer == "cuda-events" and m.capture_s is not None and m.replayed is not None
    calls = r.session.calls
    # first call, 3 capture runs (ORT captures on the 3rd run of a graph id), the replay kept for
    # parity; then the timed calls: all of them replays
    assert [c["replay"] for c in calls[:3]] == [False, False, False] and calls[4]["replay"]
    timed_starts = [runs for i, (_, _, runs) in enumerate(FakeEvent.log) if i >= 4 and i % 2 == 0]
    assert min(timed_starts) >= 5  # no timed sample began before the graph was captured and replayed
    assert all(c["replay"] for c in calls[5:]) and len(calls) == 5 + 5
    ref = torch.from_numpy(generator(zs[0].numpy()))
    assert check_parity(ref, m, None, 4, "fp32")["passed"]
    # a graph whose replays are wrong fails parity, although its first call was right
    FakeSession.broken_replay = True
    r2 = fake_ort.OrtCudaRunner(exported_dir / "generator.fp32.onnx", "cuda", "fp32", cuda_graph=True)
    m2 = measure(r2, zs, warmup=0, stop=StopRule(repeats=3))
    p = check_parity(ref, m2, None, 4, "fp32")
    assert not p["passed"] and p["checked"] == "replayed CUDA graph"
    assert torch.allclose(m2.first, ref)


def test_event_timing_uses_the_runners_own_stream(fake_ort, exported_dir):
    r = fake_ort.OrtCudaRunner(exported_dir / "generator.fp32.onnx", "cuda", "fp32")
    m = measure(r, [torch.randn(2, 100)], warmup=1, stop=StopRule(repeats=4))
    assert m.timer == "cuda-events"
    assert np.allclose(m.times, 0.25e-3)  # the fake pair's elapsed_time, ms -> s
    assert all(stream is r.stream for _, stream, _ in FakeEvent.log)


def test_tensorrt_profile_caches_and_fp16(fake_ort, exported_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    r = fake_ort.OrtCudaRunner(exported_dir / "generator.fp16.onnx", "cuda", "fp16", tensorrt=True,
                               trt_batch_sizes=[64, 1, 4096], cache_dir=tmp_path)
    trt = _provider_opts(r.session, "TensorrtExecutionProvider")
    assert trt["trt_profile_min_shapes"].endswith(":1x100") and trt["trt_profile_max_shapes"].endswith(":4096x100")
    assert trt["trt_fp16_enable"] == "1" and trt["trt_engine_cache_enable"] == "1"
    assert trt["trt_engine_cache_path"].startswith(str(tmp_path)) and trt["trt_timing_cache_path"].startswith(str(tmp_path))
    assert r.info.extra["engine_build_s"] >= 0


def test_tensorrt_fp32_needs_tf32_off_process_wide(fake_ort, exported_dir, monkeypatch):
    from gantool.errors import ConfigError

    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    with pytest.raises(ConfigError, match="NVIDIA_TF32_OVERRIDE=0"):
        fake_ort.OrtCudaRunner(exported_dir / "generator.fp32.onnx", "cuda", "fp32", tensorrt=True)


def test_throughput_mode_queues_calls_on_two_streams_joined_by_events(fake_ort, exported_dir):
    r = fake_ort.OrtCudaRunner(exported_dir / "generator.fp32.onnx", "cuda", "fp32")
    m = measure(r, [torch.randn(2, 100)], warmup=2, stop=StopRule(repeats=3), mode="throughput", streams=2)
    assert m.mode == "throughput" and m.streams == 2 and m.timer == "cuda-events"
    lane = r.lanes(2)[1]
    assert lane is not r and lane.stream is not r.stream  # a second session on its own stream
    assert _provider_opts(lane.session, "CUDAExecutionProvider")["user_compute_stream"] == str(lane.stream.cuda_stream)
    queued = [c for s in (r.session, lane.session) for c in s.calls if c["run_options"]]
    assert queued and all(c["run_options"] == {"disable_synchronize_execution_providers": "1"} for c in queued)
    assert lane.session.calls and len(r.lanes(2)) == 2 and r.lanes(2)[1] is lane  # made once, kept
    assert lane.stream.waits and r.stream.waits  # lane waits on the start event; main on the lane's end
