"""The user's own generator (--generator FILE.py:CALLABLE | MODULE:CALLABLE): export, verify, sample, bad input."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import assert_one_line_error, gantool_cli


CONV_G = textwrap.dedent('''
    import torch
    from torch import nn

    class ConvG(nn.Module):
        latent_dim, img_shape = 64, (3, 32, 32)

        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.ConvTranspose2d(64, 32, 8), nn.BatchNorm2d(32), nn.ReLU(),
                nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.ConvTranspose2d(16, 3, 4, 2, 1), nn.Tanh())

        def forward(self, z):
            return self.net(z.reshape(-1, 64, 1, 1))

    def make():
        return ConvG()

    def broken():
        return 42
''')

MLP_G = textwrap.dedent('''
    from torch import nn

    class MLP(nn.Module):  # no contract attributes: --latent-dim is needed, the shape is read off the output
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(100, 128), nn.ReLU(), nn.Linear(128, 784), nn.Tanh())

        def forward(self, z):
            return self.net(z).reshape(-1, 1, 28, 28)

    def make():
        return MLP()
''')


run = gantool_cli


@pytest.fixture()
def conv_file(tmp_path) -> Path:
    p = tmp_path / "conv_gen.py"
    p.write_text(CONV_G)
    return p


def _trained_weights(path: Path, tmp_path: Path) -> Path:
    """Weights that are not the seeded init, with BatchNorm running stats away from (0, 1)."""
    from gantool.source import UserSource

    g = UserSource(f"{path}:make").load().module.train()
    with torch.no_grad():
        for _ in range(3):
            g(torch.randn(16, 64) * 2 + 0.5)
    w = tmp_path / "g.pt"
    torch.save({"state_dict": g.state_dict()}, w)
    return w


def test_file_generator_exports_verifies_and_samples(conv_file, tmp_path):
    w = _trained_weights(conv_file, tmp_path)
    out = tmp_path / "exp"
    r = run("export", "--generator", f"{conv_file}:make", "--weights", w, "--format", "onnx,torchscript",
            "--dtype", "fp32,int8", "--out", out)
    assert r.exit_code == 0, r.stderr
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["img_shape"] == [3, 32, 32] and doc["latent_dim"] == 64 and doc["source_checkpoint"] is None
    src = doc["source"]
    assert src["kind"] == "user" and src["file"] == str(conv_file.resolve()) and len(src["file_sha256"]) == 64
    assert src["weights"] == str(w.resolve()) and len(src["weights_sha256"]) == 64
    assert doc["flops_per_sample"] > 0
    assert sorted(e["file"] for e in doc["artifacts"]) == ["generator.fp32.onnx", "generator.fp32.ts", "generator.int8.onnx"]
    assert all(e["parity"]["passed"] for e in doc["artifacts"])
    import onnx

    props = {p.key: p.value for p in onnx.load(str(out / "generator.fp32.onnx")).metadata_props}
    assert props["gantool.image_shape"] == "3,32,32" and props["gantool.source.file_sha256"] == src["file_sha256"]
    # verify from the folder alone: the reference is re-imported from the recorded path
    r = run("verify", "--exported", out)
    assert r.exit_code == 0, r.stderr
    assert "all 3 checked artifact(s) pass" in r.stdout
    grid = tmp_path / "grid.png"
    r = run("sample", "--from", out / "generator.fp32.onnx", "--out", grid, "--n", 16)
    assert r.exit_code == 0, r.stderr
    img = np.asarray(Image.open(grid))
    assert img.shape == (4 * 34 + 2, 4 * 34 + 2, 3) and img.std() > 0  # 4x4 RGB tiles of 32 px, 2 px padding
    # the user's file changes after export: eager reference refuses, in one line
    conv_file.write_text(CONV_G + "\n# edited\n")
    assert_one_line_error(run("verify", "--exported", out), "changed since the export")


def test_parity_fails_on_a_broken_artifact_of_the_users_model(conv_file, tmp_path):
    w = _trained_weights(conv_file, tmp_path)
    out = tmp_path / "exp"
    assert run("export", "--generator", f"{conv_file}:make", "--weights", w, "--format", "onnx",
               "--out", out).exit_code == 0
    # scale the weights inside the exported ONNX, and fix its checksum so only the values differ
    import onnx
    from onnx import numpy_helper

    from gantool.checkpoint import sha256_file

    path = out / "generator.fp32.onnx"
    m = onnx.load(str(path))
    for t in m.graph.initializer:
        if len(t.dims) == 4:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1.05, t.name))
            break
    onnx.save(m, str(path))
    doc = json.loads((out / "manifest.json").read_text())
    doc["artifacts"][0]["sha256"] = sha256_file(path)
    (out / "manifest.json").write_text(json.dumps(doc))
    r = run("verify", "--exported", out)
    assert r.exit_code != 0 and "FAIL (tolerance)" in r.stdout


def test_module_generator_on_sys_path_with_declared_latent(tmp_path, monkeypatch):
    (tmp_path / "my_mlp_gen.py").write_text(MLP_G)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_mlp_gen", raising=False)
    out = tmp_path / "exp"
    r = run("export", "--generator", "my_mlp_gen:make", "--latent-dim", 100, "--format", "onnx", "--out", out)
    assert r.exit_code == 0, r.stderr
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["img_shape"] == [1, 28, 28] and doc["source"]["img_shape_from"] == "output"
    assert run("verify", "--exported", out).exit_code == 0


@pytest.mark.parametrize("args,needle", [
    (["--generator", "nosuchmodule_xyz:make"], "cannot import module 'nosuchmodule_xyz'"),
    (["--generator", "missing_file.py:make"], "generator file not found"),
    (["--generator", "{conv}:nope"], "has no 'nope'"),
    (["--generator", "{conv}:ConvG.latent_dim"], "has no"),
    (["--generator", "{conv}:broken"], "returned a int, not a torch.nn.Module"),
    (["--generator", "{conv}:make", "--img-shape", "1,28,28"], "contradicts the module's img_shape"),
    (["--generator", "{conv}:make", "--value-range", "0,1"], "outside the value range [0, 1]"),
    (["--generator", "{conv}:make", "--weights", "{bad_weights}"], "do not fit"),
    (["--generator", "{conv}:make", "--checkpoint", "{conv}"], "not both"),
    (["--weights", "{bad_weights}", "--checkpoint", "{conv}"], "give --generator"),
    (["--generator", "nocolon"], "MODULE:CALLABLE"),
])
def test_bad_user_generators_get_one_line_and_write_nothing(conv_file, tmp_path, args, needle):
    bad = tmp_path / "bad.pt"
    torch.save({"net.0.weight": torch.zeros(3)}, bad)
    args = [a.format(conv=conv_file, bad_weights=bad) for a in args]
    out = tmp_path / "exp"
    assert_one_line_error(run("export", *args, "--format", "onnx", "--out", out), needle)
    assert not out.exists() or not any(out.iterdir())


def test_sample_refuses_generator_options_without_a_generator(conv_file, tmp_path, exported_dir):
    out = tmp_path / "grid.png"
    assert_one_line_error(run("sample", "--from", exported_dir / "generator.fp32.onnx", "--weights", conv_file,
                              "--out", out), "give --generator")
    assert not out.exists()


def test_forward_that_raises_is_named(tmp_path):
    p = tmp_path / "g.py"
    p.write_text("from torch import nn\nclass G(nn.Module):\n    latent_dim = 8\n"
                 "    def forward(self, z):\n        raise ValueError('boom')\ndef make():\n    return G()\n")
    assert_one_line_error(run("export", "--generator", f"{p}:make", "--out", tmp_path / "e"),
                          "forward on a seeded z of shape (4, 8) raised ValueError: boom")


def test_bench_web_and_triton_take_the_users_generator(conv_file, tmp_path):
    """From the exported folder alone, bench re-imports the user's G for eager and the parity gate; web and
    triton export follow its contract (latent 64, 3x32x32)."""
    w = _trained_weights(conv_file, tmp_path)
    out = tmp_path / "exp"
    assert run("export", "--generator", f"{conv_file}:make", "--weights", w, "--format", "onnx",
               "--out", out).exit_code == 0
    js = tmp_path / "bench.json"
    r = run("bench", "--exported", out, "--backends", "eager,ort", "--precisions", "fp32", "--batch-sizes", "2,16",
            "--warmup", "0", "--min-time", "0", "--repeats", "3", "--device", "cpu", "--json", js)
    assert r.exit_code == 0, r.stderr
    rep = json.loads(js.read_text())
    assert rep["model"]["source"]["kind"] == "user" and rep["model"]["img_shape"] == [3, 32, 32]
    assert rep["model"]["latent_dim"] == 64 and rep["model"]["checkpoint"] is None
    rows = {(x["backend"], x["batch"]): x for x in rep["results"]}
    assert set(rows) == {("eager", 2), ("eager", 16), ("ort", 2), ("ort", 16)}
    for x in rows.values():
        assert x["status"] == "ok" and x["samples_per_s"] > 0 and x["parity"]["passed"], x
    assert rows[("ort", 16)]["parity"]["max_abs_err"] < 1e-4  # checked against the user's eager G, not skipped
    # the same with the generator named again on the command line: the same identity, so no complaint
    r = run("bench", "--exported", out, "--generator", f"{conv_file}:make", "--weights", w, "--backends", "ort",
            "--precisions", "fp32", "--batch-sizes", "4", "--warmup", "0", "--min-time", "0", "--repeats", "3",
            "--device", "cpu")
    assert r.exit_code == 0, r.stderr

    site = tmp_path / "site"
    r = run("export", "--format", "web", "--exported", out, "--out", site)
    assert r.exit_code == 0, r.stderr
    meta = json.loads((site / "model.json").read_text())
    assert meta["latent_dim"] == 64 and meta["img_shape"] == [3, 32, 32] and meta["output_shape"] == ["N", 3, 32, 32]

    repo = tmp_path / "repo"
    r = run("export", "--generator", f"{conv_file}:make", "--weights", w, "--format", "triton", "--out", repo)
    assert r.exit_code == 0, r.stderr
    from triton_helpers import check_model, read_config

    for name in ("generator_onnx", "generator_torchscript"):
        cfg = read_config(repo / name / "config.pbtxt")
        (z,), (images,) = cfg.input, cfg.output
        assert list(z.dims) == [64] and list(images.dims) == [3, 32, 32]
        assert check_model(repo / name) == []  # the config matches the artifact's own signature
    # the user's weights change after export: bench's reference refuses in one line
    w.write_bytes(w.read_bytes() + b"\0")
    assert_one_line_error(run("bench", "--exported", out, "--backends", "ort", "--batch-sizes", "4",
                              "--device", "cpu"), "changed since the export")


def _own_samples(conv_file: Path, w: Path, n: int, seed: int) -> np.ndarray:
    """Real images for the test: the user's own G on other z, as uint8 pixels (N, H, W, C)."""
    from gantool.noise import latent
    from gantool.source import UserSource

    g = UserSource(f"{conv_file}:make", w).load().module
    with torch.no_grad():
        x = g(latent(n, seed, 64))
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_eval_and_distribution_parity_of_a_3x32x32_generator(conv_file, tmp_path):
    """Not 1x28x28: eval says the MNIST metrics do not apply and scores in the random-conv space against
    --real; verify --distribution works without real data, and fails on a broken artifact."""
    w = _trained_weights(conv_file, tmp_path)
    gen = ["--generator", f"{conv_file}:make", "--weights", w]
    assert_one_line_error(run("eval", *gen, "--n", 200), "makes 3x32x32 images", "do not apply", "--real")
    same = tmp_path / "same.npy"
    np.save(same, _own_samples(conv_file, w, 1000, seed=7))
    js = tmp_path / "eval.json"
    r = run("eval", *gen, "--real", same, "--n", 1000, "--json", js)
    assert r.exit_code == 0, r.stderr
    assert "do not apply" in r.stdout and "random-conv features (224-d, untrained)" in r.stdout
    s = json.loads(js.read_text())
    sp = s["feature_spaces"]["random-conv"]
    assert s["img_shape"] == [3, 32, 32] and "recognisability" not in s
    # scored against its own distribution, the generator sits at the sampling floor...
    assert sp["fid_over_floor"] < 2.0 and sp["recall"] > 0.5 and s["targets_met"]["fid_over_floor"]
    noise = tmp_path / "noise.npy"
    np.save(noise, np.random.default_rng(0).integers(0, 256, (1000, 3, 32, 32), dtype=np.uint8))
    r = run("eval", *gen, "--real", noise, "--n", 1000, "--json", js)
    assert r.exit_code == 0, r.stderr
    far = json.loads(js.read_text())["feature_spaces"]["random-conv"]
    # ...and against noise it is far from it: the space tells the two apart
    assert far["fid_over_floor"] > 10 * max(sp["fid_over_floor"], 1.0) and not json.loads(js.read_text())["targets_met"]["fid_over_floor"]
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((200, 1, 28, 28), dtype=np.uint8))
    assert_one_line_error(run("eval", *gen, "--real", bad, "--n", 100), "the generator makes 3x32x32")

    out = tmp_path / "exp"
    assert run("export", *gen, "--format", "onnx", "--dtype", "fp32,int8", "--out", out).exit_code == 0
    r = run("verify", "--exported", out, "--distribution", 500)
    assert r.exit_code == 0, r.stdout + r.stderr
    assert r.stdout.count("random-conv FID to eager's samples") == 2 and "FAILED" not in r.stdout
    # swap two output channels of the last conv: every check must see it
    import onnx
    from onnx import numpy_helper

    from gantool.checkpoint import sha256_file

    path = out / "generator.fp32.onnx"
    m = onnx.load(str(path))
    last = [n for n in m.graph.node if n.op_type == "ConvTranspose"][-1]
    init = next(t for t in m.graph.initializer if t.name == last.input[1])
    arr = numpy_helper.to_array(init).copy()
    arr[:, [0, 1]] = arr[:, [1, 0]]  # ConvTranspose weight (C_in, C_out, kH, kW): red <-> green
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(m, str(path))
    doc = json.loads((out / "manifest.json").read_text())
    for e in doc["artifacts"]:
        if e["file"] == path.name:
            e["sha256"] = sha256_file(path)
    (out / "manifest.json").write_text(json.dumps(doc))
    from gantool.verify.artifacts import verify_distribution

    (dist,) = [d for d in verify_distribution(out, _source_of(out), n=500) if d["candidate"] == path.name]
    assert not dist["passed"], dist


def _source_of(out: Path):
    from gantool.source import source_of_manifest

    return source_of_manifest(json.loads((out / "manifest.json").read_text()))
