"""A Triton Inference Server model repository: generator_onnx (onnxruntime) and generator_torchscript (pytorch),
and with --kind python generator_python (Triton's Python backend running the same ONNX with onnxruntime)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from gantool.errors import ConfigError, OutputError

if TYPE_CHECKING:
    from gantool.signature import Signature

# Triton model name -> (gantool export format, Triton backend, platform, file name inside 1/).
MODELS = {
    "generator_onnx": ("onnx", "onnxruntime", None, "model.onnx"),
    "generator_torchscript": ("torchscript", "pytorch", "pytorch_libtorch", "model.pt"),
}
# The Python-backend model (--kind python): 1/model.py (triton_python_model.py) runs 1/model.onnx.
PYTHON_MODEL = "generator_python"
ALL_MODELS = {**MODELS, PYTHON_MODEL: ("onnx", "python", None, "model.py")}
TRITON_DTYPES = {"fp32": "TYPE_FP32", "fp16": "TYPE_FP16", "bf16": "TYPE_BF16"}
KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
VERSION = "1"
QUEUE_DELAY_US = 100  # how long the dynamic batcher may hold a request to fill a preferred batch


@dataclass(frozen=True)
class TritonSpec:
    """What the repository's configs say beside the I/O contract (validated before anything is written)."""

    max_batch_size: int = 1024
    instances: int = 1
    kind: str = "auto"
    optimize: bool = False
    dtype: str = "fp32"
    python: bool = False  # also write generator_python (--kind python)

    def validate(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"--max-batch-size must be >= 1 (got {self.max_batch_size}); Triton reads 0 as "
                              "'no batch dimension', which does not fit the generator's z (N, latent) input")
        if self.instances < 1:
            raise ConfigError(f"--instances must be >= 1 (got {self.instances})")
        if self.kind not in KINDS:
            raise ConfigError(f"unknown --kind {self.kind!r}; choose one of: {', '.join(KINDS)}")
        if self.dtype not in ("fp32", "fp16"):
            raise ConfigError(f"--format triton: dtype {self.dtype} is not served (ONNX Runtime's CPU provider "
                              "has no bf16 Gemm); use fp32 or fp16")

    @property
    def models(self) -> list[str]:
        return list(MODELS) + ([PYTHON_MODEL] if self.python else [])

    @property
    def preferred_batch_sizes(self) -> list[int]:
        """Powers of 4 from 16 up to max_batch_size, and max_batch_size itself: the sizes the
        bench shows the generator reaching its throughput plateau at."""
        sizes = [s for s in (16, 64, 256, 1024, 4096) if s < self.max_batch_size]
        return sizes + [self.max_batch_size]


def parse_kind(text: str) -> tuple[str, bool]:
    """--kind: auto|gpu|cpu (where instances run), optionally with python in a comma list
    ("python", "cpu,python"): (instance kind, whether to add the Python-backend model)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    python = "python" in parts
    kinds = [p for p in parts if p != "python"]
    if len(kinds) > 1 or any(k not in KINDS for k in kinds):
        raise ConfigError(f"unknown --kind {text!r}: give one of {', '.join(KINDS)}, optionally with python "
                          "(e.g. python or cpu,python)")
    return (kinds[0] if kinds else "auto"), python


def config_pbtxt(name: str, spec: TritonSpec, sig: "Signature") -> str:
    """config.pbtxt (protobuf text format of inference.ModelConfig) for one model of the repository.

    Names and dims come from the generator's Signature; the batch dimension is Triton's
    (max_batch_size), so dims leave it out: z [latent...], images [C, H, W].
    """
    input_name, output_name = sig.input_name, sig.output_name
    fmt, backend, platform, filename = ALL_MODELS[name]
    dt = TRITON_DTYPES[spec.dtype]
    lines = [f'name: "{name}"', f'backend: "{backend}"']
    if platform:
        lines.append(f'platform: "{platform}"')
    lines += [
        f"max_batch_size: {spec.max_batch_size}",
        f'default_model_filename: "{filename}"',
        "version_policy: { latest: { num_versions: 1 } }",
        "input [ " + ", ".join(_input(i, dt) for i in sig.inputs) + " ]",
        f'output [ {{ name: "{output_name}" data_type: {dt} dims: [ {", ".join(map(str, sig.img_shape))} ] }} ]',
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(map(str, spec.preferred_batch_sizes))} ]",
        f"  max_queue_delay_microseconds: {QUEUE_DELAY_US}",
        "}",
        # The Python model runs onnxruntime's CPU provider, so its instances are CPU ones.
        f"instance_group [ {{ count: {spec.instances} kind: {'KIND_CPU' if backend == 'python' else KINDS[spec.kind]} }} ]",
    ]
    if backend == "python":
        lines.append('parameters: { key: "onnx_file" value: { string_value: "model.onnx" } }')
    if fmt == "torchscript":
        # Inference mode (no autograd bookkeeping) is what gantool's own runners time.
        lines.append('parameters: { key: "INFERENCE_MODE" value: { string_value: "true" } }')
    if backend == "onnxruntime" and spec.optimize:
        lines += _ort_gpu_accelerators(name, spec, input_name, "x".join(map(str, sig.latent_shape)))
    return "\n".join(lines) + "\n"


def _input(i: Any, float_type: str) -> str:
    """One input of config.pbtxt: the latent in the artifact's float type; a class label INT64, sent as
    (N, 1) (per-sample dims cannot be empty) and reshaped to the (N,) the model takes."""
    if i.role == "latent":
        return f'{{ name: "{i.name}" data_type: {float_type} dims: [ {", ".join(map(str, i.shape))} ] }}'
    return f'{{ name: "{i.name}" data_type: TYPE_INT64 dims: [ 1 ] reshape: {{ shape: [ ] }} }}'


def _ort_gpu_accelerators(name: str, spec: TritonSpec, input_name: str, latent_dims: str) -> list[str]:
    """--optimize: TensorRT as the ONNX Runtime execution accelerator on GPU instances (engines for
    batch 1..max_batch_size built once and cached), with TensorRT's CUDA graphs, and the CUDA EP
    (TensorRT's fallback) also asked for CUDA graphs. Both settings are read by the onnxruntime
    backend only for GPU instances; CPU instances ignore them."""
    def shape(n: int) -> str:
        return f"{input_name}:{n}x{latent_dims}"

    opt = max(s for s in spec.preferred_batch_sizes)
    trt = {
        "precision_mode": "FP16" if spec.dtype == "fp16" else "FP32",
        "max_workspace_size_bytes": str(1 << 30),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": f"/tmp/triton_trt_cache/{name}",
        "trt_timing_cache_enable": "1",
        "trt_profile_min_shapes": shape(1),
        "trt_profile_opt_shapes": shape(opt),
        "trt_profile_max_shapes": shape(spec.max_batch_size),
        "trt_cuda_graph_enable": "1",
    }
    cuda = {"enable_cuda_graph": "1"}

    def accel(acc_name: str, params: dict[str, str]) -> str:
        body = " ".join(f'parameters {{ key: "{k}" value: "{v}" }}' for k, v in params.items())
        return f'    {{ name: "{acc_name}" {body} }}'

    return ["optimization { execution_accelerators {",
            "  gpu_execution_accelerator: [",
            accel("tensorrt", trt) + ",",
            accel("cuda", cuda),
            "  ]",
            "} }"]


def check_repository(out: Path, force: bool, models: tuple[str, ...] | list[str] = tuple(ALL_MODELS)) -> list[str]:
    """The gantool models of `models` already in `out` (they are replaced, and named); other models and
    files in a repository are kept. A model folder of that name that gantool did not write (no
    gantool.json) is refused, --force or not (README, "Writing over earlier output")."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a directory")
    present = [name for name in models if (out / name).exists()]
    foreign = [name for name in present if not (out / name / "gantool.json").is_file()]
    if foreign:
        raise OutputError(f"--out {out} has model folder(s) {', '.join(foreign)} that gantool did not write (no "
                          "gantool.json) and gantool never replaces those, --force or not: move them or choose "
                          "another --out")
    return present


def export_triton(checkpoint: str | Path, out: str | Path, spec: TritonSpec, *, force: bool = False,
                  opset: int | None = None, check: Callable[[Path, list[dict[str, Any]]], Any] | None = None,
                  log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Write `out`/generator_onnx and `out`/generator_torchscript (config.pbtxt, 1/model.*, gantool.json).

    The artifacts come from the same exporters as `gantool export`; `check(folder, entries)` (the
    CLI's parity check; it raises on a failure) sees them in the staging folder first. Each model
    folder is built beside `out` and renamed into place, so a failure leaves `out` as it was.
    Returns one manifest entry per model, with its Triton model name and folder.
    """
    from gantool.export import export_artifacts, read_artifact

    say = log or (lambda msg: None)
    spec.validate()
    out = Path(out)
    replaced = check_repository(out, force, spec.models)
    try:
        out.mkdir(parents=True, exist_ok=True)
        # Beside `out`, not inside: Triton would try to load any folder of the repository as a model.
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.gantool-", dir=out.resolve().parent))
    except OSError as e:
        raise OutputError(f"cannot write to --out {out}: {e.strerror or e}") from None
    try:
        entries = export_artifacts(checkpoint, [m[0] for m in MODELS.values()], stage / "artifacts",
                                   dtypes=[spec.dtype], opset=opset, log=say)
        if check is not None:
            check(stage / "artifacts", entries)
        by_format = {e["format"]: e for e in entries}
        sig = read_artifact(stage / "artifacts" / entries[0]["file"])[0]  # one generator: one signature
        written = []
        for name in spec.models:
            fmt, backend, _, filename = ALL_MODELS[name]
            entry = dict(by_format[fmt])
            folder = stage / name
            (folder / VERSION).mkdir(parents=True)
            if backend == "python":  # the same ONNX file, run by onnxruntime inside Triton's Python backend
                shutil.copyfile(stage / "generator_onnx" / VERSION / "model.onnx", folder / VERSION / "model.onnx")
                shutil.copyfile(Path(__file__).with_name("triton_python_model.py"), folder / VERSION / filename)
            else:
                os.replace(stage / "artifacts" / entry["file"], folder / VERSION / filename)
            (folder / "config.pbtxt").write_text(config_pbtxt(name, spec, sig))
            entry.update(file=f"{VERSION}/{filename}", triton_model=name, triton_backend=backend,
                         max_batch_size=spec.max_batch_size, instances=spec.instances, kind=spec.kind,
                         optimize=spec.optimize)
            (folder / "gantool.json").write_text(json.dumps(entry, indent=2) + "\n")
            written.append((name, entry))
        for name, _ in written:
            _swap_in(stage / name, out / name, stage / f"{name}.old")
            say(f"wrote {out / name}/ (config.pbtxt, {VERSION}/{ALL_MODELS[name][3]})")
        if replaced:
            say(f"replaced gantool's earlier {', '.join(replaced)} in {out}/ (other models and files there are kept)")
        return [dict(e, folder=str(out / name)) for name, e in written]
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _swap_in(new: Path, dest: Path, aside: Path) -> None:
    """Rename `new` to `dest`; an old `dest` is moved to `aside` first (removed with the stage)."""
    old = None
    if dest.exists():
        old = aside
        os.replace(dest, old)
    try:
        os.replace(new, dest)
    except OSError:
        if old is not None:
            os.replace(old, dest)
        raise
