"""The export contract: ExportSpec (I/O names, shapes, metadata that travel with every artifact) and Format."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from gantool.config import VALUE_RANGE

# Export batch >= 2: a batch of 1 would let the tracer specialise N to the constant 1.
EXAMPLE_BATCH = 4


@dataclass(frozen=True)
class ExportSpec:
    """The I/O contract and the facts that travel with every artifact (one place for each)."""

    latent_dim: int
    img_shape: tuple[int, int, int]
    source_checkpoint: str
    source_sha256: str
    input_name: str = "z"
    output_name: str = "images"
    batch_dim: str = "N"
    value_range: tuple[float, float] = VALUE_RANGE
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)  # gantool.source record

    @classmethod
    def from_contract(cls, contract: Any, source: str, sha256: str, record: dict[str, Any] | None = None) -> "ExportSpec":
        """The spec of a gantool.source.Contract; `record`: the source's provenance (embedded too)."""
        return cls(contract.latent_dim, tuple(contract.img_shape), source, sha256,
                   value_range=tuple(contract.value_range), provenance=dict(record or {}))

    @property
    def input_shape(self) -> list[Any]:
        return [self.batch_dim, self.latent_dim]  # ["N", 100]

    @property
    def output_shape(self) -> list[Any]:
        return [self.batch_dim, *self.img_shape]  # ["N", 1, 28, 28]

    def example_input(self, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
        from gantool.noise import latent

        return latent(EXAMPLE_BATCH, 0, self.latent_dim, device, dtype)

    def metadata(self, dtype: str, fmt: str) -> dict[str, str]:
        """String key/values embedded inside each artifact (ONNX metadata_props, TS extra file, AOTI metadata)."""
        import gantool

        return {
            "gantool.format": fmt,
            "gantool.dtype": dtype,
            "gantool.latent_dim": str(self.latent_dim),
            "gantool.image_shape": ",".join(str(d) for d in self.img_shape),
            "gantool.value_range": ",".join(str(v) for v in self.value_range),
            "gantool.input": self.input_name,
            "gantool.output": self.output_name,
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
    suffix: str
    backend: str  # the gantool.runners backend that loads it
    device_specific: bool  # AOTI compiles for one device; ONNX / TorchScript run anywhere
    export: Callable[..., dict[str, Any]]  # (module, spec, path, dtype, device, opset) -> extra entry fields
    unsupported: Callable[[str, torch.device], str | None] = field(default=lambda dtype, device: None)
