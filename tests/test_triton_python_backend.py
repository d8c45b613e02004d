"""`gantool export --format triton --kind python`: a Python-backend model that the wheel's plain
tritonserver binary (no PyTriton, no onnxruntime backend) loads and serves, checked against eager;
bench's load rows run against it too; the server is gone after."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import assert_one_line_error, need_extra
from gantool.cli import app

need_extra("pytriton", "serve extra: pip install 'gantool[serve]'")
import tritonclient.grpc as grpcclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from gantool.export.triton import PYTHON_MODEL  # noqa: E402
from triton_helpers import check_model, read_config  # noqa: E402
from gantool.serve.env import free_ports, port_free  # noqa: E402
from gantool.serve.tritonserver import TritonServerProcess  # noqa: E402
from serve_helpers import alive, descendants, run_cli  # noqa: E402


@pytest.fixture(scope="module")
def repo(tmp_path_factory, checkpoint_path):
    out = tmp_path_factory.mktemp("triton_py") / "model_repository"
    r = CliRunner().invoke(app, ["export", "--checkpoint", str(checkpoint_path), "--format", "triton", "--kind", "python",
                                 "--max-batch-size", "64", "--out", str(out), "--no-verify"])
    assert r.exit_code == 0, r.output
    return out


def test_python_model_is_written_beside_the_others_and_matches_its_onnx(repo):
    from tritonclient.grpc import model_config_pb2 as mc

    assert sorted(p.name for p in repo.iterdir()) == ["generator_onnx", PYTHON_MODEL, "generator_torchscript"]
    cfg = read_config(repo / PYTHON_MODEL / "config.pbtxt")
    assert cfg.backend == "python" and cfg.max_batch_size == 64
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert (repo / PYTHON_MODEL / "1" / "model.py").is_file()
    assert (repo / PYTHON_MODEL / "1" / "model.onnx").read_bytes() == (repo / "generator_onnx" / "1" / "model.onnx").read_bytes()
    assert check_model(repo / PYTHON_MODEL) == []
    import ast

    tree = ast.parse((repo / PYTHON_MODEL / "1" / "model.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"json", "os", "numpy", "onnxruntime", "triton_python_backend_utils"}, imported  # no gantool


def test_kind_option_is_checked(checkpoint_path, tmp_path):
    r = CliRunner().invoke(app, ["export", "--checkpoint", str(checkpoint_path), "--format", "triton",
                                 "--kind", "gpu,cpu", "--out", str(tmp_path / "r")])
    assert_one_line_error(r, "--kind", "python")


def test_plain_tritonserver_serves_it_and_bench_checks_every_answer(repo, checkpoint_path, tmp_path):
    import torch

    from gantool.runners import load_runner

    eager = load_runner(checkpoint_path, "eager", device="cpu")
    http, grpc, metrics = free_ports(3)
    server = TritonServerProcess(repo, [PYTHON_MODEL], http, grpc, metrics)
    with server:
        tree = descendants(server.pid)
        assert tree, "the Python backend runs its model in a stub process under tritonserver"
        client = grpcclient.InferenceServerClient(server.grpc_url)
        z = np.random.default_rng(0).standard_normal((5, 100)).astype(np.float32)
        inp = grpcclient.InferInput("z", [5, 100], "FP32")
        inp.set_data_from_numpy(z)
        out = client.infer(PYTHON_MODEL, [inp], client_timeout=10).as_numpy("images")
        np.testing.assert_allclose(out, eager(torch.from_numpy(z)).numpy(), atol=1e-5, rtol=1e-4)
        bad = grpcclient.InferInput("z", [0, 100], "FP32")
        bad.set_data_from_numpy(np.zeros((0, 100), np.float32))
        with pytest.raises(InferenceServerException):
            client.infer(PYTHON_MODEL, [bad], client_timeout=10)
        assert client.infer(PYTHON_MODEL, [inp], client_timeout=10).as_numpy("images").shape == (5, 1, 28, 28)
        client.close()
        report = tmp_path / "bench.json"
        r = run_cli("bench", "--checkpoint", str(checkpoint_path), "--backends", "triton", "--precisions", "fp32",
                    "--url", server.grpc_url, "--triton-model", PYTHON_MODEL, "--concurrency", "2",
                    "--batch-sizes", "4", "--duration", "1", "--json", str(report))
        assert r.exit_code == 0, r.output
        (row,) = json.loads(report.read_text())["results"]
        assert row["status"] == "ok" and row["load"]["checked"] == row["load"]["requests"] > 0
        assert row["load"]["wrong"] == 0 and row["load"]["executions"] > 0
    assert server.proc.returncode == 0
    assert not [p for p in tree if alive(p)]
    assert all(port_free(p) for p in (http, grpc, metrics))
