"""TorchScript runner: torch.jit.load an exported .ts artifact (its metadata rides inside as an extra file)."""
from __future__ import annotations

from pathlib import Path


from gantool.runners.base import ModuleRunner, RunnerInfo
from gantool.signature import Signature, artifact_dtype, resolve_dtype


class TorchScriptRunner(ModuleRunner):
    def __init__(self, path: str | Path, device: str = "cpu", dtype: str | None = "auto"):
        from gantool.device import parse_dtype, resolve_device
        from gantool.export.torchscript import load

        dev = resolve_device(device)
        self.module, meta = load(path, dev)
        sig = Signature.from_metadata(meta, path)
        name = resolve_dtype(dtype, artifact_dtype(meta, None, path), path)
        self.dtype = parse_dtype(name)
        self.module.eval()
        self.info = RunnerInfo("torchscript", str(dev), name, sig, str(path), {"metadata": meta})

