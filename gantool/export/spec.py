"""ExportSpec (the Signature and provenance every artifact carries) and Format (one export format)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from gantool.signature import Signature

# Export batch >= 2: a batch of 1 would let the tracer specialise N to the constant 1.
EXAMPLE_BATCH = 4


@dataclass(frozen=True)
class ExportSpec:
    """The generator's Signature plus the provenance that travels with every artifact."""

    signature: Signature
    source_checkpoint: str
    source_sha256: str
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)  # gantool.source record

    def example_inputs(self, dtype: torch.dtype, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        """forward()'s inputs for the tracer: seeded z in `dtype` (and int64 labels for a conditional G)."""
        return self.signature.example(EXAMPLE_BATCH, 0, device, dtype)

    def dynamic_shapes(self) -> tuple[dict[int, Any], ...]:
        """Positional (whatever forward() names its inputs): N is dynamic in every input."""
        batch = torch.export.Dim(self.signature.batch_dim, min=1)
        return tuple({0: batch} for _ in self.signature.inputs)

    def metadata(self, dtype: str, fmt: str) -> dict[str, str]:
        """String key/values embedded inside each artifact (ONNX metadata_props, TS extra file, AOTI metadata)."""
        import gantool

        return {
            "gantool.format": fmt,
            "gantool.dtype": dtype,
            **self.signature.metadata(),
            "gantool.source_sha256": self.source_sha256,
            **{f"gantool.source.{k}": str(v) for k, v in self.provenance.items()
               if k in ("kind", "generator", "file", "file_sha256", "weights", "weights_sha256", "checkpoint") and v},
            "gantool.version": gantool.__version__,
            "torch.version": torch.__version__,
        }


@dataclass(frozen=True)
class Format:
    """One export format: how to write it and which dtypes/devices it supports."""

    name: str
    title: str  # how a user names it: "ONNX", "TorchScript"
    suffix: str
    backend: str  # the gantool.runners backend that loads it
    device_specific: bool  # AOTI compiles for one device; ONNX / TorchScript run anywhere
    export: Callable[..., dict[str, Any]]  # (module, spec, path, dtype, device, opset) -> extra entry fields
    read_metadata: Callable[[Path], dict[str, str]]  # the gantool.* key/values an artifact carries inside
    unsupported: Callable[[str, torch.device], str | None] = field(default=lambda dtype, device: None)
