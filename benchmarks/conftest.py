"""pytest-benchmark suites: collect bench_*.py here, and share one untrained checkpoint + exported artifacts."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The root pyproject keeps testpaths=tests with the default test_*.py pattern; `pytest benchmarks`
# still finds bench_*.py through this hook (files named on the command line are collected anyway).


def pytest_collect_file(file_path: Path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


torch.set_num_threads(int(os.environ.get("GANTOOL_BENCH_THREADS", 0)) or torch.get_num_threads())


@pytest.fixture(scope="session")
def bench_device() -> str:
    """GANTOOL_BENCH_DEVICE=cuda runs the suites on a GPU; CPU by default."""
    return os.environ.get("GANTOOL_BENCH_DEVICE", "cpu")


@pytest.fixture(scope="session")
def bench_checkpoint(tmp_path_factory) -> Path:
    """An untrained seed-architecture checkpoint: inference speed does not depend on the weights."""
    from gantool.checkpoint import save_untrained_checkpoint

    # Not the tests' weights: for the same weights Inductor's cache can hand back an AOTI package
    # carrying an earlier export's metadata (its source checkpoint SHA), which verify rejects.
    run = tmp_path_factory.mktemp("bench-run")
    save_untrained_checkpoint(run / "checkpoint.pt", 1234, "benchmark fixture, untrained")
    return run


@pytest.fixture(scope="session")
def bench_exported(bench_checkpoint, bench_device, tmp_path_factory) -> Path:
    """fp32 ONNX, TorchScript and AOTInductor artifacts, exported once a session.

    Not verified here: every benchmark case checks its own first output against eager fp32 (values,
    per dtype), which is what a speed number needs; the full verify is the export tests' job."""
    from gantool.export import export_artifacts

    out = tmp_path_factory.mktemp("bench-exported")
    formats = [f for f in os.environ.get("GANTOOL_BENCH_FORMATS", "onnx,torchscript,aoti").split(",") if f]
    export_artifacts(bench_checkpoint, formats, out, dtypes=["fp32"], device=bench_device)
    return out
