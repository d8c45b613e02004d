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

from gantool import backends as _table
from gantool.errors import ArtifactError, ConfigError
from gantool.runners.base import ModuleRunner, Runner, RunnerInfo

__all__ = ["ModuleRunner", "Runner", "RunnerInfo", "backend_for_path", "backends", "load_runner"]


def backends() -> list[str]:
    return sorted(_table.names())


def backend_for_path(path: str | Path) -> str:
    """The backend an artifact's format names (its suffix); a run dir, checkpoint or user generator means eager."""
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
    from gantool.export import format_of

    spec = _table.get(backend or backend_for_path(source))
    if isinstance(source, (str, Path)) and not spec.remote and not Path(source).exists():
        raise ArtifactError(f"not found: {source}")
    fmt = format_of(source) if isinstance(source, (str, Path)) and not Path(source).is_dir() else None
    if fmt is not None and not spec.remote and spec.format != fmt.name:
        runs = f"{spec.format} files" if spec.format else "PyTorch checkpoints and generators"
        raise ConfigError(f"{source} is an {fmt.title} artifact and backend {spec.name} runs {runs}; "
                          f"open {fmt.title} files with {' or '.join(_table.for_format(fmt.name))}")
    return spec.factory()(source, device=device, dtype=dtype, **options)
