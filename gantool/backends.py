"""The one table of backends: what each runs, on which devices, how it is loaded, what it can do.

    spec = backends.get("ort")          # -> Backend(name="ort", format="onnx", ...)
    runner = spec.factory()(path, device="cpu", dtype="auto")

Bench's defaults, the CLI's help and error texts, serve's choice, the int8 and CUDA lists are all read
from here. A new backend is one runner module and one `register(Backend(...))` (a test can register
one of its own). The loaders are named as "module:function" and imported when first used, so that
`gantool --help` and this table stay free of torch and the runtimes.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from gantool.errors import ConfigError


@dataclass(frozen=True)
class Backend:
    """One backend. `format`: the export format it runs (None: the generator itself, from a checkpoint or
    module). `options`: which of bench's load options it takes ("threads", "ort_session", "trt")."""

    name: str
    loader: str | Callable[..., Any]  # "module:function" (imported when first used) or the factory itself
    format: str | None = None
    devices: tuple[str, ...] = ("cpu",)  # "cuda" alone: runs on CUDA whatever --device says
    default_on: tuple[str, ...] = ()  # devices where bench runs it when --backends is not given
    int8: bool = False  # runs the int8 ONNX file
    cuda_provider: str | None = None  # ONNX Runtime EP that must have loaded for a row to be timed
    remote: bool = False  # a server runs it: the row's device is "remote", its source --url
    requires: str | None = None  # an optional module: default only where it is installed
    serves: bool = False  # `gantool serve --backend NAME` runs batches with it
    aliases: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    about: str = ""  # a few words for the CLI's help

    @property
    def cuda_only(self) -> bool:
        return self.devices == ("cuda",)

    def factory(self) -> Callable[..., Any]:
        if callable(self.loader):
            return self.loader
        module, _, attr = self.loader.partition(":")
        return getattr(importlib.import_module(module), attr)

    def installed(self) -> bool:
        import importlib.util

        return self.requires is None or importlib.util.find_spec(self.requires) is not None


_TABLE: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Add (or replace) a backend; returns it."""
    _TABLE[backend.name] = backend
    return backend


def unregister(name: str) -> None:
    _TABLE.pop(name, None)


def table() -> list[Backend]:
    return list(_TABLE.values())


def names(**where: Any) -> list[str]:
    """Backend names in table order, optionally only those whose fields equal `where` (e.g. serves=True)."""
    return [b.name for b in _TABLE.values() if all(getattr(b, k) == v for k, v in where.items())]


def get(name: str, what: str = "backend") -> Backend:
    """The backend called `name` (or one of its aliases); ConfigError naming the choices otherwise."""
    if name in _TABLE:
        return _TABLE[name]
    for b in _TABLE.values():
        if name in b.aliases:
            return b
    raise ConfigError(f"unknown {what} {name!r}; choose one of: {', '.join(_TABLE)}")


def default_backends(device: str) -> list[str]:
    """What bench runs without --backends: every backend meaningful on the device that is installed."""
    return [b.name for b in _TABLE.values() if device in b.default_on and b.installed()]


def for_format(fmt: str) -> list[str]:
    return [b.name for b in _TABLE.values() if b.format == fmt]


def help_text() -> str:
    """The --backends help: every name with its few words, and what runs by default."""
    parts = [f"{b.name}" + (f" ({b.about})" if b.about else "") for b in _TABLE.values()]
    return ("Comma list: " + ", ".join(parts) + ". Default: all that make sense on the device ("
            + ", ".join(b.name for b in _TABLE.values() if not b.default_on) + " only when named).")


_R = "gantool.runners."
for _b in (
    Backend("eager", _R + "torch_runner:eager", devices=("cpu", "cuda"), default_on=("cpu", "cuda")),
    Backend("compile", _R + "torch_runner:compiled", devices=("cpu", "cuda"), default_on=("cpu", "cuda")),
    Backend("compile-reduce-overhead", _R + "torch_runner:compiled_reduce_overhead", devices=("cpu", "cuda"),
            default_on=("cuda",)),
    Backend("torchscript", _R + "torchscript_runner:TorchScriptRunner", "torchscript", ("cpu", "cuda"),
            ("cpu", "cuda"), serves=True, aliases=("torch",), about="TorchScript"),
    Backend("aoti", _R + "aoti_runner:AOTIRunner", "aoti", ("cpu", "cuda"), ("cpu", "cuda"), about="AOTInductor"),
    Backend("ort", _R + "onnx_runner:OrtRunner", "onnx", ("cpu",), ("cpu",), int8=True, serves=True,
            options=("threads", "ort_session"), about="ONNX Runtime CPU"),
    Backend("openvino", _R + "openvino_runner:OpenVinoRunner", "onnx", ("cpu",), ("cpu",), int8=True,
            requires="openvino", serves=True, options=("threads",), about="OpenVINO CPU; an optional extra"),
    Backend("ort-cuda", _R + "ort_cuda_runner:cuda", "onnx", ("cuda",), ("cuda",),
            cuda_provider="CUDAExecutionProvider", options=("ort_session",)),
    Backend("ort-cuda-graph", _R + "ort_cuda_runner:cuda_graph", "onnx", ("cuda",), ("cuda",),
            cuda_provider="CUDAExecutionProvider", options=("ort_session",)),
    Backend("ort-trt", _R + "ort_cuda_runner:tensorrt", "onnx", ("cuda",), cuda_provider="TensorrtExecutionProvider",
            options=("ort_session", "trt"), about="TensorRT through ONNX Runtime"),
    Backend("web", _R + "web_runner:WebRunner", "onnx",
            about="ONNX Runtime Web in headless Chromium; needs scripts/web_deps.sh"),
    Backend("triton", _R + "triton_runner:load_triton", int8=True, remote=True, about="a Triton server; needs --url"),
):
    register(_b)
