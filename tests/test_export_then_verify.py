"""`gantool export` checks parity after exporting (the CLI sequences the two; gantool.export itself
knows nothing of verify): an artifact that computes something else fails the command with one
line and exit 1, for plain formats, a Triton repository and a web page alike; --no-verify skips it."""
from __future__ import annotations

import dataclasses
import importlib
import json

import pytest
import torch

from conftest import assert_one_line_error, gantool_cli as run, need_extra


@pytest.fixture
def wrong_weights(monkeypatch):
    """Make a format's exporter write a generator whose weights are 1.5x the checkpoint's."""

    def spoil(name: str) -> None:
        mod = importlib.import_module(f"gantool.export.{name}")
        real = mod.FORMAT.export

        def export(module, *args, **kwargs):
            with torch.no_grad():
                for p in module.parameters():  # a copy of the checkpoint's generator: the reference is untouched
                    p.mul_(1.5)
            return real(module, *args, **kwargs)

        monkeypatch.setattr(mod, "FORMAT", dataclasses.replace(mod.FORMAT, export=export))

    return spoil


def test_export_fails_with_one_line_when_parity_fails(checkpoint_path, tmp_path, wrong_weights):
    wrong_weights("torchscript")
    out = tmp_path / "exp"
    r = run("export", "--checkpoint", checkpoint_path, "--format", "torchscript", "--out", out)
    assert_one_line_error(r, "parity failed for 1 of 1", "generator.fp32.ts", code=1)
    assert r.stdout.index("exporting torchscript fp32") < r.stdout.index("generator.fp32.ts: ")
    entry, = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert entry["parity"]["passed"] is False  # the result is recorded before the command fails


def test_no_verify_skips_the_check(checkpoint_path, tmp_path, wrong_weights):
    wrong_weights("torchscript")
    out = tmp_path / "exp"
    r = run("export", "--checkpoint", checkpoint_path, "--format", "torchscript", "--out", out, "--no-verify")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "parity not checked (--no-verify)" in r.stdout
    entry, = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert entry["parity"] is None


def test_triton_repository_is_not_written_when_parity_fails(checkpoint_path, tmp_path, wrong_weights):
    need_extra("tritonclient.grpc", "dev extra: tritonclient[grpc]")
    wrong_weights("torchscript")
    out = tmp_path / "model_repository"
    r = run("export", "--checkpoint", checkpoint_path, "--format", "triton", "--kind", "cpu", "--out", out)
    assert_one_line_error(r, "parity failed for 1 of 2", "generator.fp32.ts", code=1)
    assert "generator.fp32.onnx: pass" in r.stdout
    assert not out.exists() or not any(out.iterdir())  # checked in the staging folder, before anything moved in
    assert [p.name for p in tmp_path.iterdir()] in ([], ["model_repository"])  # and the staging folder is gone


def test_web_page_is_not_written_when_parity_fails(checkpoint_path, tmp_path, wrong_weights):
    wrong_weights("onnx")
    site = tmp_path / "site"
    r = run("export", "--format", "web", "--checkpoint", checkpoint_path, "--out", site)
    assert_one_line_error(r, "parity failed for 1 of 1", "generator.fp32.onnx", code=1)
    assert not site.exists()
