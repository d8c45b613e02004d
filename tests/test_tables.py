"""A new backend is one runner and one table entry; a new format one module: both defined here alone,
nothing edited under gantool/, and seen in export, verify and bench."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from gantool import backends, formats
from gantool.export.spec import Format
from gantool.runners.base import ModuleRunner, RunnerInfo
from gantool.signature import Signature, artifact_dtype, resolve_dtype
from tests.conftest import gantool_cli

run = gantool_cli
META = "toy.json"  # where the toy format keeps gantool's metadata inside its archive


# ---- a toy format: a traced TorchScript archive under another suffix --------------------------------
def _export_toy(module: torch.nn.Module, spec: Any, path: Path, *, dtype: str, device: torch.device,
                opset: int | None) -> dict[str, Any]:
    traced = torch.jit.trace(module, spec.example_inputs(next(module.parameters()).dtype, device), check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={META: json.dumps(spec.metadata(dtype, "toy"))})
    return {"opset": None}


def _read_toy(path: Path) -> dict[str, str]:
    extra = {META: ""}
    torch.jit.load(str(path), _extra_files=extra)
    return json.loads(extra[META])


TOY_FORMAT = Format(name="toy", title="Toy", suffix=".toy", backend="toyrun", device_specific=False,
                    export=_export_toy, read_metadata=_read_toy)


# ---- a toy backend that runs it --------------------------------------------------------------------
class ToyRunner(ModuleRunner):
    def __init__(self, path: str | Path, device: str = "cpu", dtype: str | None = "auto", **_: Any):
        meta = _read_toy(Path(path))
        name = resolve_dtype(dtype, artifact_dtype(meta, None, path), path)
        self.module = torch.jit.load(str(path)).eval()
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
        self.info = RunnerInfo("toyrun", "cpu", name, Signature.from_metadata(meta, path), str(path))


@pytest.fixture()
def toy_tables():
    formats.register(TOY_FORMAT)
    backends.register(backends.Backend("toyrun", ToyRunner, "toy", about="the test's toy"))
    yield
    formats.unregister("toy")
    backends.unregister("toyrun")


def test_a_toy_backend_and_format_go_through_export_verify_and_bench(toy_tables, checkpoint_path, tmp_path):
    out = tmp_path / "exp"
    r = run("export", "--checkpoint", checkpoint_path, "--format", "toy,onnx", "--out", out)
    assert r.exit_code == 0, r.stderr
    assert "toy fp32" in r.stdout
    entries = {e["file"]: e for e in json.loads((out / "manifest.json").read_text())["artifacts"]}
    assert set(entries) == {"generator.fp32.toy", "generator.fp32.onnx"}
    assert entries["generator.fp32.toy"]["backend"] == "toyrun" and entries["generator.fp32.toy"]["parity"]["passed"]

    r = run("verify", "--exported", out)
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "generator.fp32.toy" in r.stdout and "all 2 checked artifact(s) pass" in r.stdout

    js = tmp_path / "bench.json"
    r = run("bench", "--exported", out, "--backends", "toyrun,ort", "--precisions", "fp32", "--batch-sizes", "8",
            "--warmup", "0", "--min-time", "0", "--repeats", "3", "--device", "cpu", "--json", js)
    assert r.exit_code == 0, r.stderr
    rows = {x["backend"]: x for x in json.loads(js.read_text())["results"]}
    assert rows["toyrun"]["status"] == "ok" and rows["toyrun"]["parity"]["passed"], rows["toyrun"]
    assert rows["toyrun"]["artifact"].endswith("generator.fp32.toy")
    assert "toyrun" in r.stdout


def test_the_tables_say_what_the_cli_offers():
    assert set(backends.default_backends("cpu")) >= {"eager", "compile", "torchscript", "ort", "aoti"}
    assert "web" not in backends.default_backends("cpu") and "triton" not in backends.default_backends("cpu")
    assert backends.names(int8=True) == ["ort", "openvino", "triton"]  # triton: a served int8 model
    assert backends.get("torch").name == "torchscript"  # serve's old name
    with pytest.raises(Exception, match="choose one of: eager"):
        backends.get("nope")
    r = run("bench", "--backends", "nope", "--checkpoint", "x")
    assert r.exit_code != 0 and "nope" in r.stderr and "ort-trt" in r.stderr
