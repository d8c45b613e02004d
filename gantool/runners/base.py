"""The Runner interface (z -> images) every backend implements, and the backend registry it lives in."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from gantool.errors import ArtifactError


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
    # A runner that times its own calls (a browser page's performance.now()) names its clock here
    # and sets last_run_s in run(); bench then reports that time instead of the host's round trip.
    clock: str | None = None
    last_run_s: float | None = None

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
