"""Resolve "auto" to cuda / mps / cpu, name dtypes, and sync before reading timers."""
from __future__ import annotations

import platform

import torch

from gantool.errors import ConfigError, DeviceError

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
# What an artifact or bench row may be: the torch dtypes plus int8, which only exists as an ONNX
# file quantized by ONNX Runtime (weights and activations int8, I/O float32).
PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "int8")  # bench rows: stored dtypes, plus tf32 (fp32 weights, TF32 matmuls)
INT8_ONLY_ONNX = ("int8 runs only from a quantized ONNX artifact (`gantool export --format onnx --dtype int8`, "
                  "backends ort and openvino)")


def parse_dtype(name: str) -> torch.dtype:
    if name == "int8":
        raise ConfigError(f"{INT8_ONLY_ONNX}; PyTorch backends run {', '.join(DTYPES)}")
    try:
        return DTYPES[name]
    except KeyError:
        raise ConfigError(f"unknown dtype/precision {name!r}; choose one of: {', '.join(DTYPES)}") from None


def dtype_name(dtype: torch.dtype) -> str:
    for k, v in DTYPES.items():
        if v == dtype:
            return k
    return str(dtype).replace("torch.", "")


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" picks CUDA, then MPS, then CPU. Asking for an absent device is an error, not a fallback."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__})")
        return torch.device(name)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise DeviceError("--device mps: MPS is not available on this machine")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")


def sync(device: torch.device | str) -> None:
    """Wait for queued kernels so a host timer reads real elapsed time."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return cpu_name()


def supports_dtype(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether matmuls in `dtype` are meaningful on `device` (fp16 on CPU is emulated and slow)."""
    if dtype == torch.float32:
        return True
    if device.type == "cuda":
        return dtype != torch.bfloat16 or torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return dtype == torch.bfloat16 or dtype == torch.float16
    return dtype == torch.float16


# gantool's name -> the /proc/cpuinfo flags that mean it (x86 names; AMX counts as its tile unit).
ISA_FLAGS = {"avx2": ("avx2",), "avx512f": ("avx512f",), "avx512_vnni": ("avx512_vnni",),
             "avx_vnni": ("avx_vnni",), "avx512_bf16": ("avx512_bf16",), "amx": ("amx_tile",)}


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):  # x86 / aarch64
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_isa(flags: set[str] | None = None) -> dict[str, bool]:
    """The CPU extensions that decide int8 and bf16 speed: avx2, avx512f, avx512_vnni, avx_vnni,
    avx512_bf16, amx. All False where /proc/cpuinfo is unreadable (not Linux)."""
    flags = cpu_flags() if flags is None else flags
    return {name: any(f in flags for f in names) for name, names in ISA_FLAGS.items()}


def train_precision(name: str, device: torch.device | str, flags: set[str] | None = None) -> str:
    """Training's autocast precision: "auto" is bf16 where the device multiplies bf16 natively
    (bf16_support), else fp32 -- emulated bf16 would be slower than fp32, not faster."""
    if name != "auto":
        return name
    return "bf16" if bf16_support(device, flags) == "native" else "fp32"


def bf16_support(device: torch.device | str, flags: set[str] | None = None) -> str:
    """"native" where the hardware multiplies bf16 (avx512_bf16 / AMX on x86, bf16 on Arm, CUDA
    sm_80+), else "emulated" (converted to fp32 around every op: slower than fp32, not faster)."""
    device = torch.device(device)
    if device.type == "cuda":
        return "native" if torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8 else "emulated"
    if device.type != "cpu":
        return "emulated"
    flags = cpu_flags() if flags is None else flags
    return "native" if flags & {"avx512_bf16", "amx_bf16", "bf16"} else "emulated"
