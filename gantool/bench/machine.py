"""What a number depends on: the machine (CPU, ISA flags, GPU), threads and library versions."""
from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gantool import __version__
from gantool.bench.backends import ort_providers
from gantool.device import cpu_isa, cpu_name, device_name
from gantool.errors import first_line


def environment(device: torch.device) -> dict[str, Any]:
    """What a number depends on: machine, threads and library versions."""
    versions: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                                "numpy": np.__version__, "gantool": __version__}
    for mod in ("onnxruntime", "onnx", "openvino"):
        try:
            m = __import__(mod)
            versions[mod] = m.__version__
        except Exception as e:  # noqa: BLE001 - a missing/broken optional lib is recorded, not fatal
            versions[mod] = f"unavailable: {first_line(e)}"
    env = {"device": str(device), "device_name": device_name(device), "cpu": cpu_name(), "cpu_isa": cpu_isa(),
           "cpu_count": __import__("os").cpu_count(), "threads": torch.get_num_threads(),
           "platform": platform.platform(), "versions": versions,
           "float32_matmul_precision": torch.get_float32_matmul_precision(),
           "cuda": None}
    if "onnxruntime" in sys.modules:
        env.update(ort_providers())
        env["onnxruntime_path"] = str(Path(sys.modules["onnxruntime"].__file__).parent)
    if torch.cuda.is_available():
        env["cuda"] = {"torch_cuda": torch.version.cuda, "device_count": torch.cuda.device_count(),
                       "name": torch.cuda.get_device_name(), "capability": list(torch.cuda.get_device_capability())}
    return env
