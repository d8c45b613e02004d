"""What a row runs under and what it used: fp32/tf32 matmul precision, set and restored; peak memory per row."""
from __future__ import annotations

import contextlib
import resource
from typing import Iterator

import torch

# torch's float32 matmul precision per bench precision: fp32 rows are IEEE ("highest", no TF32 on
# CUDA); tf32 rows let cuBLAS/Inductor use TF32 tensor cores ("high"). Other precisions leave it.
MATMUL_PRECISION = {"fp32": "highest", "tf32": "high"}


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[str]:
    """Set torch's fp32 matmul (and cuDNN) TF32 mode for one row; restore the user's after."""
    old, old_cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    want = MATMUL_PRECISION.get(precision)
    try:
        if want:
            torch.set_float32_matmul_precision(want)
            torch.backends.cudnn.allow_tf32 = precision == "tf32"
        yield torch.get_float32_matmul_precision()
    finally:
        torch.set_float32_matmul_precision(old)
        torch.backends.cudnn.allow_tf32 = old_cudnn


def _vm_hwm_kb() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class MemoryProbe:
    """Peak memory of one row. CPU: peak RSS (Linux VmHWM, reset per row through clear_refs; the
    process's lifetime peak where that is not possible). CUDA: torch's allocator peak for torch
    backends; for ONNX Runtime (its own arena, invisible to torch) the device memory in use after
    the row (cudaMemGetInfo), which also counts other processes."""

    def __init__(self, device: str, backend: str):
        self.device, self.backend = device, backend
        self.reset_ok = False

    def start(self) -> None:
        if self.device == "cuda":
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self.reset_ok = True
        except OSError:
            self.reset_ok = False

    def stop(self) -> tuple[float | None, str | None]:
        if self.device == "cuda":
            if not torch.cuda.is_available():
                return None, None
            if self.backend.startswith("ort"):
                free, total = torch.cuda.mem_get_info()
                return (total - free) / 2**20, "device memory in use after the row (cudaMemGetInfo, all allocators)"
            return torch.cuda.max_memory_allocated() / 2**20, "torch CUDA allocator peak (max_memory_allocated)"
        kb = _vm_hwm_kb() if self.reset_ok else None
        if kb is not None:
            return kb / 1024, "peak RSS during the row (VmHWM, reset per row)"
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak RSS of the process so far (ru_maxrss)"
