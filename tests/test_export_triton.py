"""`gantool export --format triton`: configs read with Triton's own ModelConfig schema and checked
against the artifacts' real signatures, models loadable without gantool, bad input, bench backend."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from conftest import assert_one_line_error, need_extra
from gantool.cli import app

need_extra("tritonclient.grpc", "dev extra: tritonclient[grpc]")
from gantool.export.triton import MODELS  # noqa: E402
from triton_helpers import check_model, read_config  # noqa: E402


def invoke(*args: str):
    return CliRunner().invoke(app, ["export", *args])


@pytest.fixture(scope="module")
def repo(tmp_path_factory, checkpoint_path):
    out = tmp_path_factory.mktemp("triton") / "model_repository"
    res = invoke("--checkpoint", str(checkpoint_path), "--format", "triton", "--out", str(out),
                 "--max-batch-size", "256", "--instances", "2", "--kind", "cpu")
    assert res.exit_code == 0, res.output + res.stderr
    assert f"tritonserver --model-repository {out.resolve()}" in res.stdout
    return out


def test_layout_and_configs_follow_tritons_schema(repo):
    from tritonclient.grpc import model_config_pb2 as mc

    assert sorted(p.name for p in repo.iterdir()) == ["generator_onnx", "generator_torchscript"]
    for name, (fmt, backend, _, filename) in MODELS.items():
        assert (repo / name / "1" / filename).is_file()
        cfg = read_config(repo / name / "config.pbtxt")  # Triton's own proto: unknown fields would raise
        assert cfg.name == name and cfg.backend == backend and cfg.max_batch_size == 256
        (z,), (images,) = cfg.input, cfg.output
        assert (z.name, list(z.dims), z.data_type) == ("z", [100], mc.TYPE_FP32)
        assert (images.name, list(images.dims), images.data_type) == ("images", [1, 28, 28], mc.TYPE_FP32)
        assert list(cfg.dynamic_batching.preferred_batch_size) == [16, 64, 256]
        (group,) = cfg.instance_group
        assert (group.count, group.kind) == (2, mc.ModelInstanceGroup.KIND_CPU)
        assert not cfg.optimization.execution_accelerators.gpu_execution_accelerator  # no --optimize
        assert json.loads((repo / name / "gantool.json").read_text())["triton_model"] == name
    assert read_config(repo / "generator_torchscript" / "config.pbtxt").platform == "pytorch_libtorch"


def test_configs_match_the_artifacts_real_signature(repo):
    assert check_model(repo / "generator_onnx") == []
    assert check_model(repo / "generator_torchscript") == []


def test_signature_check_fails_on_a_broken_config(repo, tmp_path):
    import shutil

    for name in MODELS:
        bad = tmp_path / name
        shutil.copytree(repo / name, bad)
        text = (bad / "config.pbtxt").read_text()
        (bad / "config.pbtxt").write_text(text.replace('name: "z"', 'name: "x"').replace("dims: [ 1, 28, 28 ]", "dims: [ 784 ]")
                                          .replace("TYPE_FP32", "TYPE_FP16"))
        problems = "\n".join(check_model(bad))
        assert "'x'" in problems and "[784]" in problems and "TYPE_FP16" in problems, problems


LOAD_WITHOUT_GANTOOL = r"""
import sys, numpy as np
repo = sys.argv[1]
import onnxruntime as ort
s = ort.InferenceSession(repo + "/generator_onnx/1/model.onnx", providers=["CPUExecutionProvider"])
(y,) = s.run(["images"], {"z": np.zeros((3, 100), np.float32)})
assert y.shape == (3, 1, 28, 28), y.shape
import torch
m = torch.jit.load(repo + "/generator_torchscript/1/model.pt")
assert m(torch.zeros(5, 100)).shape == (5, 1, 28, 28)
assert not [k for k in sys.modules if k.startswith("gantool")], "gantool was imported"
print("loaded")
"""


def test_models_load_with_onnxruntime_and_torch_jit_alone(repo, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_GANTOOL, str(repo)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "loaded" in res.stdout, res.stderr


def test_optimize_fp16_and_force_keeps_other_models(repo, checkpoint_path, tmp_path):
    import shutil

    from tritonclient.grpc import model_config_pb2 as mc

    out = tmp_path / "repo"
    shutil.copytree(repo, out)
    (out / "someone_elses_model" / "1").mkdir(parents=True)
    res = invoke("--checkpoint", str(checkpoint_path), "--format", "triton", "--out", str(out), "--dtype", "fp16",
                 "--optimize", "--max-batch-size", "64", "--force")
    assert res.exit_code == 0, res.output + res.stderr
    assert (out / "someone_elses_model" / "1").is_dir()
    cfg = read_config(out / "generator_onnx" / "config.pbtxt")
    assert cfg.input[0].data_type == mc.TYPE_FP16 and cfg.max_batch_size == 64
    trt, cuda = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    assert trt.parameters["trt_profile_max_shapes"] == "z:64x100" and trt.parameters["trt_cuda_graph_enable"] == "1"
    assert cuda.name == "cuda" and cuda.parameters["enable_cuda_graph"] == "1"
    assert check_model(out / "generator_onnx") == [] and check_model(out / "generator_torchscript") == []


@pytest.mark.parametrize("args, needle", [
    (["--max-batch-size", "0"], "--max-batch-size must be >= 1"),
    (["--instances", "0"], "--instances must be >= 1"),
    (["--kind", "tpu"], "unknown --kind 'tpu'"),
    (["--dtype", "bf16"], "dtype bf16 is not served"),
    (["--dtype", "fp32,fp16"], "one --dtype"),
])
def test_bad_triton_options(args, needle, checkpoint_path, tmp_path):
    res = invoke("--checkpoint", str(checkpoint_path), "--format", "triton", "--out", str(tmp_path / "r"), *args)
    assert_one_line_error(res, needle)
    assert not (tmp_path / "r").exists()


def test_a_repository_keeps_other_files_and_refuses_a_model_folder_gantool_did_not_write(checkpoint_path, tmp_path):
    """The one overwrite rule (README, "Writing over earlier output"; issue 36.2): other models and files
    stay; a generator_onnx/ that gantool did not write is refused, --force or not, and nothing is written."""
    out = tmp_path / "r"
    (out / "generator_onnx").mkdir(parents=True)
    (out / "generator_onnx" / "config.pbtxt").write_text("mine")
    for force in ([], ["--force"]):
        res = invoke("--checkpoint", str(checkpoint_path), "--format", "triton", "--out", str(out), *force)
        assert_one_line_error(res, "generator_onnx", "gantool did not write", "never replaces")
    assert [p.name for p in out.iterdir()] == ["generator_onnx"]
    assert (out / "generator_onnx" / "config.pbtxt").read_text() == "mine"


def test_a_repository_gantool_wrote_is_updated_without_force_and_says_what_it_replaced(repo, checkpoint_path, tmp_path):
    import shutil

    out = tmp_path / "repo"
    shutil.copytree(repo, out)
    (out / "notes.txt").write_text("mine")
    res = invoke("--checkpoint", str(checkpoint_path), "--format", "triton", "--out", str(out), "--no-verify")
    assert res.exit_code == 0, res.output + res.stderr
    said = [line for line in res.stdout.splitlines() if line.startswith("replaced gantool's earlier")]
    assert len(said) == 1 and "generator_onnx" in said[0] and "generator_torchscript" in said[0], res.stdout
    assert (out / "notes.txt").read_text() == "mine"


def test_triton_options_need_format_triton(checkpoint_path, tmp_path):
    res = invoke("--checkpoint", str(checkpoint_path), "--format", "onnx", "--out", str(tmp_path / "e"),
                 "--max-batch-size", "8")
    assert_one_line_error(res, "--max-batch-size only apply to --format triton")


def test_bench_triton_without_a_server_is_unavailable(checkpoint_path, tmp_path):
    out = tmp_path / "b.json"
    res = CliRunner().invoke(app, ["bench", "--checkpoint", str(checkpoint_path), "--backends", "triton",
                                   "--url", "127.0.0.1:9", "--precisions", "fp32", "--batch-sizes", "4",
                                   "--json", str(out), "--device", "cpu"])
    assert_one_line_error(res, "nothing could be measured", "no Triton server at 127.0.0.1:9", progress_prefix="bench:")
    from gantool.bench.report import validate

    doc = json.loads(out.read_text())
    validate(doc)
    (row,) = doc["results"]
    assert row["status"] == "unavailable" and row["device"] == "remote"


class FakeTriton:
    """A stand-in for tritonclient.grpc.InferenceServerClient that serves the repository's ONNX
    model with onnxruntime: exercises the runner's requests, names, dtypes and version field."""

    def __init__(self, repo):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(repo / "generator_onnx" / "1" / "model.onnx"),
                                            providers=["CPUExecutionProvider"])

    def is_model_ready(self, model, **kw):
        return model == "generator_onnx"

    def get_model_config(self, model, as_json=False, **kw):
        return {"config": {"name": model, "parameters": {}}}  # the repository export's config says no gantool.dtype

    def get_model_metadata(self, model, as_json=False):
        return {"name": model, "versions": ["1"], "platform": "onnxruntime_onnx",
                "inputs": [{"name": "z", "datatype": "FP32", "shape": ["-1", "100"]}],
                "outputs": [{"name": "images", "datatype": "FP32", "shape": ["-1", "1", "28", "28"]}]}

    def get_server_metadata(self, as_json=False):
        return {"name": "triton", "version": "2.99.0"}

    def infer(self, model, inputs, outputs=None):
        (inp,) = inputs
        import numpy as np

        x = np.frombuffer(inp._raw_content, dtype=np.float32).reshape(inp.shape())
        (y,) = self.session.run(["images"], {inp.name(): x})
        return type("R", (), {"as_numpy": lambda self, name: y})()


def test_triton_runner_against_a_fake_server_carries_model_version(repo, checkpoint_path):
    from gantool.runners import load_runner
    import torch

    runner = load_runner("fake:8001", "triton", dtype="fp32", model="generator_onnx", client=FakeTriton(repo))
    assert runner.info.extra["model_version"] == "1" and runner.info.extra["server_version"] == "2.99.0"
    eager = load_runner(checkpoint_path, "eager")
    z = torch.randn(4, 100)
    assert torch.allclose(runner(z), eager(z), atol=1e-5)
