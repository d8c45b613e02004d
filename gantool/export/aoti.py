"""AOTInductor: torch.export with a dynamic batch Dim, then aoti_compile_and_package -> one .pt2 a device."""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

from gantool.export.spec import ExportSpec, Format

METADATA_KEY = "gantool"  # inside the package's AOTI metadata (read back with get_metadata())


@contextlib.contextmanager
def quiet_cpp_extension() -> Iterator[None]:
    """torch logs "No CUDA runtime is found, using CUDA_HOME=..." on every CPU compile/load; not news."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _unsupported(dtype: str, device: torch.device) -> str | None:
    from gantool.device import parse_dtype, supports_dtype

    if not supports_dtype(device, parse_dtype(dtype)):
        return f"{device.type} does not support {dtype} matmuls"
    return None


def export_aoti(module: torch.nn.Module, spec: ExportSpec, path: Path, *, dtype: str,
                device: torch.device, opset: int | None) -> dict[str, Any]:
    import json

    x = spec.example_inputs(next(module.parameters()).dtype, device)
    with warnings.catch_warnings(), quiet_cpp_extension():
        warnings.simplefilter("ignore")
        program = torch.export.export(module, x, dynamic_shapes=spec.dynamic_shapes())
        meta = {METADATA_KEY: json.dumps(spec.metadata(dtype, "aoti"))}
        # The packager insists on a *.pt2 name, so compile beside `path` and move it into place.
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".aoti-") as tmp:
            pkg = torch._inductor.aoti_compile_and_package(
                program, package_path=os.path.join(tmp, "generator.pt2"),
                # No cache: Inductor's cache key leaves out aot_inductor.metadata, so a package
                # compiled earlier for the same weights would come back with another checkpoint's
                # provenance (or none) embedded, and verify would rightly reject it.
                inductor_configs={"aot_inductor.metadata": meta, "force_disable_caches": True},
            )
            os.replace(pkg, path)
    return {"opset": None}


def read_package(path: str | Path) -> dict[str, str]:
    """The AOTI metadata dict (gantool's spec under METADATA_KEY, AOTI_DEVICE_KEY...), read from the zip without loading code."""
    import json
    import zipfile

    from gantool.errors import ArtifactError

    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(".wrapper_metadata.json")]
            if not names:
                raise ArtifactError(f"{path} is not an AOTInductor package (no wrapper metadata inside)")
            return json.loads(zf.read(names[0]))
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError, EOFError) as e:
        raise ArtifactError(f"{path} is not a readable AOTInductor package: {e}") from None


def read_metadata(path: Path) -> dict[str, str]:
    import json

    try:
        meta = json.loads(read_package(path).get(METADATA_KEY, "{}"))
    except json.JSONDecodeError:
        meta = {}
    return meta if isinstance(meta, dict) else {}


FORMAT = Format(name="aoti", title="AOTInductor", suffix=".pt2", backend="aoti", device_specific=True,
                export=export_aoti, read_metadata=read_metadata, unsupported=_unsupported)
