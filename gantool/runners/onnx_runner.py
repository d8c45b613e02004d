"""ONNX Runtime runners: CPU EP ("ort"), CUDA EP with I/O binding ("ort-cuda", "ort-cuda-graph"), TensorRT EP ("ort-trt").

The CUDA/TensorRT runners never fall back silently: if the provider cannot load, or the session's
get_providers() shows only CPU, they raise DeviceError("<backend> unavailable: <reason>").
"""
from __future__ import annotations

import contextlib
import ctypes
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gantool.errors import ArtifactError, ConfigError, DeviceError, first_line
from gantool.runners.base import Runner, RunnerInfo, register
from gantool.runners.torchscript_runner import resolve_artifact_dtype

# ONNX tensor element types gantool exports -> (dtype name, numpy dtype, torch dtype)
_ELEM = {
    "tensor(float)": ("fp32", np.float32, torch.float32),
    "tensor(float16)": ("fp16", np.float16, torch.float16),
}


def onnxruntime():
    """The onnxruntime module, or one line on how to install it (it comes from gantool's [gpu] or [cpu] extra)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise DeviceError(f"ONNX Runtime is not installed ({first_line(e)}): pip install onnxruntime "
                          "(CPU only, or the gantool[cpu] extra) or onnxruntime-gpu (gantool[gpu])") from None
    return ort


def _session(path: str | Path, providers: list[Any], threads: int | None = None):
    ort = onnxruntime()

    so = ort.SessionOptions()
    so.log_severity_level = 3  # provider-load chatter is summarised in our own one-line reason
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    try:
        if providers == ["CPUExecutionProvider"]:
            return ort.InferenceSession(str(path), so, providers=providers)
        # A GPU provider that fails to load logs errors and prints an "EP Error" banner before
        # falling back; the caller turns that into one DeviceError line, so keep both quiet.
        ort.set_default_logger_severity(4)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return ort.InferenceSession(str(path), so, providers=providers)
    except Exception as e:  # InvalidProtobuf, Fail, NoSuchFile ...: all mean a bad artifact
        first = first_line(e)
        raise ArtifactError(f"{path} is not a loadable ONNX model: {first[:200]}") from None
    finally:
        ort.set_default_logger_severity(2)  # back to ORT's default (warnings)


def _describe(session, path: str | Path) -> tuple[str, str, str, int, tuple[int, int, int]]:
    """(input name, output name, dtype, latent, img_shape) from the session and gantool metadata."""
    inp, out = session.get_inputs(), session.get_outputs()
    if len(inp) != 1 or len(out) != 1:
        raise ArtifactError(f"{path}: a generator has one input and one output, got {len(inp)} and {len(out)}")
    if inp[0].type not in _ELEM:
        raise ArtifactError(f"{path}: input element type {inp[0].type} is not fp32 or fp16")
    meta = session.get_modelmeta().custom_metadata_map
    try:
        latent = int(meta.get("gantool.latent_dim") or inp[0].shape[1])
        shape = tuple(int(v) for v in (meta.get("gantool.image_shape") or "1,28,28").split(","))
    except (ValueError, TypeError, IndexError):
        raise ArtifactError(f"{path}: cannot tell the latent size from input shape {inp[0].shape}") from None
    return inp[0].name, out[0].name, artifact_dtype(_ELEM[inp[0].type][0], meta), latent, shape  # type: ignore[return-value]


def artifact_dtype(io_dtype: str, metadata: dict[str, str]) -> str:
    """An int8 file (quantized by `gantool export --dtype int8`) takes and returns float32; its
    metadata says int8. Anything else is the dtype of its I/O."""
    return "int8" if io_dtype == "fp32" and metadata.get("gantool.dtype") == "int8" else io_dtype


def quantization_of(metadata: dict[str, str]) -> dict[str, Any]:
    """{"quantization": "static" | "dynamic"} for an int8 file gantool made, else {}."""
    import json

    try:
        return {"quantization": json.loads(metadata["gantool.quantization"])["method"]}
    except (KeyError, ValueError, TypeError):
        return {}


def io_types(dtype: str) -> tuple[Any, torch.dtype]:
    """(numpy, torch) element type of an artifact's z and images: float16 for fp16, else float32."""
    return (np.float16, torch.float16) if dtype == "fp16" else (np.float32, torch.float32)


class OrtRunner(Runner):
    """ONNX Runtime on the CPU execution provider; numpy in, numpy out."""

    def __init__(self, path: str | Path, device: str = "cpu", dtype: str | None = "auto", threads: int | None = None):
        if device not in ("cpu", None, "auto"):
            raise ConfigError(f"backend 'ort' is ONNX Runtime's CPU provider; for {device} use ort-cuda")
        self.session = _session(path, ["CPUExecutionProvider"], threads)
        self.in_name, self.out_name, art, latent, shape = _describe(self.session, path)
        name = resolve_artifact_dtype(dtype, art, path)
        self.np_dtype, _ = io_types(name)
        self.info = RunnerInfo("ort", "cpu", name, latent, shape, str(path),
                               {"providers": self.session.get_providers(), "threads": threads or 0,
                                **quantization_of(self.session.get_modelmeta().custom_metadata_map)})

    def prepare(self, z: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(z.detach().cpu().numpy().astype(self.np_dtype, copy=False))

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.out_name], {self.in_name: x})[0]

    def to_cpu(self, y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(y, dtype=np.float32))

    def sync(self) -> None:
        pass  # session.run returns when the work is done


def _provider_load_reason(provider: str) -> str:
    """Why a provider fell back to CPU: the loader's own message for its shared library."""
    ort = onnxruntime()

    lib = {"CUDAExecutionProvider": "libonnxruntime_providers_cuda.so",
           "TensorrtExecutionProvider": "libonnxruntime_providers_tensorrt.so"}[provider]
    path = Path(ort.__file__).parent / "capi" / lib
    if not path.exists():
        return f"{lib} is not part of this onnxruntime {ort.__version__} install"
    try:
        ctypes.CDLL(str(path))
    except OSError as e:
        return f"{lib} failed to load: {str(e).replace(str(path), lib).removeprefix(lib + ': ')}"
    if not torch.cuda.is_available():
        return "no CUDA device is visible"
    return f"onnxruntime {ort.__version__} could not initialise it on this GPU"


@dataclass
class _Bound:
    """A prepared input: z and the output buffer live on the GPU, bound to the session."""

    x: torch.Tensor  # (N, latent) on cuda
    out: torch.Tensor  # (N, C, H, W) on cuda
    binding: Any
    graph_id: int = -1


class OrtCudaRunner(Runner):
    """ONNX Runtime CUDA (or TensorRT) EP with I/O binding: the timed run() does no host copies.

    With cuda_graph=True ORT captures one CUDA graph a batch size (gpu_graph_id). A graph replays
    fixed addresses, so each batch size gets static input/output buffers; run() copies the
    prepared z into them on the same stream (device to device) and replays.
    """

    def __init__(self, path: str | Path, device: str = "cuda", dtype: str | None = "auto",
                 cuda_graph: bool = False, tensorrt: bool = False):
        ort = onnxruntime()

        backend = "ort-trt" if tensorrt else ("ort-cuda-graph" if cuda_graph else "ort-cuda")
        provider = "TensorrtExecutionProvider" if tensorrt else "CUDAExecutionProvider"
        if provider not in ort.get_available_providers():
            raise DeviceError(f"{backend} unavailable: onnxruntime {ort.__version__} has no {provider} "
                              f"(install onnxruntime-gpu)")
        dev = torch.device("cuda" if device in (None, "auto") else device)
        if dev.type != "cuda":
            raise ConfigError(f"backend {backend} runs on CUDA, not {dev}")
        index = dev.index or 0
        # A non-default stream shared by torch (copies) and ORT (kernels) orders them without host
        # syncs; CUDA graphs cannot be captured on the legacy default stream.
        self.stream = torch.cuda.Stream(index) if torch.cuda.is_available() else None
        opts: dict[str, str] = {"device_id": str(index)}
        if self.stream is not None:
            opts["user_compute_stream"] = str(self.stream.cuda_stream)
        if cuda_graph:
            opts["enable_cuda_graph"] = "1"
        providers: list[Any] = [(provider, opts)]
        if tensorrt:
            providers.append(("CUDAExecutionProvider", dict(opts)))  # nodes TensorRT rejects
        providers.append("CPUExecutionProvider")
        self.session = _session(path, providers)
        got = self.session.get_providers()
        if provider not in got or self.stream is None:
            raise DeviceError(f"{backend} unavailable: session providers are {got}; {_provider_load_reason(provider)}")
        self.in_name, self.out_name, art, latent, shape = _describe(self.session, path)
        name = resolve_artifact_dtype(dtype, art, path)
        self.np_dtype, self.torch_dtype = io_types(name)
        self.cuda_graph = cuda_graph
        self._static: dict[int, _Bound] = {}  # batch size -> captured buffers (graph mode)
        self._run_options: dict[int, Any] = {}
        self.info = RunnerInfo(backend, str(torch.device("cuda", index)), name, latent, shape, str(path),
                               {"providers": got, "io_binding": True, "cuda_graph": cuda_graph})

    def _bind(self, x: torch.Tensor) -> _Bound:
        out = torch.empty((x.shape[0], *self.info.img_shape), dtype=self.torch_dtype, device=x.device)
        b = self.session.io_binding()
        idx = x.device.index or 0
        b.bind_input(self.in_name, "cuda", idx, self.np_dtype, tuple(x.shape), x.data_ptr())
        b.bind_output(self.out_name, "cuda", idx, self.np_dtype, tuple(out.shape), out.data_ptr())
        return _Bound(x, out, b)

    def prepare(self, z: torch.Tensor) -> _Bound:
        with torch.cuda.stream(self.stream):
            x = z.to(self.device, self.torch_dtype, non_blocking=False).contiguous()
            bound = self._bind(x)
            n = x.shape[0]
            if self.cuda_graph and n not in self._static:
                static = self._bind(torch.empty_like(x))
                static.graph_id = len(self._static) + 1
                self._static[n] = static
        self.stream.synchronize()  # untimed: z is on the device before run() starts
        return bound

    def run(self, x: _Bound) -> torch.Tensor:
        ort = onnxruntime()

        if not self.cuda_graph:
            self.session.run_with_iobinding(x.binding)
            return x.out
        static = self._static[x.x.shape[0]]
        if static.graph_id not in self._run_options:
            ro = ort.RunOptions()
            ro.add_run_config_entry("gpu_graph_id", str(static.graph_id))
            self._run_options[static.graph_id] = ro
        with torch.cuda.stream(self.stream):
            static.x.copy_(x.x, non_blocking=True)  # device to device, ordered before the replay
        self.session.run_with_iobinding(static.binding, self._run_options[static.graph_id])
        return static.out  # overwritten by the next run of this batch size: to_cpu() it first

    def to_cpu(self, y: torch.Tensor) -> torch.Tensor:
        with torch.cuda.stream(self.stream):
            return y.to("cpu", torch.float32)

    def sync(self) -> None:
        self.stream.synchronize()


@register("ort")
def _ort(src: Any, device: str = "cpu", dtype: str | None = "auto", **kw: Any) -> Runner:
    return OrtRunner(src, device, dtype, **kw)


@register("ort-cuda")
def _ort_cuda(src: Any, device: str = "cuda", dtype: str | None = "auto", **kw: Any) -> Runner:
    return OrtCudaRunner(src, device if device != "cpu" else "cuda", dtype, **kw)


@register("ort-cuda-graph")
def _ort_cuda_graph(src: Any, device: str = "cuda", dtype: str | None = "auto", **kw: Any) -> Runner:
    return OrtCudaRunner(src, device if device != "cpu" else "cuda", dtype, cuda_graph=True, **kw)


@register("ort-trt")
def _ort_trt(src: Any, device: str = "cuda", dtype: str | None = "auto", **kw: Any) -> Runner:
    return OrtCudaRunner(src, device if device != "cpu" else "cuda", dtype, tensorrt=True, **kw)
