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
