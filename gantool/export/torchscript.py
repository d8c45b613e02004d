"""TorchScript (torch.jit.trace): loadable with torch.jit.load alone. Deprecated upstream; see docs/export.md."""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

from gantool.export.spec import ExportSpec, Format

EXTRA_FILE = "gantool.json"  # the spec's metadata, stored inside the archive as an extra file


def deprecation_notice() -> str:
    return "note: TorchScript is deprecated upstream; its successor is torch.export + AOTInductor (--format aoti)."


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """torch.jit.* emit a FutureWarning on every call; gantool says it once instead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def export_torchscript(module: torch.nn.Module, spec: ExportSpec, path: Path, *, dtype: str,
                       device: torch.device, opset: int | None) -> dict[str, Any]:
    x = spec.example_inputs(next(module.parameters()).dtype, device)
    with quiet_jit():
        # trace, not script: forward is plain tensor code; reshape(-1, ...) keeps N dynamic.
        traced = torch.jit.trace(module, x, check_trace=False)
        meta = json.dumps(spec.metadata(dtype, "torchscript"))
        torch.jit.save(traced, str(path), _extra_files={EXTRA_FILE: meta})
    return {"opset": None, "note": deprecation_notice().removeprefix("note: ")}


def load(path: str | Path, device: Any = "cpu") -> tuple[Any, dict[str, str]]:
    """(the loaded ScriptModule, its gantool metadata); ArtifactError in one line for a bad file."""
    from gantool.errors import ArtifactError, first_line

    extra = {EXTRA_FILE: ""}
    try:
        with quiet_jit():
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as e:  # torch raises RuntimeError / ValueError / zip errors for bad files
        raise ArtifactError(f"{path} is not a loadable TorchScript file: {first_line(e, 200)}") from None
    try:
        meta = json.loads(extra[EXTRA_FILE] or "{}")
    except json.JSONDecodeError:
        meta = {}
    return module, meta if isinstance(meta, dict) else {}


def read_metadata(path: Path) -> dict[str, str]:
    return load(path)[1]


FORMAT = Format(name="torchscript", title="TorchScript", suffix=".ts", backend="torchscript", device_specific=False,
                export=export_torchscript, read_metadata=read_metadata)
