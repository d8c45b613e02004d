"""Checks of one manifest entry, in order: the file and its checksum, I/O names, shapes, then values."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from gantool.errors import GantoolError
from gantool.parity import (TOLERANCES, ChecksumError, LoadError, MetadataError, ParityError, ParityResult,
                            ShapeError, verify_runner)
from gantool.runners import Runner

_ONNX_ELEM = {"fp32": 1, "fp16": 10, "bf16": 16}  # onnx.TensorProto FLOAT / FLOAT16 / BFLOAT16


def check_entry(out: Path, entry: dict[str, Any], reference: Runner, ckpt_sha: str,
                batch_sizes: tuple[int, ...], seed: int, load_runner: Callable[..., Runner]) -> ParityResult:
    from gantool.checkpoint import sha256_file

    dtype = entry["dtype"]
    result = ParityResult(entry["file"], dtype, TOLERANCES.get(dtype, TOLERANCES["fp32"]),
                          meta={"format": entry["format"], "device": entry["device"], "backend": entry.get("backend")})
    fail = result.failures.append
    path = out / entry["file"]
    # 1. the file is there and is the one that was exported and verified
    if not path.is_file():
        fail(ChecksumError(f"{entry['file']} is missing from {out}"))
        return result
    sha = sha256_file(path)
    if sha != entry["sha256"]:
        fail(ChecksumError(f"{entry['file']}: SHA-256 {sha[:12]}... does not match the manifest's "
                           f"{entry['sha256'][:12]}... (the file changed after export)"))
    if entry.get("source_sha256") != ckpt_sha:
        fail(MetadataError(f"{entry['file']} was exported from checkpoint {str(entry.get('source_sha256'))[:12]}..., "
                           f"not from the one given ({ckpt_sha[:12]}...)"))
    if entry["device"] == "cuda" and not torch.cuda.is_available():
        result.skipped = "compiled for cuda; this machine has no CUDA device"
        return result
    # 2-3. names, then shapes: what the manifest declares and what the artifact itself declares
    latent, img = reference.info.latent_dim, list(reference.info.img_shape)
    for f in _declared(entry, latent, img):
        fail(f)
    if entry["format"] == "onnx":
        graph_failures = _onnx_graph(path, dtype, latent, img)
        result.failures.extend(graph_failures)
        if any(isinstance(f, LoadError) for f in graph_failures):
            return result
    try:
        runner = load_runner(path, entry.get("backend"), device=_device(entry), dtype=dtype)
    except GantoolError as e:
        fail(LoadError(f"{entry['file']}: {e}"))
        return result
    meta = runner.info.extra.get("metadata") or {}
    if meta.get("gantool.source_sha256") not in (None, entry.get("source_sha256")):
        fail(MetadataError(f"{entry['file']}: embedded source checkpoint {meta['gantool.source_sha256'][:12]}... "
                           "differs from the manifest's"))
    # 4. values, at each batch size
    values = verify_runner(reference, runner, batch_sizes, seed, name=entry["file"])
    result.batches = values.batches
    result.failures.extend(values.failures)
    return result


def _device(entry: dict[str, Any]) -> str:
    if entry["format"] == "onnx":
        return "cpu"  # the CPU EP is the portable reference runtime; GPU EPs are checked by bench
    return entry["device"] if entry["device"] != "any" else "cpu"


def _declared(entry: dict[str, Any], latent: int, img: list[int]) -> list[ParityError]:
    """The manifest's I/O declaration must be the contract: z (N, latent) -> images (N, *img)."""
    out: list[ParityError] = []
    ins, outs = entry.get("inputs") or [{}], entry.get("outputs") or [{}]
    if [i.get("name") for i in ins] != ["z"] or [o.get("name") for o in outs] != ["images"]:
        out.append(MetadataError(f"{entry['file']}: manifest I/O names {[i.get('name') for i in ins]} -> "
                                 f"{[o.get('name') for o in outs]}, the contract says ['z'] -> ['images']"))
    if ins[0].get("shape") != ["N", latent] or outs[0].get("shape") != ["N", *img]:
        out.append(ShapeError(f"{entry['file']}: manifest shapes {ins[0].get('shape')} -> {outs[0].get('shape')}, "
                              f"the contract says ['N', {latent}] -> ['N', {', '.join(map(str, img))}]"))
    return out


def _dims(value_info) -> list[Any]:
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
            for d in value_info.type.tensor_type.shape.dim]


def _onnx_graph(path: Path, dtype: str, latent: int, img: list[int]) -> list[ParityError]:
    """Names, element types and shapes as the .onnx graph declares them (symbolic N required)."""
    import onnx
    from google.protobuf.message import DecodeError

    name = path.name
    try:
        model = onnx.load(str(path), load_external_data=False)
        if not model.graph.node:
            raise DecodeError("the graph has no nodes")
    except (DecodeError, OSError, ValueError, RuntimeError) as e:
        return [LoadError(f"{name} is not a readable ONNX model ({type(e).__name__}: {str(e)[:120]})")]
    failures: list[ParityError] = []
    g = model.graph
    ins, outs = [i.name for i in g.input], [o.name for o in g.output]
    if ins != ["z"] or outs != ["images"]:
        failures.append(MetadataError(f"{name}: graph I/O {ins} -> {outs}, the contract says ['z'] -> ['images']"))
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in g.initializer):
        failures.append(MetadataError(f"{name}: weights live in an external .data file; the artifact must be one file"))
    props = {p.key: p.value for p in model.metadata_props}
    if props.get("gantool.latent_dim") not in (None, str(latent)):
        failures.append(MetadataError(f"{name}: metadata latent_dim {props['gantool.latent_dim']} != {latent}"))
    if not g.input or not g.output:
        return failures
    in_dims, out_dims = _dims(g.input[0]), _dims(g.output[0])
    for what, dims, want in (("input z", in_dims, [latent]), ("output images", out_dims, img)):
        if len(dims) != 1 + len(want) or not isinstance(dims[0], str) or dims[1:] != want:
            failures.append(ShapeError(
                f"{name}: {what} has shape {dims}; the contract says [N, {', '.join(map(str, want))}] with N dynamic"))
    elem = g.input[0].type.tensor_type.elem_type
    if elem != _ONNX_ELEM.get(dtype):
        failures.append(MetadataError(f"{name}: input element type {onnx.TensorProto.DataType.Name(elem)} "
                                      f"does not match the manifest dtype {dtype}"))
    return failures
