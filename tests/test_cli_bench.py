"""`gantool bench` through the CLI: a small real run, and every bad input as one stderr line."""
from __future__ import annotations

import json

import pytest

from conftest import assert_one_line_error, gantool_cli
from gantool.bench.report import validate

FAST = ["--warmup", "0", "--min-time", "0", "--repeats", "3", "--device", "cpu"]


def invoke(*args: str):
    return gantool_cli("bench", *args)



def test_bench_writes_json_plot_and_ends_with_a_json_summary(checkpoint_path, tmp_path):
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    res = invoke("--checkpoint", str(checkpoint_path), "--backends", "eager", "--precisions", "fp32",
                 "--batch-sizes", "1,8", "--json", str(out_json), "--plot", str(out_png), "--threads", "1", *FAST)
    assert res.exit_code == 0, res.output + res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert [b["batch"] for b in summary["best"]] == [1, 8] and summary["json"] == str(out_json)
    assert "samples/s" in res.stdout and "peak cpu fp32" in res.stdout
    doc = json.loads(out_json.read_text())
    validate(doc)
    assert doc["config"]["threads"] == 1 and doc["environment"]["threads"] == 1
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_cuda_device_without_cuda_reports_unavailable_and_fails(checkpoint_path, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import torch

    from gantool.cli import common

    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only machine")
    # A machine with an NVIDIA driver but no usable CUDA passes the quick check (issue 36.5), then torch
    # finds no CUDA: the rows are reported unavailable. (No driver at all: tests/test_cli_inputs.py.)
    monkeypatch.setattr(common, "no_cuda_driver", lambda: False)
    out_json = tmp_path / "c.json"
    res = invoke("--checkpoint", str(checkpoint_path), "--backends", "eager", "--precisions", "fp32",
                 "--batch-sizes", "2", "--json", str(out_json), "--warmup", "0", "--repeats", "2",
                 "--device", "cuda")
    assert_one_line_error(res, "nothing could be measured", "CUDA", progress_prefix="bench: ")
    doc = json.loads(out_json.read_text())
    row = doc["results"][0]
    assert row["status"] == "unavailable" and row["device"] == "cuda" and row["samples_per_s"] is None
    assert doc["environment"]["device"] == "cuda" and doc["environment"]["device_name"].startswith("unavailable")


@pytest.mark.parametrize("args,needles", [
    (["--backends", "eager,tensorrt"], ["unknown backend", "tensorrt"]),
    (["--precisions", "fp8"], ["unknown precision", "fp8"]),
    (["--batch-sizes", "0"], ["--batch-sizes", "must be > 0"]),
    (["--batch-sizes", "-4"], ["--batch-sizes", "must be > 0"]),
    (["--batch-sizes", "1,abc"], ["--batch-sizes", "'abc' is not an integer"]),
    (["--batch-sizes", ","], ["--batch-sizes", "at least one"]),
])
def test_bad_options_are_one_line_errors(checkpoint_path, args, needles):
    res = invoke("--checkpoint", str(checkpoint_path), *args, *FAST)
    assert_one_line_error(res, *needles)


def test_no_artifacts_for_a_requested_backend_names_the_export(checkpoint_path, tmp_path):
    res = invoke("--checkpoint", str(checkpoint_path), "--exported", str(tmp_path), "--backends", "ort", *FAST)
    assert_one_line_error(res, "no onnx artifacts", "gantool export", "--format onnx")
    res = invoke("--checkpoint", str(checkpoint_path), "--exported", str(tmp_path / "nope"), "--backends", "ort", *FAST)
    assert_one_line_error(res, "does not exist", "gantool export")


def test_no_checkpoint_for_eager_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./exported to fall back on
    assert_one_line_error(invoke("--backends", "eager", *FAST), "needs the generator", "--checkpoint")
    assert_one_line_error(invoke("--checkpoint", str(tmp_path / "missing"), "--backends", "eager", *FAST),
                          "checkpoint not found")


def test_train_flag_calls_the_train_comparison_and_reports_its_ratio(checkpoint_path, monkeypatch):
    import sys
    import types

    calls = []
    fake = types.ModuleType("gantool.bench.train_speed")

    def compare_train_speed(**kw):
        calls.append(kw)
        return {"device": "cpu", "seed_loop": {"samples_per_s": 100.0},
                "gantool": {"fp32": {"samples_per_s": 300.0, "ratio": 3.0}}}

    fake.compare_train_speed = compare_train_speed
    fake.format_report = lambda r: f"train ratio fp32 {r['gantool']['fp32']['ratio']}x"
    monkeypatch.setitem(sys.modules, "gantool.bench.train_speed", fake)
    res = invoke("--checkpoint", str(checkpoint_path), "--backends", "eager", "--precisions", "fp32",
                 "--batch-sizes", "2", "--train", "--train-dataset", "mnist-5k", *FAST)
    assert res.exit_code == 0, res.output + res.stderr
    assert calls == [{"dataset": "mnist-5k", "device": "cpu", "precisions": ("fp32",)}]
    assert "train ratio fp32 3.0x" in res.stdout
    assert json.loads(res.stdout.strip().splitlines()[-1])["train_ratio"] == {"fp32": 3.0}


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step_on_the_cpu(tmp_path):
    """The prepared GPU script, end to end at toy sizes: train, export, verify, bench in both modes,
    the training comparison, JSON + plot; the CUDA row says why it did not run."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_WORK": str(tmp_path / "work"),
           "ORT_WHEEL_PARTS": str(tmp_path / "none-*.whl.part*"), "PYTHONPATH": str(root)}
    p = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh"), "--dry-run", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((tmp_path / "out" / "bench-cpu-dry-run.json").read_text())
    steps = doc["steps"]
    assert steps["train"]["ok"] and all(e["ok"] for e in steps["export"]) and steps["verify"]["exit"] == 0
    assert steps["schema"] == "valid" and (tmp_path / "out" / steps["plot"]).read_bytes()[:4] == b"\x89PNG"
    rows = doc["bench"]["results"]
    assert {r["mode"] for r in rows} == {"latency", "throughput"}
    assert all(r["status"] == "ok" for r in rows if r["backend"] != "ort-cuda")
    assert all(r["status"] == "unavailable" and r["reason"] for r in rows if r["backend"] == "ort-cuda")
    assert doc["train"]["seed_loop"]["samples_per_s"] > 0
    assert json.loads(p.stdout.strip().splitlines()[-1])["card"] == "cpu-dry-run"


def test_the_default_table_fits_100_columns(checkpoint_path, exported_dir):
    res = invoke("--checkpoint", str(checkpoint_path), "--exported", str(exported_dir), "--backends",
                 "eager,torchscript,ort,ort-cuda-graph,ort-trt", "--precisions", "fp32,tf32",
                 "--batch-sizes", "1,2", "--modes", "latency,throughput", *FAST)
    assert res.exit_code == 0, res.output + res.stderr
    *lines, summary = res.stdout.splitlines()
    json.loads(summary)  # the last line is the compact JSON summary for tools, not for reading
    assert max(map(len, lines)) <= 100, max(lines, key=len)
    assert any(line.startswith("[1] ") for line in lines)  # reasons are notes under the table
    wide = invoke("--checkpoint", str(checkpoint_path), "--backends", "eager", "--precisions", "fp32",
                  "--batch-sizes", "2", "--wide", *FAST)
    assert wide.exit_code == 0 and "first call" in wide.stdout and "mem MB" in wide.stdout


def test_a_batch_too_large_for_memory_is_reported_for_its_row_only(checkpoint_path, tmp_path):
    out_json = tmp_path / "m.json"
    res = invoke("--checkpoint", str(checkpoint_path), "--backends", "eager", "--precisions", "fp32",
                 "--batch-sizes", "2,4000000000", "--json", str(out_json), *FAST)
    assert res.exit_code == 0, res.output + res.stderr
    assert "oom" in res.stdout and "Traceback" not in res.output + res.stderr
    rows = {r["batch"]: r for r in json.loads(out_json.read_text())["results"]}
    assert rows[4000000000]["status"] == "oom" and rows[2]["status"] == "ok"
