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
                device: torch.device, opset: int | None, quantization: Any = None) -> dict[str, Any]:
    import onnx

    if dtype == "int8":
        return _export_int8(module, spec, path, device=device, opset=opset, quantization=quantization)

    x = spec.example_inputs(next(module.parameters()).dtype, device)
    # The exporter prints progress to stdout and warns a lot; the caller prints one line per artifact.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, x, dynamo=True, opset_version=opset, verbose=False,
            input_names=[i.name for i in spec.signature.inputs], output_names=[spec.signature.output_name],
            dynamic_shapes=spec.dynamic_shapes(),
        )
    model = program.model_proto
    drop_initializer_value_info(model)
    _describe(model, spec, spec.metadata(dtype, "onnx"))
    onnx.checker.check_model(model, full_check=True)
    # One file: the weights (~6 MB) stay inside the .onnx instead of a .data side file.
    onnx.save_model(model, str(path), save_as_external_data=False)
    opset_used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"opset": opset_used, "versions": {"onnx": onnx.__version__}}


def drop_initializer_value_info(model: Any) -> None:
    """The exporter also lists every weight in graph.value_info; tools that rewrite weights (ONNX
    Runtime's quantizer transposes them) then fail strict shape inference on the stale entries.
    An initializer's shape is already in the initializer itself."""
    weights = {t.name for t in model.graph.initializer}
    keep = [v for v in model.graph.value_info if v.name not in weights]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)


def _describe(model: Any, spec: ExportSpec, metadata: dict[str, str]) -> None:
    """gantool's metadata_props (replacing any earlier gantool.* entries) and the doc string."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = f"gantool generator: {spec.signature.describe()}"


def _export_int8(module: torch.nn.Module, spec: ExportSpec, path: Path, *, device: torch.device,
                 opset: int | None, quantization: Any) -> dict[str, Any]:
    """The fp32 export, then ONNX Runtime's quantizer on it; the int8 file keeps float32 I/O."""
    import json
    import tempfile

    import onnx

    from gantool.export.quantize import Quantization, quantize_onnx

    q = quantization or Quantization()
    with tempfile.TemporaryDirectory(prefix="gantool-int8-") as tmp:
        fp32 = Path(tmp) / "generator.fp32.onnx"
        extra = export_onnx(module, spec, fp32, dtype="fp32", device=device, opset=opset)
        quantize_onnx(fp32, Path(tmp) / "int8.onnx", q, spec.signature)
        model = onnx.load(str(Path(tmp) / "int8.onnx"))
    record = q.record()
    meta = spec.metadata("int8", "onnx")
    meta["gantool.quantization"] = json.dumps(record, separators=(",", ":"))
    drop_initializer_value_info(model)
    _describe(model, spec, meta)
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, str(path), save_as_external_data=False)
    return {**extra, "quantization": record}


def read_metadata(path: Path) -> dict[str, str]:
    """metadata_props of an .onnx file (the graph is parsed, the weights' external data are not read)."""
    import onnx
    from google.protobuf.message import DecodeError

    from gantool.errors import ArtifactError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{path} is not a readable ONNX model ({type(e).__name__}: {str(e)[:120]})") from None
    return {p.key: p.value for p in model.metadata_props}


FORMAT = Format(name="onnx", title="ONNX", suffix=".onnx", backend="ort", device_specific=False,
                export=export_onnx, read_metadata=read_metadata, unsupported=_unsupported)
