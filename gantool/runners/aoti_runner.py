"""AOTInductor runner: aoti_load_package an exported .pt2 compiled for one device."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import torch

from gantool.errors import ArtifactError, DeviceError, first_line
from gantool.runners.base import ModuleRunner, Runner, RunnerInfo, register
from gantool.runners.torchscript_runner import parse_metadata, resolve_artifact_dtype


def read_package_metadata(path: str | Path) -> dict[str, str]:
    """The AOTI metadata dict (gantool's spec + AOTI_DEVICE_KEY), read from the zip without loading code."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(".wrapper_metadata.json")]
            if not names:
                raise ArtifactError(f"{path} is not an AOTInductor package (no wrapper metadata inside)")
            return json.loads(zf.read(names[0]))
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError, EOFError) as e:
        raise ArtifactError(f"{path} is not a readable AOTInductor package: {e}") from None


class AOTIRunner(ModuleRunner):
    def __init__(self, path: str | Path, device: str = "cpu", dtype: str | None = "auto"):
        from gantool.device import parse_dtype, resolve_device
        from gantool.export.aoti import METADATA_KEY, quiet_cpp_extension

        raw = read_package_metadata(path)
        built_for = raw.get("AOTI_DEVICE_KEY", "cpu")
        try:
            meta = json.loads(raw.get(METADATA_KEY, "{}"))
        except json.JSONDecodeError:
            meta = {}
        art_dtype, latent, shape = parse_metadata(meta, path)
        if device in (None, "auto"):
            device = built_for
        dev = resolve_device(device)
        if dev.type != built_for:
            raise DeviceError(f"aoti unavailable: {path} was compiled for {built_for}, not {dev.type} "
                              f"(export again with --format aoti --device {dev.type})")
        name = resolve_artifact_dtype(dtype, art_dtype, path)
        self.dtype = parse_dtype(name)
        try:
            with quiet_cpp_extension():
                self.module = torch._inductor.aoti_load_package(
                    str(path), device_index=dev.index if dev.index is not None else -1)
        except Exception as e:
            first = first_line(e)
            raise ArtifactError(f"{path} could not be loaded by aoti_load_package: {first[:200]}") from None
        self.info = RunnerInfo("aoti", str(dev), name, latent, shape, str(path),
                               {"metadata": meta, "cpu_isa": raw.get("AOTI_CPU_ISA", "")})


@register("aoti")
def _aoti(src: Any, device: str = "cpu", dtype: str | None = "auto", **kw: Any) -> Runner:
    return AOTIRunner(src, device, dtype, **kw)
