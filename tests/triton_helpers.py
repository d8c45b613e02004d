"""Test-only checks of a Triton model repository: a config.pbtxt read with Triton's own schema and held
against the real signature of the model file beside it."""
from __future__ import annotations

from pathlib import Path

from gantool.export.triton import ALL_MODELS, TRITON_DTYPES, VERSION


def read_config(path: str | Path):
    """Parse a config.pbtxt with Triton's own ModelConfig schema (needs tritonclient[grpc])."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())


def check_model(folder: str | Path) -> list[str]:
    """What is wrong with one model folder of the repository: its config.pbtxt read with Triton's
    own schema, against the real signature of its 1/model.* (names, dims, dtype). [] = consistent."""
    folder = Path(folder)
    cfg = read_config(folder / "config.pbtxt")
    if cfg.name not in ALL_MODELS:
        return [f"{folder}: unknown model {cfg.name!r}"]
    fmt, backend, _, filename = ALL_MODELS[cfg.name]
    path = folder / VERSION / (cfg.default_model_filename or filename)
    if not path.is_file():
        return [f"{folder}: no {path.relative_to(folder)}"]
    if backend == "python":  # model.py runs the ONNX beside it: that file's signature is the contract
        path = folder / VERSION / "model.onnx"
        if not path.is_file():
            return [f"{folder}: no {path.relative_to(folder)}"]
    problems = []
    if cfg.backend != backend:
        problems.append(f"backend {cfg.backend!r}, expected {backend!r}")
    if cfg.max_batch_size < 1:
        problems.append(f"max_batch_size {cfg.max_batch_size}: the batch dimension must be Triton's")
    bad_pref = [s for s in cfg.dynamic_batching.preferred_batch_size if not 1 <= s <= cfg.max_batch_size]
    if bad_pref:
        problems.append(f"preferred batch sizes {bad_pref} outside 1..{cfg.max_batch_size}")
    sig = _onnx_signature(path) if fmt == "onnx" else _torchscript_signature(path)
    for kind, declared, have in (("input", cfg.input, sig[0]), ("output", cfg.output, sig[1])):
        if len(declared) != len(have):
            problems.append(f"{len(declared)} {kind}s declared, the model has {len(have)}")
            continue
        for d, (name, dims, dtype) in zip(declared, have):
            want_type = TRITON_DTYPES.get(dtype, "TYPE_INT64" if dtype == "int64" else dtype)
            got_type = type(d).DESCRIPTOR.fields_by_name["data_type"].enum_type.values_by_number[d.data_type].name
            if name is not None and d.name != name:
                problems.append(f"{kind} named {d.name!r}, the model's is {name!r}")
            # a per-sample scalar (class labels) is declared [1] and reshaped to [] for the model
            seen = list(d.reshape.shape) if d.HasField("reshape") else list(d.dims)
            if seen != list(dims):
                problems.append(f"{kind} {d.name} dims {list(d.dims)}, the model's are {list(dims)} (batch excluded)")
            if got_type != want_type:
                problems.append(f"{kind} {d.name} is {got_type}, the model's is {want_type}")
    return [f"{folder.name}: {p}" for p in problems]


def _onnx_signature(path: Path):
    """((input name, dims without batch, dtype), (output ...)) read from the ONNX graph."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    types = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16",
             onnx.TensorProto.INT64: "int64"}

    def one(v):
        t = v.type.tensor_type
        return v.name, [d.dim_value for d in t.shape.dim[1:]], types.get(t.elem_type, str(t.elem_type))

    return [one(i) for i in graph.input], [one(graph.output[0])]


def _torchscript_signature(path: Path):
    """The forward argument name, and dims/dtype of a batch-2 call (TorchScript keeps no output names)."""
    import torch

    import json

    from gantool.export.torchscript import EXTRA_FILE, quiet_jit

    extra = {EXTRA_FILE: ""}
    with quiet_jit():
        m = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    arg = m.forward.schema.arguments[1]
    dtype = next(m.parameters()).dtype
    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
    try:  # the z size the archive was exported with (any generator: MLP, conv, the user's)
        latent = int(json.loads(extra[EXTRA_FILE])["gantool.latent_dim"])
    except (ValueError, KeyError, TypeError):
        latent = next(m.parameters()).shape[1]  # an archive without gantool's metadata: the seed MLP's first Linear
    with torch.inference_mode():
        y = m(torch.zeros(2, latent, dtype=dtype))
    return [(arg.name, [latent], names[dtype])], [(None, list(y.shape[1:]), names[y.dtype])]
