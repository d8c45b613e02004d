"""Shared fixtures: a seed-architecture checkpoint made without training, so tests stay fast."""
from __future__ import annotations

import importlib
import math
import os
from pathlib import Path

import pytest
import torch

from gantool.runners import Runner, RunnerInfo
from gantool.signature import Signature

# Two cores are shared between torch's intra-op pool and the test process; keep runs predictable.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def make_checkpoint(path: Path, seed: int = 0, **model_overrides) -> Path:
    """Write a gantool checkpoint of a randomly initialised (untrained) seed G and D."""
    from gantool.checkpoint import save_untrained_checkpoint

    return save_untrained_checkpoint(path, seed, "test fixture, untrained", **model_overrides)


@pytest.fixture(scope="session")
def checkpoint_path(tmp_path_factory) -> Path:
    """A run directory holding checkpoint.pt of an untrained seed-architecture GAN."""
    run = tmp_path_factory.mktemp("run")
    make_checkpoint(run / "checkpoint.pt")
    return run


@pytest.fixture(scope="session")
def trained_checkpoint_path(tmp_path_factory) -> Path:
    """A run of the default recipe stopped at 270 steps (~15 s): outputs up to 0.67, rms 0.19, where
    the untrained G's stay under 0.26 (rms 0.047); for checks whose bounds depend on output size."""
    from typer.testing import CliRunner

    from gantool.cli import app

    run = tmp_path_factory.mktemp("trained") / "run"
    r = CliRunner().invoke(app, ["train", "--out", str(run), "--epochs", "3", "--batch-size", "50", "--seed", "0",
                                 "--eval-every", "0", "--no-progress", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    return run


@pytest.fixture(scope="session")
def exported_dir(tmp_path_factory, checkpoint_path) -> Path:
    """ONNX + TorchScript artifacts (fp32 and fp16) of `checkpoint_path` with their manifest (~10 s)."""
    from gantool.export import export_artifacts

    out = tmp_path_factory.mktemp("exported")
    export_artifacts(checkpoint_path, ["onnx", "torchscript"], out, dtypes=["fp32", "fp16"])
    return out


@pytest.fixture(scope="session")
def aoti_dir(tmp_path_factory, checkpoint_path) -> Path:
    """An AOTInductor fp32 CPU package of `checkpoint_path` (the C++ compile takes 15-60 s on 2 cores)."""
    from gantool.export import export_artifacts

    out = tmp_path_factory.mktemp("exported_aoti")
    export_artifacts(checkpoint_path, ["aoti"], out, dtypes=["fp32"])
    return out


@pytest.fixture(scope="session", autouse=True)
def gantool_cache(tmp_path_factory) -> Path:
    """A per-session $GANTOOL_CACHE: the quality classifier trains once per test session, never in ~/.cache."""
    path = tmp_path_factory.mktemp("gantool_cache")
    old = os.environ.get("GANTOOL_CACHE")
    os.environ["GANTOOL_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("GANTOOL_CACHE", None)
    else:
        os.environ["GANTOOL_CACHE"] = old


@pytest.fixture(scope="session")
def quality_reference(gantool_cache):
    """gantool.quality.QualityReference for mnist-5k (trains the classifier once per session, ~1 min)."""
    from gantool.quality.metrics import QualityReference

    return QualityReference("mnist-5k", "data")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny training runs: a second intra-op thread only adds sync cost (and stalls on a busy CPU)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def weight_scale_x10(src: Path, dst: Path) -> Path:
    """A copy of an int8 export folder whose first weight scale is x10, re-hashed into the manifest:
    the file is "what was exported", so only its values can fail it."""
    import json
    import shutil

    import numpy as np
    import onnx
    from onnx import numpy_helper

    from gantool.checkpoint import sha256_file

    shutil.copytree(src, dst)
    path = dst / "generator.int8.onnx"
    model = onnx.load(str(path))
    scale = next(t for t in model.graph.initializer if t.name.endswith("weight_scale"))
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(10), scale.name))
    onnx.save_model(model, str(path))
    doc = json.loads((dst / "manifest.json").read_text())
    for e in doc["artifacts"]:
        if e["file"] == path.name:
            e["sha256"] = sha256_file(path)
    (dst / "manifest.json").write_text(json.dumps(doc))
    return dst


def need_extra(module: str, extra: str):
    """The module of an optional extra, else skip the test (module) that needs it -- except under CI
    (.ci/run sets GANTOOL_REQUIRE_EXTRAS=1), where a missing extra is an installation failure: fail."""
    if os.environ.get("GANTOOL_REQUIRE_EXTRAS") == "1":
        try:
            return importlib.import_module(module)
        except ImportError as e:
            pytest.fail(f"{module} does not import ({e}): the {extra} did not install, and GANTOOL_REQUIRE_EXTRAS=1 "
                        "(CI) makes that a failure, not a skip", pytrace=False)
    return pytest.importorskip(module, reason=f"needs the {extra}")


def gantool_cli(*args, **kwargs):
    """`gantool ARGS...` in-process through typer's CliRunner (arguments str()-ed, stderr apart from
    stdout): the one way tests call the CLI. A plain function, imported like make_checkpoint, since
    module-level helpers and module-scoped fixtures call it too."""
    from typer.testing import CliRunner

    from gantool.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


class FakeRunner(Runner):
    """The one stand-in runner: images = fn(z) (default: tanh of z's first value, in every pixel)
    with the RunnerInfo given. It records each prepared z (`calls`) and the id of each run's input
    (`seen`); with `ticks` (an object with a float `now`, a fake clock), each run advances it by
    `delay` seconds (a number, or a function returning one)."""

    def __init__(self, fn=None, dtype="fp32", *, backend="fake", device="cpu", latent_dim=100, img_shape=(1, 28, 28),
                 source="", providers=None, delay=0.0, ticks=None):
        self.fn = fn or (lambda z: torch.tanh(z[:, :1]).expand(-1, math.prod(img_shape)).reshape(-1, *img_shape))
        self.info = RunnerInfo(backend, device, dtype, Signature.latent_to_image(latent_dim, tuple(img_shape)), source,
                               {"providers": providers} if providers else {})
        self.calls: list[torch.Tensor] = []
        self.seen: list[int] = []
        self.delay, self.ticks = delay, ticks  # (Runner.clock would mean a self-timing runner: not this)

    def prepare(self, z, labels=None):
        self.calls.append(z.clone())
        return z

    def run(self, x):
        self.seen.append(id(x))
        if self.ticks is not None:
            self.ticks.now += self.delay() if callable(self.delay) else self.delay
        return self.fn(x)

    def sync(self):
        pass


def assert_one_line_error(result, *needles: str, code: int | None = None, progress_prefix: str | None = None) -> None:
    """A CLI failure: non-zero exit, exactly one `error: ...` line on stderr, no traceback.

    With `progress_prefix`, stderr lines before the error may be progress lines starting with it.
    """
    assert result.exit_code != 0, (result.exit_code, result.stdout, result.stderr)
    if code is not None:
        assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    if progress_prefix is not None:
        assert all(line.startswith(progress_prefix) for line in lines[:-1]), result.stderr
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for n in needles:
        assert n in lines[0], lines[0]
