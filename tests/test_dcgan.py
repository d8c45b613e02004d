"""The second built-in G (DCGAN, issue 22) through everything: a short CLI train, exact resume, export of
every format and precision (int8 with per-channel conv weights, BatchNorm folded in eval mode), verify."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from PIL import Image

from conftest import assert_one_line_error, gantool_cli
from gantool.checkpoint import load_checkpoint, load_generator, sha256_file
pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ["--limit", "200", "--batch-size", "20", "--log-every", "5"]


def run(*args):
    return gantool_cli(*args)


@pytest.fixture(scope="module")
def dcgan_run(tmp_path_factory):
    """`gantool train --arch dcgan` for 2 epochs of 200 images (20 steps) with the recipe's conv D."""
    out = tmp_path_factory.mktemp("dcgan") / "run"
    r = run("train", "--arch", "dcgan", "--epochs", 2, *SMALL, "--out", out, "--no-progress", "--device", "cpu")
    assert r.exit_code == 0, r.stdout + r.stderr
    return out


def test_train_arch_dcgan_uses_the_dcgan_recipe_and_writes_a_run(dcgan_run):
    ck = load_checkpoint(dcgan_run)
    assert ck["model_config"]["g_arch"] == "dcgan" and ck["train_config"]["recipe"] == "dcgan"
    assert ck["step"] == 20 and (dcgan_run / "metrics.jsonl").is_file()
    g, cfg, _ = load_generator(dcgan_run)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules()) and not g.training
    with torch.no_grad():
        y = g(torch.randn(5, cfg.latent_dim))
    assert y.shape == (5, 1, 28, 28) and y.abs().max() <= 1
    bn = next(m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))  # stats trained (and EMA'd)
    grid = sorted((dcgan_run / "samples").glob("*.png"))[-1]
    img = np.asarray(Image.open(grid))
    assert img.std() > 0


def test_resume_of_a_dcgan_run_continues_exactly(tmp_path):
    base = ["train", "--arch", "dcgan", "--epochs", 2, *SMALL, "--no-progress", "--device", "cpu"]
    assert run(*base, "--out", tmp_path / "straight").exit_code == 0
    assert run(*base, "--out", tmp_path / "split", "--max-steps", 7).exit_code == 0
    r = run("train", "--resume", tmp_path / "split", "--no-progress", "--device", "cpu")
    assert r.exit_code == 0, r.stdout + r.stderr
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split")
    assert a["step"] == b["step"] == 20
    for key in ("generator", "generator_ema", "discriminator"):
        for name in a[key]:  # BatchNorm running stats and num_batches_tracked included
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert_one_line_error(run("train", "--resume", tmp_path / "split", "--arch", "mlp", "--device", "cpu"),
                          "--arch")


@pytest.fixture(scope="module")
def dcgan_exported(dcgan_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("dcgan-exp")
    r = run("export", "--checkpoint", dcgan_run, "--format", "onnx,torchscript,aoti", "--dtype", "fp32,fp16,bf16",
            "--out", out, "--force")
    assert r.exit_code == 0, r.stdout + r.stderr
    r = run("export", "--checkpoint", dcgan_run, "--format", "onnx", "--dtype", "int8", "--out", out, "--force")
    assert r.exit_code == 0, r.stdout + r.stderr
    return out


def test_every_format_and_precision_exports_and_verifies(dcgan_exported, tmp_path):
    doc = json.loads((dcgan_exported / "manifest.json").read_text())
    got = {(e["format"], e["dtype"]) for e in doc["artifacts"]}
    assert {("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"), ("torchscript", "fp32"), ("torchscript", "bf16"),
            ("aoti", "fp32")} <= got
    assert doc["flops_per_sample"] > 0
    js = tmp_path / "v.json"
    r = run("verify", "--exported", dcgan_exported, "--json", js)
    assert r.exit_code == 0, r.stdout + r.stderr
    results = json.loads(js.read_text())["results"]
    assert all(x["passed"] for x in results) and len(results) == len(doc["artifacts"])
    # BatchNorm in eval mode: the ONNX graph has no BatchNormalization left in training form, and
    # the fp32 file equals eager to float noise (running stats, not batch stats)
    fp32 = next(x for x in results if x["name"] == "generator.fp32.onnx")
    assert fp32["max_abs"] < 1e-5
    # int8 quantized the conv filters per channel (one scale per output channel)
    m = onnx.load(str(dcgan_exported / "generator.int8.onnx"))
    scales = [numpy_helper.to_array(t) for t in m.graph.initializer if t.name.endswith("weight_scale")]
    assert scales and any(s.size > 1 for s in scales)


def test_dcgan_int8_with_scaled_weights_fails_verify(dcgan_exported, tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(dcgan_exported, d)
    doc = json.loads((d / "manifest.json").read_text())
    doc["artifacts"] = [e for e in doc["artifacts"] if e["file"] == "generator.int8.onnx"]
    path = d / "generator.int8.onnx"
    model = onnx.load(str(path))
    scale = next(t for t in model.graph.initializer if t.name.endswith("weight_scale"))
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(10), scale.name))
    onnx.save_model(model, str(path))
    doc["artifacts"][0]["sha256"] = sha256_file(path)
    (d / "manifest.json").write_text(json.dumps(doc))
    assert_one_line_error(run("verify", "--exported", d), "parity failed", "generator.int8.onnx", code=1)


def test_web_and_triton_take_the_dcgan(dcgan_run, dcgan_exported, tmp_path):
    site = tmp_path / "site"
    r = run("export", "--format", "web", "--exported", dcgan_exported, "--out", site)
    assert r.exit_code == 0, r.stdout + r.stderr
    assert json.loads((site / "model.json").read_text())["img_shape"] == [1, 28, 28]
    repo = tmp_path / "repo"
    r = run("export", "--checkpoint", dcgan_run, "--format", "triton", "--out", repo)
    assert r.exit_code == 0, r.stdout + r.stderr
    from triton_helpers import check_model

    assert check_model(repo / "generator_onnx") == [] and check_model(repo / "generator_torchscript") == []
