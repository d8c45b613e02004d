"""OpenVINO ("openvino"): the same exported ONNX files (fp32, int8) compiled by OpenVINO for its CPU plugin.

Optional: `pip install 'gantool[openvino]'`. Without it, loading raises DeviceError("openvino
unavailable: ... (pip install ...)"), which bench turns into an `unavailable` row.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gantool.errors import ArtifactError, ConfigError, DeviceError, first_line
from gantool.runners.base import Runner, RunnerInfo

INSTALL_HINT = "pip install 'gantool[openvino]'"
# On CPUs with native bf16 (avx512_bf16, AMX) OpenVINO's own default hint runs f32 models in bf16.
# gantool pins f32, so an fp32 row is fp32 on every machine and an int8 file's float parts stay
# f32; the compiled model's value is what gets recorded.
DEFAULT_HINT = "f32"
_OV_DTYPES = {"f32": "fp32", "f16": "fp16"}


def import_openvino() -> Any:
    """The openvino module, or DeviceError with the pip command when it is not installed."""
    try:
        import openvino
    except ImportError as e:
        raise DeviceError(f"openvino unavailable: {first_line(e)}; {INSTALL_HINT}") from None
    return openvino


@functools.lru_cache(maxsize=1)
def shared_core() -> Any:
    """One openvino.Core for the whole process, never released.

    OpenVINO's CPU plugin points the calling thread's signal stack (sigaltstack) at a buffer of its
    own on compile_model and puts the previous one back when that Core is destroyed. Two Cores
    destroyed in any other order than last-in-first-out leave the thread on a freed buffer, and the
    next signal with a Python handler (Ctrl-C in `gantool train`) crashes the process with SIGSEGV
    (seen in the test session: bench's openvino rows, then training's Ctrl-C test). One Core that
    lives as long as the process keeps that stack valid (tests/test_runners_openvino.py)."""
    return import_openvino().Core()


def _metadata(path: str | Path) -> dict[str, str]:
    """gantool.* metadata_props of the ONNX file (OpenVINO's model does not carry them)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - DecodeError, OSError, ...: not an ONNX file
        raise ArtifactError(f"{path} is not a readable ONNX model: {first_line(e, 200)}") from None
    return {p.key: p.value for p in model.metadata_props}


class OpenVinoRunner(Runner):
    """An ONNX artifact compiled by OpenVINO for the CPU; numpy in, numpy out."""

    def __init__(self, path: str | Path, device: str = "cpu", dtype: str | None = "auto",
                 threads: int | None = None, precision_hint: str = DEFAULT_HINT):
        from gantool.runners.onnx_runner import io_types, quantization_of
        from gantool.signature import Signature, artifact_dtype, resolve_dtype

        if device not in ("cpu", None, "auto"):
            raise ConfigError(f"backend 'openvino' runs OpenVINO's CPU plugin, not {device}")
        if Path(path).suffix.lower() != ".onnx":
            raise ConfigError(f"backend 'openvino' runs exported ONNX files; {path} is not one")
        ov = import_openvino()
        meta = _metadata(path)
        core = shared_core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision_hint, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError for any unusable file
            raise ArtifactError(f"{path}: OpenVINO cannot read or compile it: {first_line(e, 200)}") from None
        inp, out = self.compiled.inputs, self.compiled.outputs
        sig = Signature.from_metadata(meta, path)
        if len(inp) != len(sig.inputs) or len(out) != 1:
            raise ArtifactError(f"{path}: the model takes {len(inp)} input(s) and gives {len(out)}; its signature says "
                                f"{len(sig.inputs)} -> 1")
        io = _OV_DTYPES.get(inp[0].get_element_type().get_type_name())
        if io is None:
            raise ArtifactError(f"{path}: input element type {inp[0].get_element_type()} is not fp32 or fp16")
        name = resolve_dtype(dtype, artifact_dtype(meta, io, path), path)
        self.np_dtype, _ = io_types(name)
        self.request = self.compiled.create_infer_request()
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.info = RunnerInfo("openvino", "cpu", name, sig, str(path), {
            "openvino": ov.get_version(), "inference_precision_hint": getattr(hint, "get_type_name", lambda: str(hint))(),
            "threads": threads or 0, "metadata": meta, **quantization_of(meta),
        })

    def prepare(self, z: torch.Tensor, labels: Any = None) -> dict[int, np.ndarray]:
        from gantool.runners.onnx_runner import numpy_feed

        return dict(enumerate(numpy_feed(self.info.signature, self.inputs(z, labels), self.np_dtype).values()))

    def run(self, x: np.ndarray) -> np.ndarray:
        # share_outputs=False (the default) copies the result out of the request's buffer, so the
        # next call cannot overwrite it: the same cost as ONNX Runtime allocating its output.
        return self.request.infer(x, share_inputs=True)[0]

    def to_cpu(self, y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(y, dtype=np.float32))

    def sync(self) -> None:
        pass  # infer() is synchronous

