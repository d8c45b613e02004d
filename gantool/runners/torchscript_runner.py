"""TorchScript runner: torch.jit.load an exported .ts artifact (its metadata rides inside as an extra file)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from gantool.errors import ArtifactError, first_line
from gantool.runners.base import ModuleRunner, Runner, RunnerInfo, register


def resolve_artifact_dtype(requested: str | None, artifact: str, source: str | Path) -> str:
    """Artifacts have a fixed dtype: "auto"/None takes it; anything else must match it."""
    if requested in (None, "auto") or requested == artifact:
        return artifact
    raise ArtifactError(f"{source} holds {artifact} weights but {requested} was asked for "
                        f"(export a {requested} artifact or pass dtype='auto')")


def parse_metadata(meta: dict[str, str], source: str | Path) -> tuple[str, int, tuple[int, int, int]]:
    """gantool.* metadata -> (dtype, latent_dim, img_shape); ArtifactError when absent or malformed."""
    try:
        shape = tuple(int(v) for v in meta["gantool.image_shape"].split(","))
        if len(shape) != 3:
            raise ValueError("image_shape must have 3 dims")
        return meta["gantool.dtype"], int(meta["gantool.latent_dim"]), shape  # type: ignore[return-value]
    except (KeyError, ValueError, AttributeError) as e:
        raise ArtifactError(f"{source} carries no usable gantool metadata ({type(e).__name__}: {e}); "
                            "was it written by `gantool export`?") from None


class TorchScriptRunner(ModuleRunner):
    def __init__(self, path: str | Path, device: str = "cpu", dtype: str | None = "auto"):
        from gantool.device import parse_dtype, resolve_device
        from gantool.export.torchscript import EXTRA_FILE, quiet_jit

        dev = resolve_device(device)
        extra = {EXTRA_FILE: ""}
        try:
            with quiet_jit():
                self.module = torch.jit.load(str(path), map_location=dev, _extra_files=extra)
        except Exception as e:  # torch raises RuntimeError / ValueError / zip errors for bad files
            first = first_line(e)
            raise ArtifactError(f"{path} is not a loadable TorchScript file: {first[:200]}") from None
        try:
            meta = json.loads(extra[EXTRA_FILE] or "{}")
        except json.JSONDecodeError:
            meta = {}
        art_dtype, latent, shape = parse_metadata(meta, path)
        name = resolve_artifact_dtype(dtype, art_dtype, path)
        self.dtype = parse_dtype(name)
        self.module.eval()
        self.info = RunnerInfo("torchscript", str(dev), name, latent, shape, str(path), {"metadata": meta})


@register("torchscript")
def _torchscript(src: Any, device: str = "cpu", dtype: str | None = "auto", **kw: Any) -> Runner:
    return TorchScriptRunner(src, device, dtype, **kw)
