"""gantool export / verify / sample through the CLI: the happy path and every bad input (one stderr line)."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from conftest import assert_one_line_error, gantool_cli
PNG = b"\x89PNG\r\n\x1a\n"


run = gantool_cli



@pytest.fixture(scope="module")
def cli_exported(checkpoint_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "exported"
    r = run("export", "--checkpoint", checkpoint_path, "--format", "onnx,torchscript", "--out", out)
    assert r.exit_code == 0, r.stdout + r.stderr
    assert r.stdout.count("TorchScript is deprecated") == 1 and "pass" in r.stdout
    return out


def test_export_then_verify_writes_json_and_image(cli_exported, tmp_path):
    doc = json.loads((cli_exported / "manifest.json").read_text())
    assert {e["file"] for e in doc["artifacts"]} == {"generator.fp32.onnx", "generator.fp32.ts"}
    assert all(e["parity"]["passed"] for e in doc["artifacts"])
    r = run("verify", "--exported", cli_exported, "--json", tmp_path / "r.json", "--image", tmp_path / "p.png")
    assert r.exit_code == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] and len(report["results"]) == 2
    assert all(x["max_abs"] < 1e-5 and x["nonfinite"] == 0 and x["p999_abs"] is not None for x in report["results"])
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG


def test_verify_failure_exits_nonzero_with_one_line(cli_exported, tmp_path):
    out = tmp_path / "exp"
    shutil.copytree(cli_exported, out)
    p = out / "generator.fp32.onnx"
    p.write_bytes(p.read_bytes()[:5000])
    r = run("verify", "--exported", out, "--json", tmp_path / "r.json")
    assert_one_line_error(r, "parity failed for 1 of 2", "generator.fp32.onnx", code=1)
    assert "generator.fp32.ts: pass" in r.stdout
    kinds = {f["kind"] for x in json.loads((tmp_path / "r.json").read_text())["results"] for f in x["failures"]}
    assert kinds == {"checksum", "load"}


def test_verify_shape_contract_violation(cli_exported, checkpoint_path, tmp_path):
    from gantool.checkpoint import load_generator, sha256_file

    out = tmp_path / "exp"
    shutil.copytree(cli_exported, out)
    g, _, _ = load_generator(checkpoint_path)
    prog = torch.onnx.export(g, (torch.randn(4, 100),), dynamo=True, verbose=False,
                             input_names=["z"], output_names=["images"])  # no dynamic N: batch frozen to 4
    prog.save(str(out / "generator.fp32.onnx"), external_data=False)
    doc = json.loads((out / "manifest.json").read_text())
    for e in doc["artifacts"]:
        if e["file"] == "generator.fp32.onnx":
            e["sha256"] = sha256_file(out / e["file"])
    (out / "manifest.json").write_text(json.dumps(doc))
    assert_one_line_error(run("verify", "--exported", out), "N dynamic", code=1)


@pytest.mark.parametrize("src", ["checkpoint", "generator.fp32.onnx", "generator.fp32.ts"])
def test_sample_from_checkpoint_or_artifact(cli_exported, checkpoint_path, tmp_path, src):
    """The grid's decoded pixels are eager G's images of the same z (seed 3): each 28x28 tile of the
    4x4 grid (2-pixel padding) is (x + 1) / 2 in 8 bits, within one level (an artifact's 1e-6 may
    round the other way)."""
    import numpy as np
    from PIL import Image

    from gantool import noise
    from gantool.runners import load_runner

    source = checkpoint_path if src == "checkpoint" else cli_exported / src
    r = run("sample", "--from", source, "--n", "16", "--seed", "3", "--out", tmp_path / "g.png")
    assert r.exit_code == 0, r.stdout + r.stderr
    png = np.asarray(Image.open(tmp_path / "g.png").convert("L"), dtype=np.int64)
    assert png.shape == (4 * 30 + 2, 4 * 30 + 2)
    want = load_runner(checkpoint_path, "eager")(noise.latent(16, 3, 100))[:, 0].numpy()
    want = np.floor((want + 1) / 2 * 255 + 0.5).astype(np.int64)  # torchvision's save_image rounding
    tiles = np.stack([png[2 + 30 * (i // 4):30 * (i // 4) + 30, 2 + 30 * (i % 4):30 * (i % 4) + 30] for i in range(16)])
    assert np.abs(tiles - want).max() <= 1, np.abs(tiles - want).max()
    assert np.abs(tiles - np.roll(want, 1, axis=0)).max() > 1  # the tiles are told apart: another z's would fail


# ---- bad input: one line, non-zero exit, nothing written ----

class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "gantool.checkpoint", "payload": _Evil(marker)}, evil)
    with open(tmp_path / "evil.pkl", "wb") as f:  # and a plain pickle, not a torch zip
        pickle.dump(_Evil(marker), f)
    for path in (evil, tmp_path / "evil.pkl"):
        r = run("export", "--checkpoint", path, "--out", tmp_path / "out")
        assert_one_line_error(r, str(path))
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_bad_checkpoints(checkpoint_path, tmp_path):
    out = tmp_path / "out"
    assert_one_line_error(run("export", "--checkpoint", tmp_path / "missing", "--out", out), "not found")
    good = (Path(checkpoint_path) / "checkpoint.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(good[: len(good) // 2])
    assert_one_line_error(run("export", "--checkpoint", tmp_path / "trunc.pt", "--out", out), "trunc.pt")
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_error(run("export", "--checkpoint", tmp_path / "notes.txt", "--out", out), "notes.txt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    assert_one_line_error(run("export", "--checkpoint", tmp_path / "other.pt", "--out", out), "not a gantool checkpoint")
    assert not out.exists()


def test_bad_options(checkpoint_path, tmp_path):
    out = tmp_path / "out"
    assert_one_line_error(run("export", "--checkpoint", checkpoint_path, "--format", "tflite", "--out", out),
                          "unknown format tflite")
    assert_one_line_error(run("export", "--checkpoint", checkpoint_path, "--dtype", "fp8", "--out", out),
                          "unknown dtype fp8")
    assert_one_line_error(run("export", "--checkpoint", checkpoint_path, "--format", "onnx", "--dtype", "bf16",
                              "--out", out), "no bf16 Gemm")
    if not torch.cuda.is_available():
        assert_one_line_error(run("export", "--checkpoint", checkpoint_path, "--format", "aoti", "--device", "cuda",
                                  "--out", out), "CUDA is not available")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(run("export", "--checkpoint", checkpoint_path, "--out", blocker / "sub"), "cannot write")
    assert_one_line_error(run("export", "--checkpoint", checkpoint_path, "--out", blocker), "not a directory")
    assert not out.exists() and blocker.read_text() == "x"
    assert_one_line_error(run("sample", "--from", checkpoint_path, "--n", "0", "--out", tmp_path / "g.png"), "--n 0")
    assert_one_line_error(run("sample", "--from", tmp_path / "nope.onnx", "--out", tmp_path / "g.png"), "not found")
    assert not (tmp_path / "g.png").exists()


def test_verify_without_manifest(tmp_path):
    assert_one_line_error(run("verify", "--exported", tmp_path), "no manifest.json")
    assert_one_line_error(run("verify", "--exported", tmp_path / "nope"), "not a directory")


def test_export_skips_and_names_impossible_combinations(checkpoint_path, tmp_path):
    out = tmp_path / "exp"
    r = run("export", "--checkpoint", checkpoint_path, "--format", "torchscript,onnx", "--dtype", "bf16,fp16",
            "--out", out, "--no-verify")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "skipping onnx bf16: ONNX Runtime's CPU provider has no bf16 Gemm" in r.stdout
    doc = json.loads((out / "manifest.json").read_text())
    assert sorted(e["file"] for e in doc["artifacts"]) == ["generator.bf16.ts", "generator.fp16.onnx", "generator.fp16.ts"]
    # Nothing of the request possible: one line, non-zero, nothing written.
    r = run("export", "--checkpoint", checkpoint_path, "--format", "onnx", "--dtype", "bf16", "--out", tmp_path / "none")
    assert_one_line_error(r, "nothing requested can be exported", "onnx bf16")
    assert not (tmp_path / "none").exists()


def test_export_of_another_checkpoint_into_the_same_folder_needs_force(checkpoint_path, tmp_path):
    from conftest import make_checkpoint

    out = tmp_path / "exp"
    assert run("export", "--checkpoint", checkpoint_path, "--format", "torchscript", "--out", out, "--no-verify").exit_code == 0
    first = (out / "generator.fp32.ts").read_bytes()
    other = make_checkpoint(tmp_path / "other" / "checkpoint.pt", seed=5)
    r = run("export", "--checkpoint", other, "--format", "onnx", "--out", out, "--no-verify")
    assert_one_line_error(r, "another generator", "generator.fp32.ts", "--force")
    assert r.stdout == "" and (out / "generator.fp32.ts").read_bytes() == first  # refused before any work
    assert not (out / "generator.fp32.onnx").exists()
    r = run("export", "--checkpoint", other, "--format", "onnx", "--out", out, "--no-verify", "--force")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "deleted generator.fp32.ts" in r.stdout and not (out / "generator.fp32.ts").exists()
    doc = json.loads((out / "manifest.json").read_text())
    assert [e["file"] for e in doc["artifacts"]] == ["generator.fp32.onnx"]


def test_re_export_of_the_same_generator_says_what_it_replaced_and_never_overwrites_other_files(checkpoint_path,
                                                                                                 tmp_path):
    """The one overwrite rule (README, "Writing over earlier output"; issue 36.2): adding a format to an export
    of the same generator is normal and needs no --force, and the one line says which file was rewritten; a
    file gantool did not write (not in the manifest) is refused, --force or not."""
    out = tmp_path / "exp"
    assert run("export", "--checkpoint", checkpoint_path, "--format", "torchscript", "--out", out, "--no-verify").exit_code == 0
    r = run("export", "--checkpoint", checkpoint_path, "--format", "torchscript,onnx", "--out", out, "--no-verify")
    assert r.exit_code == 0, r.stdout + r.stderr
    said = [line for line in r.stdout.splitlines() if line.startswith("replaced ")]
    assert len(said) == 1 and "generator.fp32.ts" in said[0] and "onnx" not in said[0], r.stdout
    doc = json.loads((out / "manifest.json").read_text())
    assert sorted(e["file"] for e in doc["artifacts"]) == ["generator.fp32.onnx", "generator.fp32.ts"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "generator.fp32.onnx").write_text("my own file")
    for force in ([], ["--force"]):
        r = run("export", "--checkpoint", checkpoint_path, "--format", "onnx", "--out", mine, "--no-verify", *force)
        assert_one_line_error(r, "generator.fp32.onnx", "never replaces")
    assert (mine / "generator.fp32.onnx").read_text() == "my own file"
    assert sorted(p.name for p in mine.iterdir()) == ["generator.fp32.onnx"]
