"""gantool.signature: one description of what a generator takes and gives, read back from every artifact."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from gantool.errors import ArtifactError
from gantool.signature import Signature
from tests.conftest import assert_one_line_error, gantool_cli

run = gantool_cli

# The shape of most public GAN code: forward() calls its input `noise`, not `z`.
NOISE_G = textwrap.dedent('''
    import torch
    from torch import nn

    class NoiseG(nn.Module):
        latent_dim = 32

        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2 * 12 * 10), nn.Tanh())

        def forward(self, noise):
            return self.net(noise).reshape(-1, 2, 12, 10)

    def make():
        return NoiseG()
''')


def test_signature_round_trips_through_metadata_and_dict():
    sig = Signature.latent_to_image((100, 1, 1), (3, 24, 20), (0.0, 1.0), input_name="noise", output_name="img")
    assert sig.latent_dim == 100 and sig.latent_shape == (100, 1, 1) and sig.input_name == "noise"
    assert Signature.from_metadata(sig.metadata(), "x") == sig
    assert Signature.from_dict(json.loads(json.dumps(sig.to_dict()))) == sig
    assert sig.io("fp16") == ([{"name": "noise", "shape": ["N", 100, 1, 1], "dtype": "fp16"}],
                              [{"name": "img", "shape": ["N", 3, 24, 20], "dtype": "fp16"}])
    # the same seed draws the same numbers whatever the latent's shape
    flat = Signature.latent_to_image(100, (3, 24, 20))
    assert torch.equal(sig.latents(5, 7).reshape(5, -1), flat.latents(5, 7))


def test_older_artifacts_metadata_still_reads():
    old = {"gantool.latent_dim": "100", "gantool.image_shape": "1,28,28", "gantool.value_range": "-1.0,1.0",
           "gantool.input": "z", "gantool.output": "images"}
    sig = Signature.from_metadata(old, "old.onnx")
    assert (sig.input_name, sig.latent_dim, sig.img_shape) == ("z", 100, (1, 28, 28))


@pytest.mark.parametrize("missing", ["gantool.image_shape", "gantool.latent_dim"])
def test_metadata_without_the_image_shape_is_refused_not_guessed(missing):
    meta = {"gantool.latent_dim": "100", "gantool.image_shape": "1,28,28"}
    del meta[missing]
    with pytest.raises(ArtifactError, match=missing.removeprefix("gantool.")):
        Signature.from_metadata(meta, "g.onnx")


def test_an_onnx_file_without_gantool_metadata_is_refused_in_one_line(tmp_path):
    """No silent 1x28x28: a foreign ONNX file (no gantool metadata) is refused by every reader."""
    from torch import nn

    g = nn.Sequential(nn.Linear(8, 3 * 4 * 4), nn.Tanh(), nn.Unflatten(1, (3, 4, 4))).eval()
    path = tmp_path / "foreign.onnx"
    torch.onnx.export(g, (torch.randn(2, 8),), dynamo=True, verbose=False, input_names=["z"],
                      dynamic_shapes=({0: torch.export.Dim("N", min=1)},)).save(str(path), external_data=False)
    r = run("sample", "--from", path, "--out", tmp_path / "grid.png", "--n", 4)
    assert_one_line_error(r, "foreign.onnx does not say its image_shape")
    assert not (tmp_path / "grid.png").exists()


def test_a_noise_generator_goes_through_export_verify_bench_and_sample(tmp_path):
    """forward(self, noise): every format exports with an input named `noise`, verify, bench and sample run."""
    import onnx

    f = tmp_path / "noise_g.py"
    f.write_text(NOISE_G)
    out = tmp_path / "exp"
    r = run("export", "--generator", f"{f}:make", "--format", "all", "--dtype", "fp32,int8", "--out", out)
    assert r.exit_code == 0, r.stderr
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["signature"]["inputs"][0]["name"] == "noise"
    files = sorted(e["file"] for e in doc["artifacts"])
    assert files == ["generator.fp32.cpu.pt2", "generator.fp32.onnx", "generator.fp32.ts", "generator.int8.onnx"]
    for e in doc["artifacts"]:
        assert e["inputs"][0]["name"] == "noise" and e["inputs"][0]["shape"] == ["N", 32], e
        assert e["outputs"][0]["shape"] == ["N", 2, 12, 10] and e["parity"]["passed"], e
    for name in ("generator.fp32.onnx", "generator.int8.onnx"):
        assert [i.name for i in onnx.load(str(out / name)).graph.input] == ["noise"]
    r = run("verify", "--exported", out)
    assert r.exit_code == 0 and "all 4 checked artifact(s) pass" in r.stdout, r.stdout + r.stderr
    js = tmp_path / "bench.json"
    r = run("bench", "--exported", out, "--backends", "eager,ort,torchscript,aoti", "--precisions", "fp32",
            "--batch-sizes", "4", "--warmup", "0", "--min-time", "0", "--repeats", "3", "--device", "cpu", "--json", js)
    assert r.exit_code == 0, r.stderr
    rows = json.loads(js.read_text())["results"]
    assert {x["backend"] for x in rows} == {"eager", "ort", "torchscript", "aoti"}
    assert all(x["status"] == "ok" and x["parity"]["passed"] for x in rows), rows
    grid = tmp_path / "grid.png"
    r = run("sample", "--from", out / "generator.fp32.onnx", "--out", grid, "--n", 4)
    assert r.exit_code == 0, r.stderr
    img = np.asarray(Image.open(grid))
    assert img.shape[:2] == (2 * 14 + 2, 2 * 12 + 2) and img.std() > 0  # 2x2 tiles of 12x10 px, 2 px padding


# pytorch/examples' DCGAN generator as published (ngf shrunk to keep the test fast): z (N, nz, 1, 1), forward(input)
DCGAN_G = textwrap.dedent('''
    import torch.nn as nn

    class Generator(nn.Module):
        def __init__(self, ngpu=1, nz=100, ngf=8, nc=3):
            super(Generator, self).__init__()
            self.ngpu = ngpu
            self.main = nn.Sequential(
                nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
                nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())

        def forward(self, input):
            if input.is_cuda and self.ngpu > 1:
                output = nn.parallel.data_parallel(self.main, input, range(self.ngpu))
            else:
                output = self.main(input)
            return output

    def make():
        return Generator()

    class Declared(Generator):
        latent_shape = (100, 1, 1)

    def declared():
        return Declared()
''')


@pytest.fixture()
def dcgan_file(tmp_path):
    f = tmp_path / "dcgan.py"
    f.write_text(DCGAN_G)
    return f


def test_a_4d_latent_is_found_by_the_probe_and_goes_through_every_stage(dcgan_file, tmp_path):
    """--latent-dim 100 alone: the probe tries (N, 100), the ConvTranspose2d refuses it, (N, 100, 1, 1) works and
    is recorded; export (ONNX and TorchScript, fp16 and int8), verify, bench, sample, the Triton repository and the
    web site."""
    import onnx

    out = tmp_path / "exp"
    # every format but aoti (its 4-D dynamic batch is the same torch.export call the noise test above compiles)
    r = run("export", "--generator", f"{dcgan_file}:make", "--latent-dim", "100", "--format", "onnx,torchscript",
            "--dtype", "fp32,fp16,int8", "--out", out)
    assert r.exit_code == 0, r.stderr
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["signature"]["inputs"][0] == {"name": "input", "role": "latent", "shape": [100, 1, 1], "dtype": "float32"}
    assert doc["source"]["latent_shape_from"] == "probe" and doc["img_shape"] == [3, 64, 64]
    assert all(e["parity"]["passed"] for e in doc["artifacts"]), [(e["file"], e["parity"]) for e in doc["artifacts"]]
    dims = [d.dim_value or d.dim_param for d in onnx.load(str(out / "generator.fp32.onnx")).graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [100, 1, 1] and isinstance(dims[0], str)
    r = run("verify", "--exported", out)
    assert r.exit_code == 0, r.stdout + r.stderr
    js = tmp_path / "bench.json"
    r = run("bench", "--exported", out, "--backends", "eager,ort,torchscript", "--precisions", "fp32",
            "--batch-sizes", "2,8", "--warmup", "0", "--min-time", "0", "--repeats", "3", "--device", "cpu", "--json", js)
    assert r.exit_code == 0, r.stderr
    rows = json.loads(js.read_text())["results"]
    assert len(rows) == 6 and all(x["status"] == "ok" and x["parity"]["passed"] for x in rows), rows
    grid = tmp_path / "grid.png"
    assert run("sample", "--from", out / "generator.fp32.onnx", "--out", grid, "--n", 4).exit_code == 0
    assert np.asarray(Image.open(grid)).shape == (2 * 66 + 2, 2 * 66 + 2, 3)
    # the same seed gives the same images from a (N, 100) draw reshaped: sample matches eager on latent(4, 0)
    from gantool.noise import latent
    from gantool.runners import load_runner

    ort, eager = load_runner(out / "generator.fp32.onnx"), load_runner(out / "generator.fp32.ts")
    z = latent(4, 0, 100)
    assert torch.allclose(ort(z), eager(z), atol=1e-4) and torch.equal(ort(z), ort(z.reshape(4, 100, 1, 1)))

    repo = tmp_path / "repo"
    r = run("export", "--generator", f"{dcgan_file}:make", "--latent-dim", "100", "--format", "triton", "--out", repo)
    assert r.exit_code == 0, r.stderr
    cfg = (repo / "generator_onnx" / "config.pbtxt").read_text()
    assert 'name: "input"' in cfg and "dims: [ 100, 1, 1 ]" in cfg and "dims: [ 3, 64, 64 ]" in cfg
    site = tmp_path / "site"
    assert run("export", "--format", "web", "--exported", out, "--out", site).exit_code == 0
    meta = json.loads((site / "model.json").read_text())
    assert meta["input"] == "input" and meta["input_shape"] == ["N", 100, 1, 1] and meta["img_shape"] == [3, 64, 64]


def test_a_declared_latent_shape_needs_no_probe(dcgan_file, tmp_path):
    out = tmp_path / "exp"
    r = run("export", "--generator", f"{dcgan_file}:declared", "--format", "onnx", "--out", out)
    assert r.exit_code == 0, r.stderr
    src = json.loads((out / "manifest.json").read_text())["source"]
    assert src["latent_shape"] == [100, 1, 1] and src["latent_shape_from"] == "declared" and src["latent_dim"] == 100
    out2 = tmp_path / "exp2"
    r = run("export", "--generator", f"{dcgan_file}:make", "--latent-shape", "100,1,1", "--format", "onnx", "--out", out2)
    assert r.exit_code == 0, r.stderr


@pytest.mark.parametrize("args, needle", [
    (["{f}:declared", "--latent-shape", "50,2,1"], "--latent-shape 50,2,1 contradicts the module's latent_shape"),
    (["{f}:make", "--latent-shape", "100,1,1", "--latent-dim", "64"], "holds 100 numbers, but --latent-dim is 64"),
    (["{f}:make", "--latent-shape", "0,1"], "--latent-shape: 0 must be > 0"),
    (["{f}:make", "--latent-dim", "64"], "declare the latent's shape with --latent-shape"),
])
def test_bad_latent_shapes_get_one_line_and_write_nothing(dcgan_file, tmp_path, args, needle):
    out = tmp_path / "exp"
    r = run("export", "--generator", *[a.format(f=dcgan_file) for a in args], "--format", "onnx", "--out", out)
    assert_one_line_error(r, needle)
    assert not out.exists() or not any(out.iterdir())
