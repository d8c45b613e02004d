"""Class-conditional generators (forward(noise, labels)) as people write them, through every stage."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import assert_one_line_error, gantool_cli, need_extra

run = gantool_cli

# A cGAN generator in the usual shape: the label's embedding concatenated to the noise, an MLP body.
CGAN_G = textwrap.dedent('''
    import torch
    from torch import nn

    class CondG(nn.Module):
        latent_dim, n_classes = 16, 10

        def __init__(self):
            super().__init__()
            self.label_emb = nn.Embedding(10, 10)
            self.net = nn.Sequential(nn.Linear(26, 64), nn.LeakyReLU(0.2), nn.Linear(64, 784), nn.Tanh())

        def forward(self, noise, labels):
            x = torch.cat((self.label_emb(labels), noise), -1)
            return self.net(x).view(x.size(0), 1, 28, 28)

    def make():
        return CondG()

    class Undeclared(CondG):
        n_classes = None

    def undeclared():
        return Undeclared()

    class ThreeInputs(CondG):
        def forward(self, noise, labels, style):
            return super().forward(noise, labels)

    def three():
        return ThreeInputs()
''')

# A conditional conv G: Upsample + Conv + BatchNorm, RGB and not square.
CONV_CG = textwrap.dedent('''
    import torch
    from torch import nn

    class ConvCG(nn.Module):
        def __init__(self, nz=12, classes=4):
            super().__init__()
            self.emb = nn.Embedding(classes, nz)
            self.fc = nn.Linear(nz, 16 * 3 * 4)
            self.body = nn.Sequential(
                nn.Upsample(scale_factor=2), nn.Conv2d(16, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                nn.Upsample(scale_factor=2), nn.Conv2d(8, 3, 3, padding=1), nn.Tanh())

        def forward(self, z, y):
            h = self.fc(z * self.emb(y)).view(-1, 16, 3, 4)
            return self.body(h)  # (N, 3, 12, 16)

    def make():
        return ConvCG()
''')


@pytest.fixture()
def cgan_file(tmp_path):
    f = tmp_path / "cgan.py"
    f.write_text(CGAN_G)
    return f


def test_a_cgan_goes_through_export_verify_bench_and_sample(cgan_file, tmp_path):
    import onnx

    out = tmp_path / "exp"
    r = run("export", "--generator", f"{cgan_file}:make", "--format", "all", "--dtype", "fp32,fp16,int8", "--out", out)
    assert r.exit_code == 0, r.stderr
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["signature"]["inputs"][1] == {"name": "labels", "role": "label", "shape": [], "dtype": "int64",
                                             "n_classes": 10}
    assert all(e["parity"]["passed"] for e in doc["artifacts"]), [(e["file"], e["parity"]) for e in doc["artifacts"]]
    for e in doc["artifacts"]:
        assert [i["name"] for i in e["inputs"]] == ["noise", "labels"] and e["inputs"][1]["dtype"] == "int64"
    for name in ("generator.fp32.onnx", "generator.fp16.onnx", "generator.int8.onnx"):
        graph = onnx.load(str(out / name)).graph
        assert [i.name for i in graph.input] == ["noise", "labels"]
        assert graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.INT64  # labels stay int64
    r = run("verify", "--exported", out)
    assert r.exit_code == 0, r.stdout + r.stderr
    js = tmp_path / "bench.json"
    r = run("bench", "--exported", out, "--backends", "eager,ort,torchscript", "--precisions", "fp32,int8",
            "--batch-sizes", "2,16", "--warmup", "0", "--min-time", "0", "--repeats", "3", "--device", "cpu", "--json", js)
    assert r.exit_code == 0, r.stderr
    rows = [x for x in json.loads(js.read_text())["results"] if x["status"] != "skipped"]
    assert len(rows) == 8 and all(x["status"] == "ok" and x["parity"]["passed"] for x in rows), rows
    assert json.loads(js.read_text())["model"]["flops_per_sample"] > 0

    # the class input means something: the same z with another label draws another image, in every runner
    from gantool.noise import latent
    from gantool.runners import load_runner

    z = latent(10, 0, 16)
    ort = load_runner(out / "generator.fp32.onnx")
    same, other = ort(z, torch.full((10,), 3)), ort(z, torch.full((10,), 4))
    assert not torch.allclose(same, other, atol=1e-3)
    assert torch.allclose(load_runner(out / "generator.fp32.ts")(z, torch.full((10,), 3)), same, atol=1e-4)


def test_a_conditional_conv_g_with_rgb_non_square_output(tmp_path):
    f = tmp_path / "conv_cg.py"
    f.write_text(CONV_CG)
    out = tmp_path / "exp"
    r = run("export", "--generator", f"{f}:make", "--latent-dim", "12", "--classes", "4", "--format", "onnx,torchscript",
            "--dtype", "fp32,int8", "--out", out)
    assert r.exit_code == 0, r.stderr
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["img_shape"] == [3, 12, 16] and doc["signature"]["inputs"][1]["name"] == "y"
    assert run("verify", "--exported", out).exit_code == 0
    grid = tmp_path / "grid.png"
    r = run("sample", "--from", out / "generator.fp32.onnx", "--out", grid, "--n", 8)
    assert r.exit_code == 0, r.stderr
    assert np.asarray(Image.open(grid)).std() > 0


@pytest.mark.parametrize("args, needle", [
    (["{f}:undeclared"], "takes a second input 'labels'; if it is a class label, set n_classes"),
    (["{f}:three"], "takes 3 inputs"),
    (["{f}:make", "--classes", "7"], "--classes 7 contradicts the module's n_classes attribute 10"),
    (["{f}:make", "--classes", "0"], "--classes must be >= 1"),
])
def test_bad_conditional_generators_get_one_line(cgan_file, tmp_path, args, needle):
    out = tmp_path / "exp"
    r = run("export", "--generator", *[a.format(f=cgan_file) for a in args], "--format", "onnx", "--out", out)
    assert_one_line_error(r, needle)
    assert not out.exists() or not any(out.iterdir())


def test_classes_for_a_generator_without_a_label_input_is_refused(tmp_path):
    f = tmp_path / "g.py"
    f.write_text("from torch import nn\nclass G(nn.Module):\n    latent_dim = 8\n    def __init__(self):\n"
                 "        super().__init__()\n        self.l = nn.Linear(8, 16)\n"
                 "    def forward(self, z):\n        return self.l(z).tanh().view(-1, 1, 4, 4)\ndef make():\n    return G()\n")
    assert_one_line_error(run("export", "--generator", f"{f}:make", "--classes", "3", "--out", tmp_path / "e"),
                          "--classes 3", "takes no label input")


def _tile(img: np.ndarray, row: int, col: int, left: int = 56, size: int = 28) -> np.ndarray:
    y, x = 2 + row * (size + 2), left + 2 + col * (size + 2)
    return img[y:y + size, x:x + size]


def test_sample_draws_a_labelled_row_per_class_and_the_class_asked_for(cgan_file, tmp_path):
    """From the artifact alone: the default grid has one row per class (the same z's in every row), `--class 3,5`
    draws rows 3 and 5 of it again pixel for pixel, `--class 7` sevens only; a class out of range is refused."""
    out = tmp_path / "exp"
    assert run("export", "--generator", f"{cgan_file}:make", "--format", "onnx", "--out", out).exit_code == 0
    onnx_file = out / "generator.fp32.onnx"
    every, pair, seven = tmp_path / "every.png", tmp_path / "pair.png", tmp_path / "seven.png"
    r = run("sample", "--from", onnx_file, "--out", every, "--n", 20)
    assert r.exit_code == 0 and "wrote 20 samples" in r.stdout, r.stderr
    a = np.asarray(Image.open(every).convert("L")).astype(int)
    assert a.shape == (2 + 10 * 30, 56 + 2 + 2 * 30)  # 10 rows of 2 tiles, a label margin on the left
    assert (a[:, :56] < 128).any()  # the labels are drawn
    rows = [_tile(a, k, 0) for k in range(10)]
    assert all(np.abs(rows[k] - rows[k + 1]).mean() > 1 for k in range(9))  # each row another class
    assert run("sample", "--from", onnx_file, "--out", pair, "--n", 20, "--class", "3,5").exit_code == 0
    b = np.asarray(Image.open(pair).convert("L")).astype(int)
    assert np.array_equal(_tile(b, 0, 0), rows[3]) and np.array_equal(_tile(b, 1, 1), _tile(a, 5, 1))
    assert run("sample", "--from", onnx_file, "--out", seven, "--n", 4, "--class", "7").exit_code == 0

    from gantool.noise import latent
    from gantool.runners import load_runner

    want = load_runner(onnx_file)(latent(4, 0, 16), torch.full((4,), 7))
    got = np.asarray(Image.open(seven).convert("L")).astype(int)[14:, :]  # below the caption
    first = ((want[0, 0].clamp(-1, 1) + 1) / 2 * 255).round().numpy()
    assert np.abs(got[2:30, 2:30] - first).max() <= 1

    for args, needle in ((["--class", "12"], "--class 12: the generator has 10 classes (0..9)"),
                         (["--class", "-1"], "--class -1"), (["--class", "x"], "--class x")):
        bad = tmp_path / "bad.png"
        assert_one_line_error(run("sample", "--from", onnx_file, "--out", bad, *args), needle)
        assert not bad.exists()


def test_class_for_an_unconditional_generator_is_refused(exported_dir, tmp_path):
    out = tmp_path / "g.png"
    assert_one_line_error(run("sample", "--from", exported_dir / "generator.fp32.onnx", "--out", out, "--class", "3"),
                          "takes no class label")
    assert not out.exists()


def test_a_cgan_serves_on_triton_with_both_inputs(cgan_file, tmp_path):
    """The Triton repository declares both inputs (labels INT64); `gantool serve` binds both, bench drives it,
    a request with labels out of range gets an error and the next good request is served."""
    need_extra("pytriton", "serve extra: pip install 'gantool[serve]'")
    from serve_helpers import ServeProcess
    from triton_helpers import check_model

    out = tmp_path / "exp"
    assert run("export", "--generator", f"{cgan_file}:make", "--format", "onnx", "--out", out).exit_code == 0
    repo = tmp_path / "repo"
    r = run("export", "--generator", f"{cgan_file}:make", "--format", "triton", "--kind", "cpu,python", "--out", repo)
    assert r.exit_code == 0, r.stderr
    cfg = (repo / "generator_onnx" / "config.pbtxt").read_text()
    assert 'name: "labels" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] }' in cfg
    assert check_model(repo / "generator_onnx") == [] and check_model(repo / "generator_python") == []

    import numpy as np
    import tritonclient.grpc as grpcclient

    server = ServeProcess(out)
    try:
        client = grpcclient.InferenceServerClient(url=server.url)
        meta = client.get_model_metadata("generator", as_json=True)
        assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [("noise", "FP32"), ("labels", "INT64")]

        def infer(labels):
            z = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
            a = grpcclient.InferInput("noise", [3, 16], "FP32")
            a.set_data_from_numpy(z)
            b = grpcclient.InferInput("labels", [3, 1], "INT64")
            b.set_data_from_numpy(np.array(labels, np.int64).reshape(3, 1))
            return z, client.infer("generator", [a, b]).as_numpy("images")

        with pytest.raises(Exception, match=r"labels must lie in \[0, 10\)"):
            infer([1, 2, 12])
        z, images = infer([1, 2, 3])  # served after the bad one
        from gantool.runners import load_runner

        want = load_runner(out / "generator.fp32.onnx")(torch.from_numpy(z), torch.tensor([1, 2, 3]))
        assert np.abs(images - want.numpy()).max() < 1e-5

        js = tmp_path / "bench.json"
        r = run("bench", "--exported", out, "--backends", "triton", "--url", server.url, "--triton-model",
                "generator", "--precisions", "fp32", "--batch-sizes", "4", "--warmup", "0", "--min-time", "0",
                "--repeats", "3", "--device", "cpu", "--json", js)
        assert r.exit_code == 0, r.stderr
        row = json.loads(js.read_text())["results"][0]
        assert row["status"] == "ok" and row["parity"]["passed"], row
    finally:
        server.stop()


class _Lookup(torch.nn.Module):
    """A conditional 'generator' that returns a real held-out digit of class (label + shift) % 10."""

    def __init__(self, bank: torch.Tensor, shift: int = 0):
        super().__init__()
        self.bank, self.shift = bank, shift  # (10, m, 1, 28, 28)

    def forward(self, z, labels):
        j = (z[:, 0].abs() * 1000).long() % self.bank.shape[1]
        return self.bank[(labels + self.shift) % 10, j]


def _lookup_runner(shift: int):
    from gantool.data import load_dataset
    from gantool.runners.base import ModuleRunner, RunnerInfo
    from gantool.signature import Signature

    test = load_dataset("mnist-5k", "data", "test")
    m = min(int((test.labels == k).sum()) for k in range(10))
    bank = torch.stack([test.images[test.labels == k][:m] for k in range(10)])
    r = ModuleRunner()
    r.module, r.dtype = _Lookup(bank, shift), torch.float32
    r.info = RunnerInfo("eager", "cpu", "fp32", Signature.latent_to_image(8, (1, 28, 28), label=("labels", 10)),
                        f"lookup+{shift}")
    return r


def test_conditional_accuracy_reads_the_class_asked_for_and_fails_a_permuted_one(quality_reference):
    from gantool.quality.metrics import evaluate_runner

    good = evaluate_runner(_lookup_runner(0), "mnist-5k", n=1000, reference=quality_reference)["conditional_accuracy"]
    assert good["overall"] > 0.9 and len(good["per_class"]) == 10 and good["n"] == 1000
    shifted = evaluate_runner(_lookup_runner(1), "mnist-5k", n=1000, reference=quality_reference)
    assert shifted["conditional_accuracy"]["overall"] < 0.2  # real digits, recognisable, but of another class
    assert shifted["recognisability"] > 0.8

    from gantool.cli.eval_cmd import format_scores

    text = format_scores(shifted)
    assert "conditional acc" in text and "per class" in text


def _doctor(path, edit) -> None:
    """Rewrite the ONNX file at `path` with `edit(graph)` and record its new sha256, as a broken exporter would."""
    import onnx

    from gantool.checkpoint import sha256_file

    model = onnx.load(str(path))
    edit(model.graph)
    onnx.save_model(model, str(path))
    doc = json.loads((path.parent / "manifest.json").read_text())
    for e in doc["artifacts"]:
        if e["file"] == path.name:
            e["sha256"] = sha256_file(path)
    (path.parent / "manifest.json").write_text(json.dumps(doc))


def _scale_embedding(graph) -> None:
    from onnx import numpy_helper

    emb = next(t for t in graph.initializer if tuple(t.dims) == (10, 10))
    emb.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(emb) * 1.5, emb.name))


def _permute_labels(graph) -> None:
    """labels -> (labels + 1) % 10 inside the graph, before anything reads them."""
    from onnx import helper, numpy_helper

    graph.initializer.extend([numpy_helper.from_array(np.array(1, np.int64), "one_"),
                              numpy_helper.from_array(np.array(10, np.int64), "ten_")])
    for node in graph.node:
        node.input[:] = ["labels_shifted_" if i == "labels" else i for i in node.input]
    graph.node.insert(0, helper.make_node("Mod", ["labels_plus_", "ten_"], ["labels_shifted_"]))
    graph.node.insert(0, helper.make_node("Add", ["labels", "one_"], ["labels_plus_"]))


@pytest.mark.parametrize("edit", [_scale_embedding, _permute_labels], ids=["scaled-embedding", "permuted-labels"])
def test_verify_fails_a_broken_conditional_artifact(cgan_file, tmp_path, edit):
    """Parity reads every class: an artifact whose embedding is scaled, or whose graph draws another class than the
    label asks for, fails verify on its values (the untouched file passes)."""
    from gantool.verify.artifacts import verify_exported

    out = tmp_path / "exp"
    assert run("export", "--generator", f"{cgan_file}:make", "--format", "onnx", "--out", out).exit_code == 0
    assert verify_exported(out).passed
    _doctor(out / "generator.fp32.onnx", edit)
    report = verify_exported(out)
    assert not report.passed
    assert {f.kind for r in report.results for f in r.failures} == {"tolerance"}, [str(f) for r in report.results
                                                                                    for f in r.failures]
