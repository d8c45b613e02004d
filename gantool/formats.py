"""The one table of export formats: a format is one module (exporter + artifact reader, its FORMAT) and one entry here.

    formats.names()            # ["onnx", "torchscript", "aoti"]
    formats.get("onnx")        # -> gantool.export.spec.Format (its module imported on first use)

Torch-free, so that the CLI's choices and help come from it without importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

from gantool.errors import ConfigError

DTYPES = ("fp32", "fp16", "bf16", "int8")  # what an artifact can hold; int8: ONNX only, quantized by ONNX Runtime
# name -> the module whose FORMAT describes it (read at each get(), so the module stays the one place), or a
# registered Format
_TABLE: dict[str, Any] = {name: f"gantool.export.{name}" for name in ("onnx", "torchscript", "aoti")}


def register(fmt: Any) -> Any:
    """Add (or replace) a format: a gantool.export.spec.Format."""
    _TABLE[fmt.name] = fmt
    return fmt


def unregister(name: str) -> None:
    _TABLE.pop(name, None)


def names() -> list[str]:
    return list(_TABLE)


def get(name: str) -> Any:
    if name not in _TABLE:
        raise ConfigError(f"unknown export format {name!r}; choose one of: {', '.join(_TABLE)}, all")
    entry = _TABLE[name]
    return importlib.import_module(entry).FORMAT if isinstance(entry, str) else entry
