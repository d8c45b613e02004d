"""The Runner interface (z -> images) every backend implements (the backends themselves: gantool.backends)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from gantool.errors import ArtifactError, ConfigError
from gantool.signature import Signature


@dataclass
class RunnerInfo:
    """What a runner is, for reports: backend name, device, dtype, the file it came from."""

    backend: str
    device: str
    dtype: str
    signature: Signature  # what the generator takes and gives, read once from its source or artifact
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    latent_dim = property(lambda self: self.signature.latent_dim)
    img_shape = property(lambda self: self.signature.img_shape)
    value_range = property(lambda self: self.signature.value_range)


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

    def prepare(self, z: torch.Tensor, labels: Any = None) -> Any:
        """Convert float32 CPU z (N, latent_dim) (and a conditional G's labels) into this runner's native
        inputs (device, dtype, numpy...), shaped as the generator takes them (`inputs`)."""
        raise NotImplementedError

    def inputs(self, z: torch.Tensor, labels: Any = None) -> tuple[torch.Tensor, ...]:
        """forward()'s inputs on the CPU: z shaped, and for a conditional G int64 labels (none given: row i
        gets class i mod n_classes, the same for every runner). Labels out of range or not integers: one line."""
        sig = self.info.signature
        x = self.shaped(z)
        if sig.label is None:
            if labels is not None:
                raise ConfigError(f"{self.name}: this generator takes no class label")
            return (x,)
        if labels is None:
            return (x, sig.labels(x.shape[0]))
        y = torch.as_tensor(labels).reshape(-1)
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ConfigError(f"{self.name}: labels must be integers, got {y.dtype}")
        if y.shape[0] != x.shape[0]:
            raise ConfigError(f"{self.name}: {y.shape[0]} labels for {x.shape[0]} rows of z")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= int(sig.n_classes or 0)):
            raise ConfigError(f"{self.name}: labels must lie in [0, {sig.n_classes}), got {int(y.min())}..{int(y.max())}")
        return (x, y.to(torch.int64))

    def shaped(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, latent_dim) -> (N, *latent_shape): (N, 100) stays, (N, 100, 1, 1) for a conv generator's latent."""
        return z.reshape(z.shape[0], *self.info.signature.latent_shape)

    def run(self, x: Any) -> Any:
        """The timed forward pass on a prepared input; returns the native output."""
        raise NotImplementedError

    def to_cpu(self, y: Any) -> torch.Tensor:
        """Native output -> float32 CPU tensor (N, C, H, W)."""
        if isinstance(y, torch.Tensor):
            return y.detach().to("cpu", torch.float32)
        import numpy as np

        a = np.asarray(y)
        return torch.from_numpy(a if a.flags.writeable else a.copy()).to(torch.float32)  # a client's read-only buffer

    def sync(self) -> None:
        from gantool.device import sync

        sync(self.device)

    # --- what bench needs beyond prepare/run/sync -------------------------------------------
    graph = False  # replays a captured CUDA graph: bench captures it before timing
    capture_calls = 3  # calls that capture a graph for one input shape (torch cudagraph trees: warm-up, record, replay)

    @property
    def stream(self) -> Any:
        """The CUDA stream this runner's work goes to (bench's events are recorded on it); None off CUDA."""
        return torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None

    def capture(self, x: Any) -> None:
        """Make sure the graph for x's shape is captured (graph runners); untimed by bench."""
        for _ in range(self.capture_calls):
            self.run(x)
        self.sync()

    def run_async(self, x: Any) -> Any:
        """run() without waiting for the device where the backend would (throughput mode)."""
        return self.run(x)

    def lanes(self, n: int) -> list["Runner"]:
        """n runners sharing this one's weights, each on its own stream (throughput mode on CUDA);
        [self] where the backend has one stream (CPU, or a captured graph)."""
        if self.device.type != "cuda" or self.graph or n <= 1:
            return [self]
        return [self] + [StreamLane(self, torch.cuda.Stream(self.device)) for _ in range(n - 1)]

    def profile_call(self, z: torch.Tensor, out_dir: Path, stem: str) -> list[Path]:
        """One untimed call under torch.profiler; writes a Chrome trace (--profile)."""
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        x = self.prepare(z)
        self.sync()
        with profile(activities=acts) as prof:
            self.run(x)
            self.sync()
        path = Path(out_dir) / f"{stem}.torch.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        prof.export_chrome_trace(str(tmp))
        tmp.replace(path)
        return [path]

    def __call__(self, z: torch.Tensor, labels: Any = None) -> torch.Tensor:
        z = torch.as_tensor(z, dtype=torch.float32)
        sig = self.info.signature
        if z.ndim < 2 or z[0].numel() != sig.latent_dim or (z.ndim > 2 and tuple(z.shape[1:]) != sig.latent_shape):
            raise ArtifactError(f"{self.name}: z must be (N, {sig.latent_dim}) or (N, {', '.join(map(str, sig.latent_shape))}), "
                                f"got {tuple(z.shape)}")
        z = z.reshape(z.shape[0], sig.latent_dim)
        y = self.to_cpu(self.run(self.prepare(z, labels)))
        self.sync()
        return y



class ModuleRunner(Runner):
    """A Runner around a torch callable (eager/compiled module, TorchScript, AOTI package):
    subclasses set `module`, `dtype` and `info`; input is cast to the runner's device and dtype."""

    module: Callable[[torch.Tensor], torch.Tensor]
    dtype: torch.dtype

    def prepare(self, z: torch.Tensor, labels: Any = None) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """z on the runner's device and dtype; for a conditional G the tuple (z, labels)."""
        xs = tuple(t.to(self.device, self.dtype if t.is_floating_point() else None).contiguous()
                   for t in self.inputs(z, labels))
        return xs if len(xs) > 1 else xs[0]

    @torch.inference_mode()
    def run(self, x: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.module(*x) if isinstance(x, tuple) else self.module(x)

class StreamLane(Runner):
    """The same runner issuing its work on another CUDA stream (a throughput-mode lane)."""

    def __init__(self, base: Runner, stream: Any):
        self.base, self._stream, self.info = base, stream, base.info

    @property
    def stream(self) -> Any:
        return self._stream

    def prepare(self, z: torch.Tensor, labels: Any = None) -> Any:
        x = self.base.prepare(z, labels)
        self.base.sync()  # prepared on the base's stream; done before this lane uses it
        return x

    def run(self, x: Any) -> Any:
        with torch.cuda.stream(self._stream):
            return self.base.run(x)

    def to_cpu(self, y: Any) -> torch.Tensor:
        return self.base.to_cpu(y)

    def sync(self) -> None:
        self._stream.synchronize()
