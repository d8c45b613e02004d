"""benchmarks/gpu_check.py's exit status: 0 only when every requested row ran and passed parity (on
the CPU, with the steps and bench faked: the script's verdict is what is tested, not a GPU)."""
from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.fixture
def gpu_check(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setenv("GPU_CHECK_WORK", str(tmp_path / "work"))
    monkeypatch.setattr("sys.argv", ["gpu_check.py", "--dry-run", "--out", str(tmp_path / "out")])
    monkeypatch.setattr(mod, "train", lambda *a: {"ok": True})
    monkeypatch.setattr(mod, "export", lambda *a: [{"format": "onnx", "dtype": "fp32", "ok": True}])
    monkeypatch.setattr(mod, "gantool", lambda *a, **k: subprocess.CompletedProcess(a, 0, "verify: ok", ""))
    for name in ("print_table", "print_peaks", "validate", "plot"):
        monkeypatch.setattr(mod.rep, name, lambda *a, **k: None)
    monkeypatch.setattr(mod.rep, "summary", lambda *a, **k: {"best": []})
    monkeypatch.setattr("gantool.bench.train_speed.compare_train_speed", lambda **k: {})
    monkeypatch.setattr("gantool.bench.train_speed.format_report", lambda r: "")
    return mod


def _rows(mod, backend, status="ok", passed=True):
    return [{"backend": backend, "precision": "fp32", "batch": b, "mode": m, "status": status, "ranked": status == "ok",
             "samples_per_s": 1.0, "reason": None if status == "ok" else f"{status} here",
             "parity": None if status == "unavailable" else {"passed": passed}}
            for b in (1, 8) for m in mod.MODES]


def _bench(mod, monkeypatch, broken=None):
    """run_bench faked per backend: every row ok, ort-cuda unavailable, `broken` = (backend, row edit)."""
    def fake(cfg, progress=None):
        (b,) = cfg.backends
        rows = _rows(mod, b, "unavailable" if b == "ort-cuda" else "ok")
        if broken and broken[0] == b:
            broken[1](rows)
        return {"results": rows, "peaks": [], "config": {"backends": [b], "precisions": ["fp32"]}}

    monkeypatch.setattr(mod, "run_bench", fake)


def test_exit_0_only_when_every_requested_row_ran_and_passed(gpu_check, monkeypatch, tmp_path):
    import json

    _bench(gpu_check, monkeypatch)
    assert gpu_check.main() == 0
    doc = json.loads((tmp_path / "out" / "bench-cpu-dry-run.json").read_text())
    assert doc["verdict"] == {"passed": True, "problems": []}


def _fail_parity(rows):
    rows[0].update(status="parity-failed", reason="max |diff| 0.3 > atol 0.25", parity={"passed": False})


@pytest.mark.parametrize("case,needle", [
    ("parity", "ort fp32 1 latency: parity-failed: max |diff| 0.3"),
    ("missing row", "torchscript fp32 8 throughput: no row"),
    ("error row", "eager fp32 1 latency: error: error here"),
    ("cuda row ran on the cpu", "ort-cuda fp32 1 latency: expected unavailable here, got ok"),
    ("verify", "verify exited 1"),
    ("bench raised", "bench eager: RuntimeError: boom"),
])
def test_exit_1_when_a_row_or_a_step_failed(gpu_check, monkeypatch, capsys, case, needle):
    broken = {"parity": ("ort", _fail_parity),
              "missing row": ("torchscript", lambda rows: rows.pop()),
              "error row": ("eager", lambda rows: rows[0].update(status="error", reason="error here", parity=None)),
              "cuda row ran on the cpu": ("ort-cuda", lambda rows: rows[0].update(status="ok"))}.get(case)
    _bench(gpu_check, monkeypatch, broken)
    if case == "verify":
        monkeypatch.setattr(gpu_check, "gantool", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "FAIL"))
    if case == "bench raised":
        real = gpu_check.run_bench

        def boom(cfg, progress=None):
            if cfg.backends == ["eager"]:
                raise RuntimeError("boom")
            return real(cfg, progress)

        monkeypatch.setattr(gpu_check, "run_bench", boom)
    assert gpu_check.main() == 1
    err = capsys.readouterr().err
    assert f"FAILED: {needle}" in err, err
