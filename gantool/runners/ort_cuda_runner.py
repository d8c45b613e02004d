"""ONNX Runtime CUDA EP with I/O binding ("ort-cuda", "ort-cuda-graph") and TensorRT EP ("ort-trt").

Never a silent fallback: if the provider cannot load, or the session's get_providers() does not
list it, the runner raises DeviceError("<backend> unavailable: <reason>"). fp32 is IEEE fp32
(CUDA EP use_tf32=0; TensorRT only under NVIDIA_TF32_OVERRIDE=0); "tf32" is its own precision on
the same fp32 artifact.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gantool.errors import ConfigError, DeviceError
from gantool.runners.base import Runner, RunnerInfo
from gantool.runners.onnx_runner import _ELEM, SessionSettings, _describe, _OrtBase, _session, provider_load_reason
from gantool.runners.ort_options import split
from gantool.signature import resolve_dtype

GRAPH_CAPTURE_RUNS = 3  # ORT captures a gpu_graph_id's graph on its 3rd run (2 regular runs first)
TF32_OVERRIDE = "NVIDIA_TF32_OVERRIDE"


def memory_device(index: int) -> torch.device:
    """Where the runner's buffers live (a seam: the fake-ORT tests put them on the host)."""
    return torch.device("cuda", index)


@dataclass
class _Bound:
    """A prepared input on the GPU. Plain mode: bound with the batch size's one output buffer.
    Graph mode: only z; run() copies it into the batch size's static (captured) input."""

    x: torch.Tensor  # (N, latent) on cuda
    binding: Any = None


@dataclass
class _Static:
    """Per batch size: the buffers a captured graph reads and writes, bound once."""

    x: torch.Tensor
    out: torch.Tensor
    binding: Any
    graph_id: int


def _why(provider: str) -> str:
    import onnxruntime as ort

    return provider_load_reason(provider) or f"onnxruntime {ort.__version__} could not initialise it on this GPU"


class OrtCudaRunner(_OrtBase):
    """ONNX Runtime CUDA (or TensorRT) EP with I/O binding: the timed run() does no host copies.

    Everything runs on one torch-created stream (user_compute_stream), which is also the stream
    bench's CUDA events are recorded on. With cuda_graph=True ORT captures one graph a batch size
    (gpu_graph_id); capture() drives the runs that capture it, before anything is timed.
    """

    def __init__(self, path: str | Path, device: str = "cuda", dtype: str | None = "auto",
                 cuda_graph: bool = False, tensorrt: bool = False, settings: SessionSettings | None = None,
                 trt_batch_sizes: list[int] | None = None, cache_dir: str | Path | None = None):
        import onnxruntime as ort

        self._args = (path, device, dtype)
        self._kwargs = {"cuda_graph": cuda_graph, "tensorrt": tensorrt, "settings": settings,
                        "trt_batch_sizes": trt_batch_sizes, "cache_dir": cache_dir}
        settings = settings or SessionSettings()
        backend = "ort-trt" if tensorrt else ("ort-cuda-graph" if cuda_graph else "ort-cuda")
        provider = "TensorrtExecutionProvider" if tensorrt else "CUDAExecutionProvider"
        if provider not in ort.get_available_providers():
            raise DeviceError(f"{backend} unavailable: onnxruntime {ort.__version__} has no {provider} "
                              f"(install onnxruntime-gpu)")
        # No device is the reason a user needs first; the TF32 policy matters only where it could run.
        dev = torch.device("cuda" if device in (None, "auto") else device)
        if dev.type != "cuda":
            raise ConfigError(f"backend {backend} runs on CUDA, not {dev}")
        if not torch.cuda.is_available():
            raise DeviceError(f"{backend} unavailable: {_why(provider)}")
        tf32 = dtype == "tf32"
        if tensorrt:
            override = os.environ.get(TF32_OVERRIDE)
            if not tf32 and dtype in ("fp32", "auto", None) and override != "0":
                raise ConfigError(f"ort-trt fp32: TensorRT builds fp32 engines with TF32 and ORT's TensorRT EP has "
                                  f"no switch for it; run with {TF32_OVERRIDE}=0 for IEEE fp32 (or time tf32)")
        if tf32 and os.environ.get(TF32_OVERRIDE) == "0":
            raise ConfigError(f"tf32: {TF32_OVERRIDE}=0 in this process turns TF32 off in every NVIDIA library")
        index = dev.index or 0
        self._mem, self._index = memory_device(index), index
        # A non-default stream shared by torch (copies) and ORT (kernels) orders them without host
        # syncs; CUDA graphs cannot be captured on the legacy default stream.
        self._stream = torch.cuda.Stream(index)
        _, cuda_opts, trt_opts = split(settings.options or {})
        base = {"device_id": str(index), "has_user_compute_stream": "1",
                "user_compute_stream": str(self._stream.cuda_stream)}
        cuda = {**base, "use_tf32": "1" if tf32 else "0", **cuda_opts}
        if cuda_graph:
            cuda["enable_cuda_graph"] = "1"
        providers: list[Any] = []
        recorded = {**settings.record()}
        if tensorrt:
            trt = {**base, **self._trt_options(dtype, trt_batch_sizes, cache_dir, settings), **trt_opts}
            providers.append((provider, trt))
            recorded["tensorrt"] = {k: v for k, v in trt.items() if k != "user_compute_stream"}
        providers += [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]  # TRT: nodes TensorRT rejects
        recorded["cuda"] = {k: v for k, v in cuda.items() if k != "user_compute_stream"}
        t0 = time.perf_counter()
        self.session = _session(path, providers, settings)
        build_s = time.perf_counter() - t0
        got = self.session.get_providers()
        if provider not in got:
            raise DeviceError(f"{backend} unavailable: session providers are {got}; {_why(provider)}")
        self.in_name, self.out_name, art, sig, _ = _describe(self.session, path)
        if sig.label is not None:  # io binding below binds one input; a second (labels) is not bound yet
            raise ConfigError(f"{backend} binds one input; {path} also takes class labels "
                              f"({sig.label.name}): run it with ort or openvino")
        name = resolve_dtype("fp32" if tf32 else dtype, art, path)
        _, self.np_dtype, self.torch_dtype = next(v for v in _ELEM.values() if v[0] == name)
        self.graph = cuda_graph
        self._static: dict[int, _Static] = {}  # batch size -> captured buffers (graph mode)
        self._out: dict[int, torch.Tensor] = {}  # batch size -> the one output buffer (plain mode)
        self._run_options: dict[tuple[int, bool], Any] = {}
        self._lanes: list[OrtCudaRunner] = []  # throughput mode: sessions on other streams
        extra: dict[str, Any] = {"providers": got, "io_binding": True, "cuda_graph": cuda_graph, "options": recorded}
        if tensorrt:  # with explicit profiles TensorRT builds (or loads) the engine at session creation
            extra["engine_build_s"] = build_s
        self.info = RunnerInfo(backend, str(torch.device("cuda", index)), "tf32" if tf32 else name, sig,
                               str(path), extra)

    def _trt_options(self, dtype, batch_sizes, cache_dir, settings) -> dict[str, str]:
        """One explicit profile over --batch-sizes (opt at the largest: the throughput end), engine
        and timing caches under the cache dir, fp16 kernels for fp16 rows.

        One profile, not one per batch size: ORT 1.31's TensorRT EP parses several profiles but
        executes on profile 0 only (microsoft/onnxruntime PR #31624)."""
        import onnx

        sizes = sorted(batch_sizes or [1])
        model = onnx.load(self._args[0], load_external_data=False)
        inp = model.graph.input[0]
        latent = inp.type.tensor_type.shape.dim[1].dim_value
        root = Path(cache_dir or Path(os.environ.get("GANTOOL_CACHE", Path.home() / ".cache" / "gantool"))) / "tensorrt"
        root.mkdir(parents=True, exist_ok=True)
        shape = lambda b: f"{inp.name}:{b}x{latent}"  # noqa: E731
        return {"trt_profile_min_shapes": shape(sizes[0]), "trt_profile_opt_shapes": shape(sizes[-1]),
                "trt_profile_max_shapes": shape(sizes[-1]), "trt_engine_cache_enable": "1",
                "trt_engine_cache_path": str(root / "engines"), "trt_timing_cache_enable": "1",
                "trt_timing_cache_path": str(root / "timing"), "trt_fp16_enable": "1" if dtype == "fp16" else "0"}

    @property
    def stream(self) -> Any:
        return self._stream

    def _bind(self, x: torch.Tensor, out: torch.Tensor) -> Any:
        b = self.session.io_binding()
        idx = self._index
        b.bind_input(self.in_name, "cuda", idx, self.np_dtype, tuple(x.shape), x.data_ptr())
        b.bind_output(self.out_name, "cuda", idx, self.np_dtype, tuple(out.shape), out.data_ptr())
        return b

    def _new_out(self, n: int) -> torch.Tensor:
        return torch.empty((n, *self.info.img_shape), dtype=self.torch_dtype, device=self._mem)

    def prepare(self, z: torch.Tensor, labels: Any = None) -> _Bound:
        with torch.cuda.stream(self._stream):
            x = self.shaped(z).to(self._mem, self.torch_dtype).contiguous()
            n = x.shape[0]
            if self.graph:
                if n not in self._static:  # bound once per batch size; no output buffer per input
                    sx = torch.empty_like(x)
                    out = self._new_out(n)
                    self._static[n] = _Static(sx, out, self._bind(sx, out), len(self._static) + 1)
                bound = _Bound(x)
            else:
                if n not in self._out:
                    self._out[n] = self._new_out(n)
                bound = _Bound(x, self._bind(x, self._out[n]))
        self._stream.synchronize()  # untimed: z is on the device before run() starts
        return bound

    def _options(self, graph_id: int, queue: bool) -> Any:
        """RunOptions per (graph id, queued): gpu_graph_id picks the batch size's graph; queued runs
        skip ORT's end-of-run stream sync (throughput mode issues calls back to back)."""
        key = (graph_id, queue)
        if key not in self._run_options:
            import onnxruntime as ort

            ro = ort.RunOptions()
            if graph_id >= 0:
                ro.add_run_config_entry("gpu_graph_id", str(graph_id))
            if queue:
                ro.add_run_config_entry("disable_synchronize_execution_providers", "1")
            self._run_options[key] = ro
        return self._run_options[key]

    def _run(self, x: _Bound, queue: bool) -> torch.Tensor:
        n = x.x.shape[0]
        if not self.graph:
            self.session.run_with_iobinding(x.binding, self._options(-1, queue))
            return self._out[n]
        static = self._static[n]
        with torch.cuda.stream(self._stream):
            static.x.copy_(x.x, non_blocking=True)  # device to device, ordered before the replay
        self.session.run_with_iobinding(static.binding, self._options(static.graph_id, queue))
        return static.out  # overwritten by the next run of this batch size: to_cpu() it first

    def run(self, x: _Bound) -> torch.Tensor:
        return self._run(x, queue=False)

    def run_async(self, x: _Bound) -> torch.Tensor:
        return self._run(x, queue=True)

    def capture(self, x: _Bound) -> None:
        """ORT captures a gpu_graph_id's graph on its 3rd run; drive those runs now, untimed."""
        for _ in range(GRAPH_CAPTURE_RUNS):
            self.run(x)
        self.sync()

    def lanes(self, n: int) -> list[Runner]:
        """Throughput mode: n sessions, each on its own stream (an ORT session runs on one stream)."""
        while len(self._lanes) < n - 1:  # kept: one load per runner, not per row
            self._lanes.append(type(self)(*self._args, **self._kwargs))
        return [self, *self._lanes[:max(0, n - 1)]]

    def to_cpu(self, y: torch.Tensor) -> torch.Tensor:
        with torch.cuda.stream(self._stream):
            out = y.to("cpu", torch.float32)
        return out

    def sync(self) -> None:
        self._stream.synchronize()


def cuda(src: Any, device: str = "cuda", dtype: str | None = "auto", **kw: Any) -> Runner:
    return OrtCudaRunner(src, device if device != "cpu" else "cuda", dtype, **kw)


def cuda_graph(src: Any, device: str = "cuda", dtype: str | None = "auto", **kw: Any) -> Runner:
    return OrtCudaRunner(src, device if device != "cpu" else "cuda", dtype, cuda_graph=True, **kw)


def tensorrt(src: Any, device: str = "cuda", dtype: str | None = "auto", **kw: Any) -> Runner:
    return OrtCudaRunner(src, device if device != "cpu" else "cuda", dtype, tensorrt=True, **kw)
