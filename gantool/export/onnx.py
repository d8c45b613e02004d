"""ONNX through the dynamo exporter: one self-contained, checker-valid .onnx with named I/O and metadata."""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import torch

from gantool.export.spec import ExportSpec, Format


def _unsupported(dtype: str, device: torch.device) -> str | None:
    if dtype == "bf16":
        return "ONNX Runtime's CPU provider has no bf16 Gemm kernel, so the artifact could not be run or verified"
    return None


def export_onnx(module: torch.nn.Module, spec: ExportSpec, path: Path, *, dtype: str,
                device: torch.device, opset: int | None) -> dict[str, Any]:
    import onnx

    x = spec.example_input(next(module.parameters()).dtype, device)
    batch = torch.export.Dim(spec.batch_dim, min=1)
    # The exporter prints progress to stdout and warns a lot; the caller prints one line per artifact.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (x,), dynamo=True, opset_version=opset, verbose=False,
            input_names=[spec.input_name], output_names=[spec.output_name],
            dynamic_shapes={"z": {0: batch}},  # keyed by forward()'s argument name
        )
    model = program.model_proto
    for key, value in spec.metadata(dtype, "onnx").items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = f"gantool generator: {spec.input_name} (N, {spec.latent_dim}) -> {spec.output_name} (N, {', '.join(map(str, spec.img_shape))}) in [-1, 1]"
    onnx.checker.check_model(model, full_check=True)
    # One file: the weights (~6 MB) stay inside the .onnx instead of a .data side file.
    onnx.save_model(model, str(path), save_as_external_data=False)
    opset_used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"opset": opset_used, "versions": {"onnx": onnx.__version__}}


FORMAT = Format(name="onnx", suffix=".onnx", backend="ort", device_specific=False,
                export=export_onnx, unsupported=_unsupported)
