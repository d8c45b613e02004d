"""Load any generator artifact -> a Runner: the one interface that parity, bench, sample and eval use.

    runner = load_runner("exported/generator.onnx", device="cpu")
    images = runner(z)            # z: float32 (N, latent) on CPU -> float32 (N, 1, 28, 28) on CPU

For timing, bench splits the call so host<->device copies stay out of the timed region:

    x = runner.prepare(z)         # move/cast once, untimed
    y = runner.run(x)             # the timed part; output stays native (device, dtype)
    runner.sync()                 # wait for queued work before reading a timer
    images = runner.to_cpu(y)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gantool.errors import ArtifactError, ConfigError
from gantool.runners.base import _REGISTRY, ModuleRunner, Runner, RunnerInfo, register

__all__ = ["ModuleRunner", "Runner", "RunnerInfo", "backend_for_path", "backends", "load_runner", "register"]


TORCH_BACKENDS = ("eager", "compile", "compile-reduce-overhead", "torchscript", "aoti")


def backends() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def _import_all() -> None:
    # Each module registers its backends on import; heavy deps are imported lazily inside them.
    from gantool.runners import torch_runner  # noqa: F401

    for mod in ("torchscript_runner", "onnx_runner", "ort_cuda_runner", "aoti_runner", "openvino_runner", "web_runner",
                "triton_runner"):
        try:
            __import__(f"gantool.runners.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"gantool.runners.{mod}":
                raise


def backend_for_path(path: str | Path) -> str:
    """Infer the backend from an artifact's suffix; a run dir or .pt checkpoint means eager."""
    if not isinstance(path, (str, Path)):
        return "eager"  # a GeneratorSource (a user generator) runs in PyTorch
    from gantool.export import format_of

    p = Path(path)
    if p.is_dir() or p.name.endswith(".ckpt") or p.name == "checkpoint.pt":
        return "eager"
    fmt = format_of(p)
    return fmt.backend if fmt else "eager"


def load_runner(
    source: str | Path, backend: str | None = None, *, device: str = "cpu", dtype: str = "fp32", **options: Any
) -> Runner:
    """Open `source` (checkpoint, run dir or exported artifact) with `backend` (inferred if None)."""
    _import_all()
    backend = backend or backend_for_path(source)
    if backend not in _REGISTRY:
        raise ConfigError(f"unknown backend {backend!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    if isinstance(source, (str, Path)) and not getattr(_REGISTRY[backend], "remote", False) and not Path(source).exists():
        raise ArtifactError(f"not found: {source}")
    if backend_for_path(source) == "ort" and backend in TORCH_BACKENDS:
        runs = "PyTorch checkpoints" if backend.startswith(("eager", "compile")) else f"{backend} artifacts"
        raise ConfigError(f"{source} is an ONNX artifact and backend {backend} runs {runs}; "
                          "open ONNX files (fp32, fp16, int8) with ort or openvino")
    return _REGISTRY[backend](source, device=device, dtype=dtype, **options)
