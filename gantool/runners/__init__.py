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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from gantool.errors import ArtifactError, ConfigError


@dataclass
class RunnerInfo:
    """What a runner is, for reports: backend name, device, dtype, the file it came from."""

    backend: str
    device: str
    dtype: str
    latent_dim: int
    img_shape: tuple[int, int, int]
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Runner:
    """z (N, latent) -> images (N, C, H, W). Subclasses implement prepare/run and set `info`."""

    info: RunnerInfo

    @property
    def name(self) -> str:
        return f"{self.info.backend}[{self.info.device},{self.info.dtype}]"

    @property
    def device(self) -> torch.device:
        return torch.device(self.info.device)

    def prepare(self, z: torch.Tensor) -> Any:
        """Convert float32 CPU z into this runner's native input (device, dtype, numpy...)."""
        raise NotImplementedError

    def run(self, x: Any) -> Any:
        """The timed forward pass on a prepared input; returns the native output."""
        raise NotImplementedError

    def to_cpu(self, y: Any) -> torch.Tensor:
        """Native output -> float32 CPU tensor (N, C, H, W)."""
        if isinstance(y, torch.Tensor):
            return y.detach().to("cpu", torch.float32)
        return torch.as_tensor(y).to(torch.float32)

    def sync(self) -> None:
        from gantool.device import sync

        sync(self.device)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        z = torch.as_tensor(z, dtype=torch.float32)
        if z.ndim != 2 or z.shape[1] != self.info.latent_dim:
            raise ArtifactError(f"{self.name}: z must be (N, {self.info.latent_dim}), got {tuple(z.shape)}")
        y = self.to_cpu(self.run(self.prepare(z)))
        self.sync()
        return y



class ModuleRunner(Runner):
    """A Runner around a torch callable (eager/compiled module, TorchScript, AOTI package):
    subclasses set `module`, `dtype` and `info`; input is cast to the runner's device and dtype."""

    module: Callable[[torch.Tensor], torch.Tensor]
    dtype: torch.dtype

    def prepare(self, z: torch.Tensor) -> torch.Tensor:
        return z.to(self.device, self.dtype).contiguous()

    @torch.inference_mode()
    def run(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

# backend name -> factory(path_or_checkpoint, device, dtype, **options) -> Runner
_REGISTRY: dict[str, Callable[..., Runner]] = {}


def register(*names: str):
    def deco(factory: Callable[..., Runner]) -> Callable[..., Runner]:
        for n in names:
            _REGISTRY[n] = factory
        return factory

    return deco


def backends() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def _import_all() -> None:
    # Each module registers its backends on import; heavy deps are imported lazily inside them.
    from gantool.runners import torch_runner  # noqa: F401

    for mod in ("torchscript_runner", "onnx_runner", "aoti_runner"):
        try:
            __import__(f"gantool.runners.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"gantool.runners.{mod}":
                raise


def backend_for_path(path: str | Path) -> str:
    """Infer the backend from an artifact's suffix; a run dir or .pt checkpoint means eager."""
    p = Path(path)
    suffix = "".join(p.suffixes[-1:]).lower()
    if p.is_dir() or p.name.endswith(".ckpt") or p.name == "checkpoint.pt":
        return "eager"
    return {".onnx": "ort", ".ts": "torchscript", ".pt2": "aoti"}.get(suffix, "eager")


def load_runner(
    source: str | Path, backend: str | None = None, *, device: str = "cpu", dtype: str = "fp32", **options: Any
) -> Runner:
    """Open `source` (checkpoint, run dir or exported artifact) with `backend` (inferred if None)."""
    _import_all()
    backend = backend or backend_for_path(source)
    if backend not in _REGISTRY:
        raise ConfigError(f"unknown backend {backend!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    if not Path(source).exists():
        raise ArtifactError(f"not found: {source}")
    return _REGISTRY[backend](source, device=device, dtype=dtype, **options)
