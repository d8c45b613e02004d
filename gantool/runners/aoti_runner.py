"""AOTInductor runner: aoti_load_package an exported .pt2 compiled for one device."""
from __future__ import annotations

from pathlib import Path

import torch

from gantool.errors import ArtifactError, DeviceError, first_line
from gantool.runners.base import ModuleRunner, RunnerInfo
from gantool.signature import Signature, artifact_dtype, resolve_dtype


class AOTIRunner(ModuleRunner):
    def __init__(self, path: str | Path, device: str = "cpu", dtype: str | None = "auto"):
        from gantool.device import parse_dtype, resolve_device
        from gantool.export.aoti import quiet_cpp_extension, read_metadata, read_package

        raw = read_package(path)
        built_for = raw.get("AOTI_DEVICE_KEY", "cpu")
        meta = read_metadata(Path(path))
        sig = Signature.from_metadata(meta, path)
        art_dtype = artifact_dtype(meta, None, path)
        if device in (None, "auto"):
            device = built_for
        dev = resolve_device(device)
        if dev.type != built_for:
            raise DeviceError(f"aoti unavailable: {path} was compiled for {built_for}, not {dev.type} "
                              f"(export again with --format aoti --device {dev.type})")
        name = resolve_dtype(dtype, art_dtype, path)
        self.dtype = parse_dtype(name)
        try:
            with quiet_cpp_extension():
                self.module = torch._inductor.aoti_load_package(
                    str(path), device_index=dev.index if dev.index is not None else -1)
        except Exception as e:
            first = first_line(e)
            raise ArtifactError(f"{path} could not be loaded by aoti_load_package: {first[:200]}") from None
        self.info = RunnerInfo("aoti", str(dev), name, sig, str(path),
                               {"metadata": meta, "cpu_isa": raw.get("AOTI_CPU_ISA", "")})

