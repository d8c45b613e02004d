"""Which backends bench knows, where each one's artifact comes from, and the CUDA guard."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gantool.backends import Backend, get
from gantool.errors import ArtifactError, ConfigError


# int8 rows come from a quantized ONNX file, so only the backends the table marks int8 have them. A bench
# precision is a stored dtype, or "tf32": the fp32 weights with TF32 tensor-core matmuls (CUDA, compute
# capability >= 8.0); fp32 rows are IEEE fp32 on every backend (gantool.device.PRECISIONS lists them all).


def default_precisions(device: str, entries: list[dict[str, Any]]) -> list[str]:
    """What bench measures without --precisions: only what the device runs natively (an emulated
    bf16 row measures the emulation, not the model), plus int8 where an int8 ONNX file exists."""
    from gantool.device import bf16_support

    out = ["fp32"]
    if device == "cuda":
        out += ["tf32", "fp16"]  # tf32: unavailable rows (with the reason) below sm_80
    if bf16_support(device) == "native":
        out.append("bf16")
    if device == "cpu" and any(e["format"] == "onnx" and e["dtype"] == "int8" for e in entries):
        out.append("int8")
    return out


def precision_support(device: str, precision: str) -> str | None:
    """"native" or "emulated" for the reduced float precisions, from the device's flags; None otherwise."""
    from gantool.device import bf16_support, cpu_flags

    if device == "remote":  # a served model: the server's hardware, not this machine's, decides
        return None

    if precision == "bf16":
        return bf16_support(device)
    if precision == "fp16":
        if device == "cuda":
            return "native"
        return "native" if device == "cpu" and cpu_flags() & {"avx512_fp16", "amx_fp16", "fphp"} else "emulated"
    return None


def row_device(spec: Backend, device: str) -> str:
    """The device a row names: --device's (cuda:K for a torchrun rank), CUDA for CUDA-only EPs."""
    if spec.remote:
        return "remote"
    return "cuda" if spec.cuda_only and not device.startswith("cuda") else device


def export_hint(fmt: str, dtype: str, exported: Path | None, device: str = "cpu") -> str:
    """The command that would produce the missing artifact."""
    out = exported or Path("exported")
    cmd = f"gantool export --checkpoint RUN --format {fmt} --out {out}"
    if dtype != "fp32":
        cmd += f" --dtype {dtype}"
    if fmt == "aoti" and device != "cpu":
        cmd += f" --device {device}"
    return f"run `{cmd}`"


def missing_reason(fmt: str, dtype: str, exported: Path | None, device: str) -> str:
    """Why a (format, dtype) row has no artifact: the format cannot hold it, or it was not exported."""
    import torch

    from gantool.export import get_format, unsupported

    why = unsupported(get_format(fmt), dtype, torch.device(device))
    if why:
        return f"{fmt} {dtype}: {why}"
    return f"no {dtype} {fmt} artifact for {device} in {exported or 'exported'}: {export_hint(fmt, dtype, exported, device)}"


def read_artifacts(exported: Path | None) -> tuple[list[dict[str, Any]], Any]:
    """(artifact entries, the Manifest); ([], an empty Manifest) when there is no exported dir or manifest."""
    from gantool.export.manifest import Manifest, manifest_path

    if exported is None or not manifest_path(exported).exists():
        return [], Manifest({})
    doc = Manifest.load(exported)
    return list(doc.entries), doc


def find_artifact(entries: list[dict[str, Any]], exported: Path, fmt: str, dtype: str,
                  device: str) -> Path | None:
    """The artifact for (format, dtype) usable on `device` (AOTInductor code is per device type;
    ONNX and TorchScript entries say device "any")."""
    import torch

    want = torch.device(device).type
    pick = [e for e in entries if e["format"] == fmt and e["dtype"] == dtype and e["device"] in ("any", want)]
    return Path(exported) / pick[0]["file"] if pick else None


def check_requested(backends: list[str], explicit: bool, entries: list[dict[str, Any]],
                    exported: Path | None, source: Any) -> None:
    """Bad input that stops the run before anything is timed (one line each)."""
    for b in backends:
        spec = get(b)
        if spec.format is None:
            if source is None:
                raise ConfigError(f"backend {b} needs the generator: pass --checkpoint RUN (a run dir or "
                                  "checkpoint.pt) or --generator FILE.py:CALLABLE")
        elif explicit and not any(e["format"] == spec.format for e in entries):
            where = exported if exported is not None else "exported"
            raise ArtifactError(f"no {spec.format} artifacts in {where} for backend {b}: "
                                f"{export_hint(spec.format, 'fp32', exported)}")


def precision_reason(precision: str, device: str) -> tuple[str, str] | None:
    """(status, reason) when a precision cannot exist on this device, before anything is loaded."""
    if precision != "tf32":
        return None
    if device != "cuda":
        return ("skipped", f"tf32 is an NVIDIA tensor-core math mode; {device} matmuls have no TF32 path "
                           "(its fp32 rows are IEEE fp32 already)")
    import torch

    if not torch.cuda.is_available():
        return ("unavailable", f"no CUDA device for torch {torch.__version__}")
    if torch.cuda.get_device_capability() < (8, 0):
        return ("unavailable", f"{torch.cuda.get_device_name()} (sm_{''.join(map(str, torch.cuda.get_device_capability()))}) "
                               "has no TF32 tensor cores (compute capability >= 8.0)")
    if os.environ.get("NVIDIA_TF32_OVERRIDE") == "0":
        return ("skipped", "NVIDIA_TF32_OVERRIDE=0 turns TF32 off in every NVIDIA library of this process")
    return None


def guard(backend: str, want_device: str, runner: Any) -> tuple[str, str] | None:
    """(status, reason) when `runner` must not be timed under this row's name, or None when it may.

    Never report CPU numbers under a CUDA name. "unavailable" only for a real reason (no CUDA
    device, or the provider did not load); a runner that landed elsewhere is an error.
    A remote (Triton) row names no local device: the server's model is what it measures.
    """
    spec = get(backend)
    if spec.remote:
        return None
    import torch

    got = torch.device(runner.info.device).type
    want = torch.device(want_device).type
    if want == "cuda" and not torch.cuda.is_available():
        return "unavailable", f"CUDA is not available to torch {torch.__version__}"
    providers = list(runner.info.extra.get("providers") or [])
    need = spec.cuda_provider
    if need and (not providers or providers[0] != need):
        shown = ", ".join(providers) or "none"
        return "unavailable", f"onnxruntime session providers are [{shown}]: {need} did not load"
    if got != want:
        return "error", f"asked for {want}, but the runner loaded on {got}"
    return None


def ort_providers() -> dict[str, Any]:
    """The providers built into the onnxruntime wheel apart from those usable here: a CUDA or
    TensorRT provider is usable only when its library loads and a CUDA device is visible."""
    import onnxruntime as ort

    from gantool.runners.onnx_runner import provider_load_reason

    in_wheel = list(ort.get_available_providers())
    usable, why = [], {}
    for p in in_wheel:
        reason = provider_load_reason(p) if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else None
        if reason:
            why[p] = reason
        else:
            usable.append(p)
    return {"onnxruntime_providers": in_wheel, "onnxruntime_providers_usable": usable,
            "onnxruntime_providers_unusable": why}


def peak_dtype(precision: str) -> str:
    """The GEMM peak a row is held against: an int8 row's is fp32's (above 100% is past the fp32
    roofline); a tf32 row runs the fp32 weights."""
    return "fp32" if precision in ("int8", "tf32") else precision
