"""Artifact runners: round trips against eager, dtype rules, the CUDA guard, and loading without gantool."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from gantool.errors import ArtifactError, DeviceError
from gantool.runners import backends, load_runner

ARTIFACTS = {"ort": "generator.fp32.onnx", "torchscript": "generator.fp32.ts"}


@pytest.fixture(scope="module")
def eager(checkpoint_path):
    return load_runner(checkpoint_path, "eager")


@pytest.mark.parametrize("backend", sorted(ARTIFACTS))
@pytest.mark.parametrize("n", [1, 7, 256])
def test_fp32_round_trip_matches_eager(exported_dir, eager, backend, n):
    r = load_runner(exported_dir / ARTIFACTS[backend], backend)
    z = torch.randn(n, 100, generator=torch.Generator().manual_seed(n))
    y = r(z)
    assert y.shape == (n, 1, 28, 28) and y.dtype == torch.float32
    assert (y - eager(z)).abs().max().item() < 1e-5
    assert r.info.latent_dim == 100 and r.info.img_shape == (1, 28, 28) and r.info.dtype == "fp32"


@pytest.mark.parametrize("name", ["generator.fp16.onnx", "generator.fp16.ts"])
def test_fp16_artifacts_take_their_dtype(exported_dir, eager, name):
    r = load_runner(exported_dir / name, dtype="auto")
    assert r.info.dtype == "fp16"
    z = torch.randn(5, 100)
    assert (r(z) - eager(z)).abs().max().item() < 1e-2
    with pytest.raises(ArtifactError, match="holds fp16 weights but fp32 was asked for"):
        load_runner(exported_dir / name, dtype="fp32")


def test_prepare_run_split_keeps_native_output(exported_dir):
    r = load_runner(exported_dir / "generator.fp16.onnx", "ort", dtype="fp16", threads=1)
    x = r.prepare(torch.randn(3, 100))
    y = r.run(x)
    assert str(y.dtype) == "float16" and r.to_cpu(y).dtype == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="the guard is for machines without CUDA")
@pytest.mark.parametrize("backend", ["ort-cuda", "ort-cuda-graph", "ort-trt"])
def test_gpu_backends_refuse_to_run_on_cpu(exported_dir, backend, capfd):
    assert backend in backends()
    with pytest.raises(DeviceError, match=rf"^{backend} unavailable: "):
        load_runner(exported_dir / "generator.fp32.onnx", backend, device="cuda")
    out, err = capfd.readouterr()
    assert "EP Error" not in out + err  # the fallback chatter is folded into the one-line reason


@pytest.mark.parametrize("backend,suffix", [("ort", ".onnx"), ("torchscript", ".ts"), ("aoti", ".pt2")])
def test_truncated_or_foreign_file_is_an_artifact_error(tmp_path, exported_dir, backend, suffix):
    bad = tmp_path / f"bad{suffix}"
    src = exported_dir / ("generator.fp32.onnx" if suffix != ".ts" else "generator.fp32.ts")
    bad.write_bytes(src.read_bytes()[:1000])
    with pytest.raises(ArtifactError):
        load_runner(bad, backend)
    bad.write_text("not a model at all\n")
    with pytest.raises(ArtifactError):
        load_runner(bad, backend)


def _isolated_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `code` with site-packages on sys.path but no .pth files, so the editable gantool install
    is invisible; the snippet itself asserts that `import gantool` fails."""
    site = sysconfig.get_paths()["purelib"]
    prelude = (f"import sys; sys.path.append({site!r})\n"
               "try:\n    import gantool\n    raise SystemExit('gantool importable')\n"
               "except ModuleNotFoundError:\n    pass\n")
    return subprocess.run([sys.executable, "-I", "-S", "-c", prelude + code], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _saved_eager_output(eager, tmp_path: Path) -> str:
    """z (300 fixed draws) and eager fp32's images for it, as .npy files the isolated process reads;
    returns the snippet that loads them and the fp32 tolerance (gantool.verify.compare's) to judge by."""
    import numpy as np

    from gantool import noise
    from gantool.verify.compare import TOLERANCES

    z = noise.latent(300, 0, 100)
    np.save(tmp_path / "z.npy", z.numpy())
    np.save(tmp_path / "ref.npy", eager(z).numpy())
    tol = TOLERANCES["fp32"]
    return (f"import numpy as np\nz, ref = np.load('z.npy'), np.load('ref.npy')\n"
            f"def close(y):\n    err = np.abs(np.asarray(y, dtype=np.float64) - ref)\n"
            f"    assert y.shape == ref.shape and (err <= {tol.atol!r} + {tol.rtol!r} * np.abs(ref)).all(), err.max()\n")


def test_onnx_runs_with_onnxruntime_alone(exported_dir, eager, tmp_path):
    # torch is blocked too: the .onnx needs nothing but onnxruntime (and numpy), and computes eager's values.
    code = (
        "sys.modules['torch'] = None\n"
        + _saved_eager_output(eager, tmp_path) +
        "import onnxruntime as ort\n"
        f"s = ort.InferenceSession({str(exported_dir / 'generator.fp32.onnx')!r}, providers=['CPUExecutionProvider'])\n"
        "assert [i.name for i in s.get_inputs()] == ['z'] and [o.name for o in s.get_outputs()] == ['images']\n"
        "close(s.run(None, {'z': z})[0])\n"
        "close(np.concatenate([s.run(None, {'z': z[i:i + 1]})[0] for i in range(3)] + [ref[3:]]))  # batch 1 too\n"
        "print('ok')\n"
    )
    p = _isolated_python(code, tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:] + p.stdout


def test_torchscript_and_aoti_load_with_torch_alone(exported_dir, aoti_dir, eager, tmp_path):
    # One fresh process for both (importing torch costs seconds): torch.jit.load and aoti_load_package only.
    code = (
        "import warnings; warnings.simplefilter('ignore')\n"
        + _saved_eager_output(eager, tmp_path) +
        "import torch, torch._inductor\n"
        f"ts = torch.jit.load({str(exported_dir / 'generator.fp32.ts')!r})\n"
        f"pt2 = torch._inductor.aoti_load_package({str(aoti_dir / 'generator.fp32.cpu.pt2')!r})\n"
        "with torch.no_grad():\n"
        "    for m in (ts, pt2):\n"
        "        close(m(torch.from_numpy(z)).numpy())\n"
        "        close(np.concatenate([m(torch.from_numpy(z[:1])).numpy(), ref[1:]]))  # batch 1 too\n"
        "print('ok')\n"
    )
    p = _isolated_python(code, tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:] + p.stdout


def test_aoti_round_trip_and_device_check(aoti_dir, eager):
    r = load_runner(aoti_dir / "generator.fp32.cpu.pt2", "aoti")
    assert r.info.device == "cpu" and r.info.dtype == "fp32"
    for n in (1, 7, 256):
        z = torch.randn(n, 100)
        assert (r(z) - eager(z)).abs().max().item() < 1e-5
    with pytest.raises(DeviceError):  # compiled for the CPU: never run under a CUDA name
        load_runner(aoti_dir / "generator.fp32.cpu.pt2", "aoti", device="cuda")
