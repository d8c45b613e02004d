"""The ratio gate (--compare / --max-regression) and bench's failure exit, through the CLI."""
from __future__ import annotations

import copy
import json

import pytest

from conftest import assert_one_line_error, gantool_cli
from gantool.bench import gate

FAST = ["--warmup", "0", "--min-time", "0", "--repeats", "3", "--device", "cpu", "--threads", "1"]


def invoke(*args: str):
    return gantool_cli("bench", *args)


def _row(backend, batch, sps, status="ok", mode="latency"):
    return {"backend": backend, "precision": "fp32", "batch": batch, "mode": mode, "status": status,
            "samples_per_s": sps}


def test_ratios_are_over_eager_fp32_at_the_same_batch_and_mode():
    report = {"results": [_row("eager", 64, 100.0), _row("ort", 64, 250.0), _row("ort", 1, 9.0),
                          _row("eager", 64, 50.0, mode="throughput"), _row("ort", 64, 200.0, mode="throughput")],
              "train": {"gantool": {"fp32": {"ratio": 2.1}}}}
    r = gate.ratios(report)
    assert r == {"ort fp32 latency b64": 2.5, "ort fp32 throughput b64": 4.0,
                 "train fp32 (gantool loop / seed loop)": 2.1}  # ort b1 has no eager row at b1: no ratio


def test_gate_passes_on_itself_and_fails_past_the_band():
    base = {"results": [_row("eager", 64, 100.0), _row("ort", 64, 250.0), _row("torchscript", 64, 150.0)]}
    assert gate.compare(base, base, 0.3)["passed"]
    slower = copy.deepcopy(base)
    slower["results"][1]["samples_per_s"] = 160.0  # 2.5x -> 1.6x: -36%
    g = gate.compare(slower, base, 0.3)
    assert not g["passed"] and g["failed"] == 1
    assert [r["verdict"] for r in g["rows"]] == ["fail", "ok"]
    assert gate.compare(slower, base, 0.4)["passed"]
    faster_eager = copy.deepcopy(base)
    faster_eager["results"][0]["samples_per_s"] = 200.0  # everything else halves relative to eager
    assert not gate.compare(faster_eager, base, 0.3)["passed"]
    gone = copy.deepcopy(base)
    gone["results"][2]["status"] = "error"
    assert [r["verdict"] for r in gate.compare(gone, base, 0.3)["rows"]] == ["ok", "not measured"]


@pytest.mark.parametrize("band,ok", [("30%", 0.3), ("5", 0.05), ("0%", 0.0), ("99.5%", 0.995)])
def test_band_parsing(band, ok):
    assert gate.parse_band(band) == pytest.approx(ok)


@pytest.fixture
def fixed_times(monkeypatch):
    """Every timed call of eager takes 2 ms and of any other backend 1 ms: two bench runs give the
    same ratios to the last bit, so the gate can be held to 0% through the CLI."""
    import numpy as np

    from gantool.bench import rows

    real = rows.measure

    def measure(runner, *args, **kw):  # sequential order (--no-interleave)
        m = real(runner, *args, **kw)
        m.times = np.full(len(m.times), 2e-3 if runner.info.backend == "eager" else 1e-3)
        return m

    class Timer(rows.Timer):  # interleaved order: each slice's samples, so the paired ratios are fixed too
        def take(self, enough, rewarm=0):
            new = super().take(enough, rewarm)
            fixed = [2e-3 if self.runner.info.backend == "eager" else 1e-3] * len(new)
            self.times[-len(new):] = fixed
            return fixed

    monkeypatch.setattr(rows, "measure", measure)
    monkeypatch.setattr(rows, "Timer", Timer)


def test_compare_on_the_cli_holds_at_0_percent_and_fails_on_a_doctored_baseline(checkpoint_path, exported_dir,
                                                                                tmp_path, fixed_times):
    """--max-regression 100% could never fail (a ratio cannot fall by 100%). Against its own report
    the gate passes at 0%; a baseline whose ort ratio is 1% higher fails it at 0% and passes at 2%."""
    base = tmp_path / "base.json"
    args = ["--checkpoint", str(checkpoint_path), "--exported", str(exported_dir), "--backends", "eager,ort",
            "--precisions", "fp32", "--batch-sizes", "64", *FAST]
    res = invoke(*args, "--json", str(base))
    assert res.exit_code == 0, res.output + res.stderr
    doc = json.loads(base.read_text())
    assert gate.ratios(doc) == {"ort fp32 latency b64": 2.0}
    assert gate.compare(doc, doc, 0.0)["passed"]  # a report against itself, at 0%
    res = invoke(*args, "--compare", str(base), "--max-regression", "0%")
    assert res.exit_code == 0, res.output + res.stderr
    assert "ratio gate" in res.stdout and "ort fp32 latency b64" in res.stdout
    for r in doc["results"]:
        if r["backend"] == "ort":
            r["samples_per_s"] *= 1.01  # a baseline where ort was 2.02x eager: today's 2.0x is 1% slower
            r["ratio"] = {k: v * 1.01 if isinstance(v, float) else v for k, v in r["ratio"].items()}  # paired too
    doctored = tmp_path / "doctored.json"
    doctored.write_text(json.dumps(doc))
    res = invoke(*args, "--compare", str(doctored), "--max-regression", "0%")
    assert_one_line_error(res, "ratio gate failed", code=1, progress_prefix="bench: ")
    assert "fail" in res.stdout
    res = invoke(*args, "--compare", str(doctored), "--max-regression", "2%")
    assert res.exit_code == 0, res.output + res.stderr


@pytest.mark.parametrize("extra,needles", [
    (["--ort-option", "no_such_key=1"], ["--ort-option no_such_key", "not an onnxruntime"]),
    (["--ort-option", "gpu_mem_limit"], ["expected KEY=VALUE"]),
    (["--ort-option", "use_tf32=1"], ["gantool sets this one itself", "tf32"]),
    (["--compare", "MISSING"], ["--compare", "no such file"]),
    (["--compare", "NOTJSON"], ["--compare", "not a JSON bench report"]),
    (["--compare", "BASE", "--max-regression", "-5%"], ["--max-regression", "at least 0%"]),
    (["--compare", "BASE", "--max-regression", "150%"], ["--max-regression", "below 100%"]),
    (["--compare", "BASE", "--max-regression", "100%"], ["--max-regression", "a ratio cannot fall by 100%"]),
    (["--compare", "BASE", "--max-regression", "lots"], ["--max-regression", "percentage"]),
    (["--percentiles", "50,100"], ["--percentiles", "between 0 and 100"]),
    (["--modes", "fast"], ["unknown mode", "fast"]),
])
def test_bad_bench_input_is_one_line(checkpoint_path, tmp_path, extra, needles):
    (tmp_path / "NOTJSON").write_text("{not json")
    (tmp_path / "BASE").write_text(json.dumps({"results": []}))
    extra = [str(tmp_path / e) if e in ("MISSING", "NOTJSON", "BASE") else e for e in extra]
    res = invoke("--checkpoint", str(checkpoint_path), "--backends", "eager", "--batch-sizes", "2", *FAST, *extra)
    assert_one_line_error(res, *needles)


def test_an_option_for_a_backend_not_asked_for_is_refused(checkpoint_path):
    res = invoke("--checkpoint", str(checkpoint_path), "--backends", "eager", "--ort-option", "trt_max_workspace_size=1", *FAST)
    assert_one_line_error(res, "--ort-option trt_max_workspace_size", "ort-trt")


def test_a_runner_exception_is_an_error_row_and_a_failing_exit(checkpoint_path, tmp_path, monkeypatch):
    from gantool.bench import suite

    real = suite.load_runner

    def broken_run(x):
        raise RuntimeError("kernel exploded")

    def load_broken(source, name=None, **kw):
        r = real(source, name, **kw)
        if name == "compile":
            r.run = broken_run
        return r

    monkeypatch.setattr(suite, "load_runner", load_broken)
    monkeypatch.setattr("gantool.runners.torch_runner.torch.compile", lambda m, **k: m)
    out = tmp_path / "e.json"
    args = ["--checkpoint", str(checkpoint_path), "--backends", "eager,compile", "--precisions", "fp32",
            "--batch-sizes", "2", "--json", str(out), *FAST]
    res = invoke(*args)
    assert_one_line_error(res, "1 row(s) failed", "kernel exploded", code=1, progress_prefix="bench: ")
    rows = {r["backend"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["compile"]["status"] == "error" and "kernel exploded" in rows["compile"]["reason"]
    assert rows["eager"]["status"] == "ok"
    res = invoke(*args, "--allow-failures")
    assert res.exit_code == 0, res.output + res.stderr
