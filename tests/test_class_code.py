"""G's class read off z (gantool.model.ClassCode, the dcgan recipe's AC-GAN conditioning): uniform classes,
the same class in every precision, and artifacts that keep it (a wrong class table fails verify)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from gantool.checkpoint import save_untrained_checkpoint, sha256_file
from gantool.config import ModelConfig
from gantool.errors import ConfigError
from gantool.model import ClassCode, build_generator, g_arch_problem
from gantool.train.log import loss_labels
from gantool.train.options import resolve_configs

pytestmark = pytest.mark.usefixtures("one_thread")
AC = dict(g_arch="dcgan", g_channels=(16, 8), g_classes=10, d_arch="conv", d_classes=10)


def test_classes_are_uniform_and_a_function_of_z_signs():
    code = ClassCode(10, 100)
    z = torch.randn(100_000, 100, generator=torch.Generator().manual_seed(0))
    share = torch.bincount(code.labels(z), minlength=10).float() / len(z)
    # each class holds 102 or 103 of the 1,024 codes (p within 0.06 % of 0.1); 0.006 is > 6 sigma at n = 1e5
    assert (share - 0.1).abs().max() < 0.006, share
    flipped = z.clone()
    flipped[:, 10:] *= -3.0  # coordinates past the code do not change the class
    assert torch.equal(code.labels(flipped), code.labels(z))
    one = z.clone()
    one[:, 9] *= -1  # the lowest-weight bit: codes 2k and 2k+1 can fall in different classes
    assert not torch.equal(code.labels(one), code.labels(z))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_every_rounding_of_z_keeps_its_class(dtype):
    # A class from float arithmetic on z (e.g. floor(10 * Phi(z0))) flips for ~0.3 % of z in bf16;
    # a sign never does, so a half-precision artifact draws the digit eager draws for the same z.
    code = ClassCode(10, 100)
    z = torch.randn(50_000, 100, generator=torch.Generator().manual_seed(1))
    assert torch.equal(code.labels(z.to(dtype)), code.labels(z))
    g = build_generator(ModelConfig(**AC)).eval()
    assert g(z[:4]).shape == (4, 1, 28, 28)
    assert torch.equal(g.code(z[:8].to(dtype)).float(), g.code(z[:8]))


def test_config_checks_name_what_is_wrong():
    assert "dcgan" in g_arch_problem(ModelConfig(g_classes=10))
    assert ">= 2" in g_arch_problem(ModelConfig(g_arch="dcgan", g_classes=1))
    with pytest.raises(ConfigError, match="d_classes must equal"):
        resolve_configs("dcgan", model={"g_classes": 10, "d_classes": 5}, device="cpu")
    _, cfg = resolve_configs("dcgan", model={"g_classes": 10}, device="cpu")
    assert "z's class" in loss_labels(cfg, g_classes=10)[1]
    assert "entropy" in loss_labels(cfg, g_classes=0)[1]


def test_trainer_asks_g_for_the_class_of_its_z():
    from gantool.data import Dataset
    from gantool.train.trainer import Trainer

    model_cfg, cfg = resolve_configs("dcgan", model={**AC, "d_channels": (8, 8)}, device="cpu", batch_size=20)
    data = Dataset(name="fake", images=torch.rand(40, 1, 28, 28) * 2 - 1, labels=torch.arange(40) % 10, provenance={})
    t = Trainer(model_cfg, cfg, data, torch.device("cpu"))
    z = torch.randn(20, 100)
    seen = {}
    real_ce = torch.nn.functional.cross_entropy

    def spy(logits, target, *a, **k):
        seen.setdefault("targets", []).append(target)
        return real_ce(logits, target, *a, **k)

    torch.nn.functional.cross_entropy, saved = spy, real_ce
    try:
        t.train_step(data.images[:20], data.labels[:20], z=z)
    finally:
        torch.nn.functional.cross_entropy = saved
    # D's head learns the real labels; G's term asks for z's classes
    assert torch.equal(seen["targets"][0], data.labels[:20])
    assert torch.equal(seen["targets"][1], t.G.code.labels(z))


@pytest.fixture(scope="module")
def ac_checkpoint(tmp_path_factory):
    """An untrained conditional DCGAN whose class maps are made loud, so a wrong class shows in pixels."""
    from gantool.checkpoint import load_checkpoint, save_checkpoint

    path = save_untrained_checkpoint(tmp_path_factory.mktemp("ac") / "checkpoint.pt", 3, **AC)
    ck = load_checkpoint(path)
    w = ck["generator"]["net.0.weight"]  # (110, 16, 7, 7): rows 100.. take the one-hot class
    w[100:] = torch.randn(10, *w.shape[1:], generator=torch.Generator().manual_seed(0))
    save_checkpoint(path, ck)
    return path


def cli(*args):
    from typer.testing import CliRunner

    from gantool.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_artifacts_keep_the_class_and_a_wrong_class_table_fails_verify(ac_checkpoint, tmp_path):
    out = tmp_path / "exp"
    r = cli("export", "--checkpoint", ac_checkpoint, "--format", "onnx,torchscript", "--dtype", "fp32,fp16,int8",
            "--out", out)
    assert r.exit_code == 0, r.stdout + r.stderr
    doc = json.loads((out / "manifest.json").read_text())
    assert {e["dtype"] for e in doc["artifacts"]} >= {"fp32", "fp16", "int8"}
    # export verified each file against eager on the same z (int8 included: the quantizer leaves the
    # integer class code alone), and recorded it
    assert all(e["parity"]["passed"] for e in doc["artifacts"]), [e["parity"] for e in doc["artifacts"]]
    # the same file with its class rows of the first filter rolled by one class draws another digit for every z
    bad = tmp_path / "bad"
    bad.mkdir()
    m = onnx.load(str(out / "generator.fp32.onnx"))
    w = next(t for t in m.graph.initializer if numpy_helper.to_array(t).shape[:2] == (110, 16))
    a = numpy_helper.to_array(w).copy()
    a[100:] = np.roll(a[100:], 1, axis=0)
    w.CopyFrom(numpy_helper.from_array(a, w.name))
    onnx.save_model(m, str(bad / "generator.fp32.onnx"))
    entry = next(e for e in doc["artifacts"] if e["file"] == "generator.fp32.onnx")
    entry["sha256"] = sha256_file(bad / "generator.fp32.onnx")
    (bad / "manifest.json").write_text(json.dumps({**doc, "artifacts": [entry]}))
    r = cli("verify", "--exported", bad, "--checkpoint", ac_checkpoint)
    assert r.exit_code == 1 and "generator.fp32.onnx" in r.stderr + r.stdout


def test_aoti_keeps_the_class(tmp_path):
    """AOTInductor compiled `2 ** torch.arange(10)` to garbage (every class wrong, one-hot all zero): the
    code's powers of two are a literal; the package must name the same classes as eager."""
    g = build_generator(ModelConfig(**AC)).eval()
    z = torch.randn(33, 100, generator=torch.Generator().manual_seed(2))
    program = torch.export.export(_Code(g), (z[:2],), dynamic_shapes={"z": {0: torch.export.Dim("batch", min=1)}})
    path = torch._inductor.aoti_compile_and_package(program, package_path=str(tmp_path / "code.pt2"))
    package = torch._inductor.aoti_load_package(path)
    assert torch.equal(package(z).float(), g.code(z))


class _Code(torch.nn.Module):
    """G's one-hot class as a module's whole output, so a wrong class cannot hide in small conv weights."""

    def __init__(self, g):
        super().__init__()
        self.g = g

    def forward(self, z):
        return self.g.code(z)


@pytest.mark.parametrize("rewire", [True, False])
def test_int8_reads_the_class_off_float_z(ac_checkpoint, tmp_path, monkeypatch, rewire):
    """The QDQ quantizer hands z rounded to its int8 grid to every consumer: a coordinate within half a
    step of 0 then reads >= 0 and the class flips (a trained G: p99.9 error 1.95). keep_float_inputs
    gives the comparisons z itself; without it (rewire=False) z's just below 0 draw another digit."""
    import onnxruntime as ort

    from gantool.checkpoint import load_checkpoint, load_generator, save_checkpoint
    from gantool.export import export_artifacts
    from gantool.export import quantize

    if not rewire:
        monkeypatch.setattr(quantize, "keep_float_inputs", lambda path: 0)
    ck = load_checkpoint(ac_checkpoint)
    for name in ("net.3.weight", "net.6.weight"):  # outputs of order 1, as a trained G's: a class shows
        ck["generator"][name] = ck["generator"][name] * 30
    loud = save_checkpoint(tmp_path / "loud.pt", ck)
    out = tmp_path / "q"
    export_artifacts(loud, ["onnx"], out, dtypes=["int8"])
    g, _, _ = load_generator(loud)
    sess = ort.InferenceSession(str(out / "generator.int8.onnx"), providers=["CPUExecutionProvider"])
    z = torch.randn(64, 100, generator=torch.Generator().manual_seed(4))
    near = z.clone()
    near[:, :10] = -0.004  # class 0 in float; 0 on the int8 grid, i.e. all bits set: class 9
    err = lambda x: float((torch.from_numpy(sess.run(None, {"z": x.numpy()})[0]) - g(x)).abs().mean())  # noqa: E731
    with torch.no_grad():
        plain, flipped = err(z), err(near)
    assert (flipped < 2 * plain + 1e-3) == rewire, (plain, flipped)
