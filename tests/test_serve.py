"""`gantool serve` on a real Triton Inference Server (PyTriton's tritonserver 2.51), on 127.0.0.1 and
free ports, each step bounded in time: it serves, bench's load rows are ok with every answer checked
against eager, bad requests get errors while the server keeps serving, SIGTERM stops it with its
ports and processes gone, a SIGKILLed server makes bench fail in one line without losing rows."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, gantool_cli, need_extra, weight_scale_x10

need_extra("pytriton", "serve extra: pip install 'gantool[serve]'")
import tritonclient.grpc as grpcclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from serve_helpers import ServeProcess, descendants, run_cli  # noqa: E402
from gantool.serve.child import LineReader  # noqa: E402

MAX_BATCH = 8
QUEUE_DELAY_US = 50_000  # long enough that concurrent requests are batched together even on a busy machine


@pytest.fixture(scope="module")
def eager(checkpoint_path):
    from gantool.runners import load_runner

    runner = load_runner(checkpoint_path, "eager", device="cpu")
    return lambda z: runner(__import__("torch").from_numpy(z)).numpy()


@pytest.fixture(scope="module")
def server(exported_dir):
    """One server for the tests that only send requests; no test stops it (those that stop or kill a
    server start their own)."""
    s = ServeProcess(exported_dir, "--max-batch-size", str(MAX_BATCH), "--max-queue-delay-us", str(QUEUE_DELAY_US))
    yield s
    if s.proc.poll() is None:
        s.stop(signal.SIGTERM)
    s.assert_gone()


def _infer(url: str, name: str, z: np.ndarray, dtype: str = "FP32"):
    client = grpcclient.InferenceServerClient(url)
    try:
        inp = grpcclient.InferInput(name, list(z.shape), dtype)
        inp.set_data_from_numpy(z)
        return client.infer("generator", [inp], outputs=[grpcclient.InferRequestedOutput("images")],
                            client_timeout=10).as_numpy("images")
    finally:
        client.close()


def _z(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 100)).astype(np.float32)


def test_logs_its_urls_on_loopback(server):
    text = "".join(server.stdout)
    assert f"http://127.0.0.1:{server.http}/v2/models/generator" in text
    assert f"127.0.0.1:{server.grpc}" in text and f"http://127.0.0.1:{server.metrics}/metrics" in text
    assert "generator.fp32.onnx (ort, fp32)" in text
    assert server.tree, "tritonserver should run as a child of gantool serve"


def test_bench_load_rows_are_ok_and_every_answer_matches_eager(server, exported_dir, tmp_path):
    out = tmp_path / "bench.json"
    r = run_cli("bench", "--exported", str(exported_dir), "--backends", "triton", "--precisions", "fp32",
                "--url", server.url, "--triton-model", "generator", "--concurrency", "1,4", "--batch-sizes", "1,2",
                "--duration", "1", "--json", str(out), "--plot", str(tmp_path / "bench.png"), timeout=120)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "bench.png").stat().st_size > 0  # the load rows in the same plot as in-process rows
    report = json.loads(out.read_text())
    from gantool.bench.report import validate

    validate(report)
    rows = report["results"]
    assert sorted((x["batch"], x["concurrency"]) for x in rows) == [(1, 1), (1, 4), (2, 1), (2, 4)]
    for x in rows:
        load = x["load"]
        assert x["status"] == "ok" and x["mode"] == "load" and x["parity"]["passed"], x
        assert load["errors"] == 0 and load["wrong"] == 0 and load["requests"] > 0
        assert load["checked"] == load["requests"]  # every answer, against eager for its own z
        assert x["samples_per_s"] == pytest.approx(load["requests"] * x["batch"] / load["duration_s"], rel=0.02)
        assert load["server_requests"] >= load["requests"] and load["executions"] > 0
        assert sum(int(k) * v for k, v in load["batch_sizes"].items()) == load["server_requests"] * x["batch"]
        assert load["queue_ms"] is not None and load["compute_infer_ms"] > 0
    c4 = next(x for x in rows if x["concurrency"] == 4 and x["batch"] == 1)
    assert c4["load"]["mean_batch"] > 1.5, c4["load"]  # the dynamic batcher joined concurrent requests
    assert "triton c4 b1:" in r.stdout and "requests/s" in r.stdout


def test_bad_requests_get_an_error_and_the_server_keeps_serving(server, eager):
    good = _z(3, seed=1)
    bad = {
        "wrong input name": lambda: _infer(server.url, "x", _z(2)),
        "wrong shape": lambda: _infer(server.url, "z", np.zeros((2, 99), np.float32)),
        "wrong dtype": lambda: _infer(server.url, "z", _z(2).astype(np.float64), "FP64"),
        "batch above max_batch_size": lambda: _infer(server.url, "z", _z(MAX_BATCH + 1)),
        "empty batch": lambda: _infer(server.url, "z", np.zeros((0, 100), np.float32)),
    }
    for what, call in bad.items():
        with pytest.raises(InferenceServerException) as e:
            call()  # each call is bounded by its client_timeout; a hang would read "Deadline Exceeded"
        assert "deadline" not in str(e.value).lower(), (what, str(e.value))  # refused, not timed out
        out = _infer(server.url, "z", good)  # the next good request is served, and right
        np.testing.assert_allclose(out, eager(good), atol=1e-5, rtol=1e-4, err_msg=f"after {what}")


def test_nonfinite_z_is_served_and_leaves_its_batch_mates_alone(server, eager):
    """The documented contract: NaN/Inf in z are served (non-finite images for that request only);
    a good request batched together with it gets eager's answer."""
    from tritonclient.grpc.aio import InferenceServerClient, InferInput

    from gantool.serve.load import server_stats

    good, poisoned = _z(2, seed=2), _z(2, seed=3)
    poisoned[0, 0], poisoned[1, 5] = np.nan, np.inf

    async def both():
        client = InferenceServerClient(server.url)
        try:
            calls = []
            for z in (good, poisoned):
                inp = InferInput("z", list(z.shape), "FP32")
                inp.set_data_from_numpy(z)
                calls.append(client.infer("generator", [inp], client_timeout=10))
            return [r.as_numpy("images") for r in await asyncio.gather(*calls)]
        finally:
            await client.close()

    before = server_stats(server.url, "generator", 10)
    out_good, out_poisoned = asyncio.run(both())
    after = server_stats(server.url, "generator", 10)
    assert int(after["execution_count"]) - int(before["execution_count"]) == 1  # one batch held both requests
    np.testing.assert_allclose(out_good, eager(good), atol=1e-5, rtol=1e-4)
    assert out_poisoned.shape == (2, 1, 28, 28) and not np.isfinite(out_poisoned).all()


def test_sigterm_stops_cleanly_ports_and_processes_gone(exported_dir):
    """Its own server: the module's `server` fixture is never stopped by a test, so any order works."""
    own = ServeProcess(exported_dir, "--max-batch-size", str(MAX_BATCH))
    try:
        code, _ = own.stop(signal.SIGTERM)  # bounded: ServeChild.stop waits STOP_TIMEOUT_S, then fails
        assert code == 0, own.stderr()
        own.assert_gone()
        assert "Traceback" not in own.stderr()
    finally:
        if own.proc.poll() is None:
            own.kill()


def test_sigkilled_server_makes_bench_fail_in_one_line_and_keeps_earlier_rows(exported_dir, tmp_path):
    s = ServeProcess(exported_dir, "--max-batch-size", str(MAX_BATCH))
    out = tmp_path / "bench.json"
    bench = subprocess.Popen([sys.executable, "-m", "gantool", "bench", "--exported", str(exported_dir),
                              "--backends", "triton", "--precisions", "fp32", "--url", s.url, "--triton-model",
                              "generator", "--concurrency", "1,4", "--batch-sizes", "1", "--duration", "3",
                              "--json", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert list(Path(s.tmp).glob("gantool-serve-*/workspace")), "PyTriton's workspace is not in the child's TMPDIR"
        deadline = time.monotonic() + 90
        seen = ""
        progress, out_lines = LineReader(bench.stderr), LineReader(bench.stdout)
        while "concurrency 4" not in seen and time.monotonic() < deadline:
            line = progress.get(deadline - time.monotonic())  # progress lines: the c4 level has started
            if not line:
                break
            seen += line
        assert "concurrency 4" in seen, f"waited 90 s for bench's 'concurrency 4' progress line; saw: {seen!r}"
        time.sleep(1.0)
        s.kill()
        try:  # bounded: each request times out after 10 s, 3 in a row end a client
            bench.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail("bench did not exit within 60 s of the server's SIGKILL")
        stdout = "".join(iter(lambda: out_lines.get(5) or "", ""))
        stderr = seen + "".join(iter(lambda: progress.get(5) or "", ""))  # and the rest of its stderr
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(10)
        if s.proc.poll() is None:
            s.kill()
    assert not Path(s.tmp).exists(), "the killed server left its TMPDIR (log, PyTriton workspace) behind"
    # one error line, after progress lines and bench's own warnings (e.g. a busy machine's load)
    lines = stderr.strip().splitlines()
    assert bench.returncode == 1 and "Traceback" not in stdout + stderr, stderr
    assert lines[-1].startswith("error: ") and "row(s) failed" in lines[-1], stderr
    assert all(ln.startswith(("bench: ", "warning: ")) for ln in lines[:-1]), stderr
    rows = {x["concurrency"]: x for x in json.loads(out.read_text())["results"]}
    assert rows[1]["status"] == "ok" and rows[1]["load"]["requests"] > 0  # measured before the kill: kept
    assert rows[4]["status"] == "error" and rows[4]["load"]["errors"] > 0, rows[4]
    s.assert_gone()


def test_port_in_use_artifact_missing_and_no_extra_are_one_line(exported_dir, monkeypatch):
    from typer.testing import CliRunner

    from gantool.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_cli("serve", "--exported", str(exported_dir), "--grpc-port", str(port), "--http-port", "0")
        assert_one_line_error(r, "--http-port 0")
        r = run_cli("serve", "--exported", str(exported_dir), "--grpc-port", str(port))
        assert_one_line_error(r, f"--grpc-port {port}", "already in use")
    assert_one_line_error(run_cli("serve", "--artifact", str(exported_dir / "missing.onnx")), "does not exist")
    assert_one_line_error(run_cli("serve", "--exported", str(exported_dir), "--backend", "tensorrt"), "tensorrt")
    monkeypatch.setitem(sys.modules, "pytriton", None)  # as if the serve extra were not installed
    r = CliRunner().invoke(app, ["serve", "--exported", str(exported_dir)])
    assert_one_line_error(r, "pip install 'gantool[serve]'")


def test_demo_runs_serve_only_when_asked_and_reports_its_rows(tmp_path):
    """The demo's serve stage (~25 s with a real server; `make demo` leaves it out): planned only
    for --stages ...,serve, with bench's load rows read back into REPORT.md."""
    from gantool.demo import DemoOptions, plan_stages, read_serve, to_markdown

    names = lambda stages: [s.name for s, _ in plan_stages(DemoOptions(out=tmp_path, stages=stages), "new")]  # noqa: E731
    assert names(("train", "bench")) == ["train", "export", "verify", "eval", "bench"]
    assert names(("serve",))[-1] == "serve"
    row = {"backend": "triton", "batch": 1, "concurrency": 16, "samples_per_s": 900.0, "status": "ok",
           "load": {"requests_per_s": 900.0, "client_latency_ms": {"p50": 15.0, "p99": 33.0}, "errors": 0,
                    "checked": 1800, "wrong": 0, "queue_ms": 4.0, "compute_infer_ms": 7.0, "mean_batch": 8.0}}
    (tmp_path / "bench_serve.json").write_text(json.dumps({"results": [row]}))
    res, text = read_serve(tmp_path, 0.0)
    assert "c16 900 samples/s p99 33.0 ms, 0 errors, 1800 answers checked (0 wrong)" in text
    md = to_markdown({"out": str(tmp_path), "created": "now", "total_seconds": 1.0,
                      "machine": {"cpu": "x", "cpu_count": 2, "threads": 2, "isa": {}, "gpus": [], "platform": "p",
                                  "versions": {}, "onnxruntime_providers": []},
                      "stages": [{"name": "serve", "status": "ok", "seconds": 25.0, "summary": text, "result": res}]})
    assert "| 16 | 900 | 15 | 33 | 4 | 7 | 8 | 0 | 1800 (0) |" in md


# ---- served answers judged like in-process rows; one model name, or discovery (issue 35.4, 35.5) ----

@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory, checkpoint_path):
    """A static int8 ONNX export of the fixture checkpoint (verified by export)."""
    d = tmp_path_factory.mktemp("int8")
    r = gantool_cli("export", "--checkpoint", checkpoint_path, "--format", "onnx", "--precision", "int8",
                    "--quantization", "static", "--calibration-samples", "256", "--out", d)
    assert r.exit_code == 0, r.output
    return d


@pytest.mark.parametrize("broken", [False, True], ids=["good-int8", "weight-scale-x10"])
def test_a_served_int8_model_is_judged_by_int8_bulk_bounds(int8_dir, checkpoint_path, tmp_path, broken):
    """int8's per-pixel atol (2.0) passes an all-zero answer; the served row is now judged like an
    in-process int8 row: SQNR, p99.9 and mean over its pooled answers. The x10 file passes atol and
    fails SQNR. The good file's row needs no --precisions: bench reads int8 from the served config."""
    d = weight_scale_x10(int8_dir, tmp_path / "x10") if broken else int8_dir
    s = ServeProcess(d, "--artifact", str(d / "generator.int8.onnx"), "--max-batch-size", str(MAX_BATCH))
    out = tmp_path / "bench.json"
    try:
        assert "generator.int8.onnx (ort, int8)" in "".join(s.stdout)
        r = run_cli("bench", "--exported", str(d), "--checkpoint", str(checkpoint_path), "--backends", "triton",
                    *(["--precisions", "int8"] if broken else []), "--url", s.url, "--concurrency", "1",
                    "--batch-sizes", "4", "--duration", "1", "--json", str(out), timeout=120)
    finally:
        if s.proc.poll() is None:
            s.stop(signal.SIGTERM)
        s.assert_gone()
    row, = json.loads(out.read_text())["results"]
    assert row["precision"] == "int8" and row["server"]["served_dtype"] == "int8", row
    assert row["server"]["artifact"] == "generator.int8.onnx"
    assert row["parity"]["bulk"]["z"] >= 64 and row["load"]["wrong"] == 0  # every answer within atol
    if broken:
        assert r.exit_code == 1 and row["status"] == "parity-failed" and "SQNR" in row["reason"], (row, r.stderr)
        assert "row(s) failed" in r.stderr.strip().splitlines()[-1]
    else:
        assert r.exit_code == 0 and row["status"] == "ok" and row["parity"]["passed"], (row, r.output)
        assert "served int8: bulk bounds pass" in r.stdout


def test_bench_finds_the_served_model_and_its_defaults_never_crash_on_remote(server, exported_dir, tmp_path,
                                                                            monkeypatch):
    """The README's load-test command without --triton-model and --precisions, on a CPU that
    multiplies bf16 (faked): bench used to ask torch about a device named "remote" and crash, and
    looked for a model 'generator_onnx' where gantool serve serves 'generator'."""
    monkeypatch.setattr("gantool.device.cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    out = tmp_path / "bench.json"
    r = gantool_cli("bench", "--exported", exported_dir, "--backends", "triton,ort", "--url", server.url,
                    "--concurrency", "1", "--batch-sizes", "1", "--duration", "0.5", "--min-time", "0",
                    "--min-repeats", "2", "--warmup", "0", "--no-interleave", "--json", out)
    assert r.exit_code == 0, r.stdout + r.stderr
    rows = json.loads(out.read_text())["results"]
    served = [(x["precision"], x["status"], x["artifact"]) for x in rows if x["backend"] == "triton"]
    assert served == [("fp32", "ok", f"{server.url}/generator")], served  # only what the server serves
    assert {x["precision"] for x in rows if x["backend"] == "ort"} >= {"fp32", "bf16"}  # local defaults


def test_a_missing_or_ambiguous_model_names_the_ready_ones_and_the_option():
    from gantool.errors import GantoolError
    from gantool.runners.triton_runner import find_model

    class Client:
        def __init__(self, ready):
            self.ready = ready

        def is_model_ready(self, name, client_timeout=None):
            return name in self.ready

        def get_model_repository_index(self, as_json=True, client_timeout=None):
            return {"models": [{"name": n, "state": "READY"} for n in self.ready] + [{"name": "old", "state": "UNAVAILABLE"}]}

    assert find_model(Client(["generator"]), "h:1", None) == "generator"
    assert find_model(Client(["a", "b"]), "h:1", "b") == "b"
    with pytest.raises(GantoolError, match=r"holds 2 ready models \(generator_onnx, generator_torchscript\): pass --triton-model"):
        find_model(Client(["generator_torchscript", "generator_onnx"]), "h:1", None)
    with pytest.raises(GantoolError, match=r"no ready model 'generator_onnx' \(ready: generator\); pass --triton-model"):
        find_model(Client(["generator"]), "h:1", "generator_onnx")


# ---- readiness that tells the truth (issue 35.6) ------------------------------------------------

def _first_ready_then_infer(exported_dir) -> dict:
    """Start `gantool serve` and poll /v2/health/ready (HTTP) and gRPC ServerReady at 20 Hz from the
    process start; on the first ready answer from either, send one request. Bounded: the server is
    killed after START_TIMEOUT_S without a ready answer."""
    import urllib.request

    from gantool.serve.child import START_TIMEOUT_S
    from gantool.serve.env import free_ports

    http, grpc, metrics = free_ports(3)
    tmp = tempfile.mkdtemp(prefix="gantool-ready-")  # the server's TMPDIR, removed below however it ends
    proc = subprocess.Popen([sys.executable, "-m", "gantool", "serve", "--exported", str(exported_dir),
                             "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "TMPDIR": tmp})
    seen: dict = {"polls": 0}
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None and "ready" not in seen:
            seen["polls"] += 1
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=0.2).status == 200:
                    seen["ready"] = "HTTP /v2/health/ready"
            except OSError:
                pass
            if "ready" not in seen:
                try:
                    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
                    try:
                        if client.is_server_ready(client_timeout=0.2):
                            seen["ready"] = "gRPC ServerReady"
                    finally:
                        client.close()
                except InferenceServerException:
                    pass
            if "ready" not in seen:
                time.sleep(0.05)
        assert "ready" in seen, f"no ready answer on HTTP or gRPC within {START_TIMEOUT_S:.0f} s (exit {proc.poll()})"
        try:
            out = _infer(f"127.0.0.1:{grpc}", "z", _z(2))
            seen["request"] = f"ok {out.shape}"
        except InferenceServerException as e:
            seen["request"] = f"failed: {e}"
        return seen
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                for pid in [proc.pid, *descendants(proc.pid)]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_first_ready_answer_means_the_model_answers(exported_dir):
    """PyTriton used to start tritonserver without the model and load it after: /v2/health/ready said
    ready ~2.5 s before /v2/models/generator/ready, and a request sent then got 'unknown model'."""
    for start in range(3):
        seen = _first_ready_then_infer(exported_dir)
        assert seen["request"] == "ok (2, 1, 28, 28)", (start, seen)
        assert seen["polls"] > 1, seen  # it was polled while starting, not found ready at once
