"""ONNX Runtime on the CPU execution provider ("ort"), and the session settings every ORT runner shares (ort_cuda_runner: CUDA/TensorRT)."""
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
from gantool.runners.base import Runner, RunnerInfo
from gantool.runners.ort_options import GRAPH_OPT_LEVELS, split
from gantool.signature import Signature, artifact_dtype, resolve_dtype

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


@dataclass
class SessionSettings:
    """What gantool sets on an ORT SessionOptions; all of it is recorded with the row."""

    threads: int | None = None  # intra-op
    inter_op_threads: int | None = None
    graph_opt_level: str | None = None  # disable | basic | extended | layout | all (ORT default: all)
    options: dict[str, str] | None = None  # validated --ort-option items (gantool.runners.ort_options)
    profile_prefix: str | None = None  # --profile: ORT writes <prefix>_<date>.json at end_profiling()

    def record(self) -> dict[str, Any]:
        return {"intra_op_threads": self.threads or 0, "inter_op_threads": self.inter_op_threads or 0,
                "graph_opt_level": self.graph_opt_level or "all (ORT default)"}


def _session(path: str | Path, providers: list[Any], settings: SessionSettings):
    ort = onnxruntime()

    so = ort.SessionOptions()
    so.log_severity_level = 3  # this session only: ORT's global log level stays as the user set it
    if settings.threads:
        so.intra_op_num_threads = int(settings.threads)
        so.inter_op_num_threads = 1  # sequential mode: one thread pool of --threads
    if settings.inter_op_threads:
        so.inter_op_num_threads = int(settings.inter_op_threads)
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL  # inter-op threads only run in parallel mode
    if settings.graph_opt_level:
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPT_LEVELS[settings.graph_opt_level])
    for k, v in split(settings.options or {})[0].items():
        so.add_session_config_entry(k, v)
    if settings.profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = settings.profile_prefix
    try:
        if providers == ["CPUExecutionProvider"]:
            return ort.InferenceSession(str(path), so, providers=providers)
        # A GPU provider that fails to load prints an "EP Error" banner before falling back; the
        # caller turns that into one DeviceError line.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return ort.InferenceSession(str(path), so, providers=providers)
    except Exception as e:  # InvalidProtobuf, Fail, NoSuchFile ...: all mean a bad artifact
        raise ArtifactError(f"{path} is not a loadable ONNX model: {first_line(e)[:200]}") from None


def _describe(session, path: str | Path) -> tuple[str, str, str, Signature, dict[str, str]]:
    """(input name, output name, dtype, signature, gantool metadata) from the session."""
    inp, out = session.get_inputs(), session.get_outputs()
    meta = dict(session.get_modelmeta().custom_metadata_map)
    sig = Signature.from_metadata(meta, path)
    if [i.name for i in inp] != [i.name for i in sig.inputs] or len(out) != 1:
        raise ArtifactError(f"{path}: the graph takes {[i.name for i in inp]} and gives {len(out)} output(s); "
                            f"its signature says {[i.name for i in sig.inputs]} -> {sig.output_name}")
    if inp[0].type not in _ELEM:
        raise ArtifactError(f"{path}: input element type {inp[0].type} is not fp32 or fp16")
    return inp[0].name, out[0].name, artifact_dtype(meta, _ELEM[inp[0].type][0], path), sig, meta


def numpy_feed(sig: Signature, inputs: tuple[torch.Tensor, ...], float_type: Any) -> dict[str, np.ndarray]:
    """{input name: contiguous numpy array}: floats cast to `float_type`, labels kept int64."""
    return {i.name: np.ascontiguousarray(t.detach().cpu().numpy().astype(float_type if t.is_floating_point() else np.int64,
                                                                          copy=False))
            for i, t in zip(sig.inputs, inputs)}


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


class _OrtBase(Runner):
    """What the CPU and CUDA runners share: the profiled re-open for --profile."""

    _args: tuple
    _kwargs: dict[str, Any]

    def profile_call(self, z: torch.Tensor, out_dir: Path, stem: str) -> list[Path]:
        """One call on a fresh session with ORT profiling on; returns ORT's profile JSON."""
        settings = SessionSettings(**{**vars(self._kwargs.get("settings") or SessionSettings()),
                                      "profile_prefix": str(Path(out_dir) / f"{stem}.ort")})
        twin = type(self)(*self._args, **{**self._kwargs, "settings": settings})
        twin.run(twin.prepare(z))
        twin.sync()
        return [Path(twin.session.end_profiling())]


class OrtRunner(_OrtBase):
    """ONNX Runtime on the CPU execution provider; numpy in, numpy out."""

    def __init__(self, path: str | Path, device: str = "cpu", dtype: str | None = "auto", threads: int | None = None,
                 settings: SessionSettings | None = None):
        if device not in ("cpu", None, "auto"):
            raise ConfigError(f"backend 'ort' is ONNX Runtime's CPU provider; for {device} use ort-cuda")
        if dtype == "tf32":
            raise ConfigError("tf32 is a CUDA tensor-core math mode; ONNX Runtime's CPU provider has only IEEE fp32")
        settings = settings or SessionSettings(threads=threads)
        if threads and not settings.threads:
            settings.threads = threads
        self._args, self._kwargs = (path, device, dtype), {"settings": settings}
        self.session = _session(path, ["CPUExecutionProvider"], settings)
        self.in_name, self.out_name, art, sig, meta = _describe(self.session, path)
        name = resolve_dtype(dtype, art, path)
        self.np_dtype, _ = io_types(name)
        self.info = RunnerInfo("ort", "cpu", name, sig, str(path),
                               {"providers": self.session.get_providers(), "threads": settings.threads or 0,
                                "options": {**settings.record(), **split(settings.options or {})[0]},
                                "metadata": meta, **quantization_of(meta)})

    def prepare(self, z: torch.Tensor, labels: Any = None) -> dict[str, np.ndarray]:
        """The session's feed: z in the file's float type, labels (a conditional G) as int64."""
        return numpy_feed(self.info.signature, self.inputs(z, labels), self.np_dtype)

    def run(self, x: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([self.out_name], x)[0]

    def to_cpu(self, y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(y, dtype=np.float32))

    def sync(self) -> None:
        pass  # session.run returns when the work is done


def provider_load_reason(provider: str) -> str | None:
    """Why a CUDA/TensorRT provider cannot run here (its library does not load, or no CUDA device), or None."""
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
    return None



