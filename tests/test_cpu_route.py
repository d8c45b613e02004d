"""The CPU-only install (README): gantool works with an onnxruntime that has no CUDA provider, and says
in one line how to install ONNX Runtime when it is missing; pyproject offers both routes as extras."""
from __future__ import annotations

import importlib.abc
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import assert_one_line_error, gantool_cli
ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--batch-sizes", "2", "--warmup", "0", "--min-time", "0", "--min-repeats", "1"]


run = gantool_cli


@pytest.fixture
def cpu_only_onnxruntime(monkeypatch):
    """What `pip install onnxruntime` (the CPU wheel) reports: no CUDA or TensorRT provider."""
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["AzureExecutionProvider", "CPUExecutionProvider"])
    return onnxruntime


class _NoOnnxRuntime(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@pytest.fixture
def no_onnxruntime(monkeypatch):
    for name in [m for m in sys.modules if m == "onnxruntime" or m.startswith("onnxruntime.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NoOnnxRuntime(), *sys.meta_path])


def test_pyproject_offers_cpu_and_gpu_onnxruntime_as_extras_and_an_spdx_license():
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    proj = doc["project"]
    assert proj["license"] == "MIT"  # an SPDX string: no "project.license as a TOML table" warnings
    assert doc["build-system"]["requires"] == ["setuptools>=77"]  # the first setuptools that reads it
    assert not [d for d in proj["dependencies"] if d.startswith("onnxruntime")]  # never both wheels at once
    extras = proj["optional-dependencies"]
    assert extras["cpu"] == ["onnxruntime>=1.20"]
    assert any(d.startswith("onnxruntime-gpu") for d in extras["gpu"])
    make = (ROOT / "Makefile").read_text()
    assert '.[dev,$(ORT_EXTRA)]' in make and "download.pytorch.org/whl/cpu" in make


def test_cpu_only_onnxruntime_runs_sample_verify_and_bench(cpu_only_onnxruntime, exported_dir, checkpoint_path, tmp_path):
    r = run("sample", "--from", exported_dir / "generator.fp32.onnx", "--n", "4", "--out", tmp_path / "g.png")
    assert r.exit_code == 0, r.stderr
    r = run("verify", "--exported", exported_dir)
    assert r.exit_code == 0 and "generator.fp32.onnx" in r.stdout, r.stdout + r.stderr
    r = run("bench", "--exported", exported_dir, "--checkpoint", checkpoint_path, "--backends", "ort",
            "--precisions", "fp32", *QUICK, "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.stdout + r.stderr
    import json

    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["environment"]["onnxruntime_providers"] == ["AzureExecutionProvider", "CPUExecutionProvider"]
    assert [row["samples_per_s"] > 0 for row in doc["results"] if row["backend"] == "ort"] == [True]


def test_without_onnxruntime_onnx_work_is_one_line_and_the_rest_works(no_onnxruntime, exported_dir, checkpoint_path, tmp_path):
    r = run("sample", "--from", exported_dir / "generator.fp32.onnx", "--n", "4", "--out", tmp_path / "g.png")
    assert_one_line_error(r, "ONNX Runtime is not installed", "pip install onnxruntime")
    r = run("sample", "--from", exported_dir / "generator.fp32.ts", "--n", "4", "--out", tmp_path / "g.png")
    assert r.exit_code == 0, r.stderr
    r = run("bench", "--exported", exported_dir, "--checkpoint", checkpoint_path, "--backends", "eager",
            "--precisions", "fp32", *QUICK)
    assert r.exit_code == 0, r.stdout + r.stderr
