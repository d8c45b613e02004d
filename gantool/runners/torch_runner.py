"""PyTorch eager and torch.compile runners, built from a checkpoint or a user generator (gantool.source)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gantool.device import dtype_name, parse_dtype, resolve_device
from gantool.runners.base import ModuleRunner, Runner, RunnerInfo

if TYPE_CHECKING:
    from gantool.source import GeneratorSource


class TorchRunner(ModuleRunner):
    """G in eager mode (or compiled) on `device`, weights and input cast to `dtype`."""

    def __init__(self, checkpoint: "str | Path | GeneratorSource", device: str = "cpu", dtype: str = "fp32",
                 compile_mode: str | None = None, ema: bool = True):
        from gantool.source import generator_source

        dev = resolve_device(device)
        self.dtype = parse_dtype(dtype)
        src = generator_source(checkpoint)
        loaded = src.load(dev, ema=ema)
        g = loaded.module.to(self.dtype)
        self.module = torch.compile(g, mode=compile_mode, dynamic=True) if compile_mode else g
        backend = "eager" if compile_mode is None else ("compile" if compile_mode == "default" else f"compile-{compile_mode}")
        # reduce-overhead on CUDA replays cudagraph trees: bench captures before timing and
        # checks parity on a replay (warm-up, record, replay = Runner.capture_calls).
        self.graph = compile_mode == "reduce-overhead" and dev.type == "cuda"
        self.info = RunnerInfo(backend, str(dev), dtype_name(self.dtype), loaded.signature, src.label)


def eager(src: Any, device: str = "cpu", dtype: str = "fp32", **kw: Any) -> Runner:
    return TorchRunner(src, device, dtype, **kw)


def compiled(src: Any, device: str = "cpu", dtype: str = "fp32", **kw: Any) -> Runner:
    return TorchRunner(src, device, dtype, compile_mode="default", **kw)


def compiled_reduce_overhead(src: Any, device: str = "cpu", dtype: str = "fp32", **kw: Any) -> Runner:
    return TorchRunner(src, device, dtype, compile_mode="reduce-overhead", **kw)
