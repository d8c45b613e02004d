"""bench: the timing loop, every backend against eager, the CUDA guard, OOM rows, the JSON schema."""
from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import torch

from conftest import FakeRunner
from gantool.bench import suite as bench_mod
from gantool.bench import report as rep
from gantool.bench.stats import median_ci_ranks, summarize
from gantool.bench.suite import BenchConfig, run_bench
from gantool.bench.timing import StopRule, measure
from gantool.bench.backends import guard
from gantool.errors import ArtifactError, ConfigError
from gantool.model import Generator, flops_per_sample

FAST = dict(warmup=1, min_time=0.0, repeats=3, peak_probe=False)


class FakeClock:
    """bench's clock in tests: time passes only when a FakeRunner (conftest) runs, by its `delay` a
    call, so assertions are on ticks, never on how fast this machine is today."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    from gantool.bench import timing

    fake = FakeClock()
    monkeypatch.setattr(timing, "time", fake)  # gantool.bench.timing reads time.perf_counter only
    return fake


@pytest.fixture(scope="module")
def exported(checkpoint_path, tmp_path_factory) -> Path:
    """fp32 ONNX, TorchScript and AOTInductor (CPU) artifacts of the fixture checkpoint."""
    from gantool.export import export_artifacts

    out = tmp_path_factory.mktemp("exported")
    export_artifacts(checkpoint_path, ["onnx", "torchscript", "aoti"], out)
    return out


def test_measure_rotates_inputs_and_honours_min_repeats_and_min_time(clock):
    r = FakeRunner(delay=0.001, ticks=clock)  # 1 ms of fake time a call
    zs = [torch.randn(4, 100) for _ in range(3)]
    m = measure(r, zs, warmup=2, stop=StopRule(min_repeats=5, min_time=0.05, max_time=0.05))
    # kept timing until min_time had passed: 50 calls of 1 ms (51 where float sums land just under)
    assert len(m.times) in (50, 51) and m.times == pytest.approx(0.001)
    assert clock.now == pytest.approx(0.001 * (1 + 2 + len(m.times)))  # first call, warm-up, timed
    assert set(r.seen) == {id(z) for z in zs}  # every buffer was used, not one hot input
    assert m.timer == "perf_counter" and m.mode == "latency" and m.capture_s is None and m.replayed is None
    # first call and warm-up are not among the timed samples
    assert len(r.seen) == 1 + 2 + len(m.times)


def test_measure_stops_when_the_medians_ci_is_tight_or_at_the_cap(clock):
    steady = FakeRunner(delay=0.001, ticks=clock)
    m = measure(steady, [torch.randn(2, 100)], warmup=0, stop=StopRule(min_repeats=10, min_time=0.0, max_time=5.0))
    assert m.ci_met and len(m.times) == 10  # identical calls: the CI is tight at the first check
    rng = iter(torch.rand(100_000).tolist())
    noisy = FakeRunner(delay=lambda: 0.002 * next(rng), ticks=clock)  # 0-2 ms a call: never within 1e-6
    t0 = clock.now
    m = measure(noisy, [torch.randn(2, 100)], warmup=0,
                stop=StopRule(min_repeats=10, min_time=0.0, max_time=0.1, ci_target=1e-6))
    elapsed = clock.now - t0 - m.first_s  # the timed loop's ticks
    assert not m.ci_met and 0.1 <= elapsed < 0.1 + 0.002  # the cap stopped it, after the call that crossed it


def test_throughput_mode_times_blocks_of_back_to_back_calls(clock):
    r = FakeRunner(delay=0.0005, ticks=clock)
    m = measure(r, [torch.randn(2, 100)], warmup=2, stop=StopRule(repeats=4), mode="throughput")
    assert m.mode == "throughput" and m.calls_per_sample > 1 and len(m.times) == 4
    assert len(r.seen) == 1 + 2 + 4 * m.calls_per_sample
    assert m.times == pytest.approx(0.0005)  # per-call time: the block's time / its calls


def test_summary_reports_p99_only_from_100_samples():
    s = summarize([0.001] * 99, [50, 90, 99])
    assert s["percentiles"]["p99"] is None and "n=99 < 100" in s["percentile_notes"]["p99"]
    assert s["percentiles"]["p90"] == pytest.approx(0.001)
    assert summarize([0.001] * 100, [99])["percentiles"]["p99"] == pytest.approx(0.001)
    lo, hi = median_ci_ranks(100)
    assert (lo, hi) == (39, 60)  # the exact binomial interval's order statistics
    assert median_ci_ranks(5) is None  # no interval reaches 95% with 5 samples


def test_first_output_is_copied_before_a_graph_backend_reuses_its_buffer():
    class StaticOut(FakeRunner):  # like CUDA-graph replays: every call writes the same buffer
        buf = torch.zeros(2, 1, 28, 28)
        graph = True

        def run(self, x):
            return self.buf.copy_(super().run(x))

    r = StaticOut()
    zs = [torch.randn(2, 100) for _ in range(3)]
    m = measure(r, zs, warmup=2, stop=StopRule(repeats=3))
    assert torch.equal(m.first, FakeRunner().run(zs[0]))
    assert torch.equal(m.replayed, FakeRunner().run(zs[0]))  # the parity copy is of zs[0], after capture
    assert m.capture_s is not None and len(r.seen) == 1 + 3 + 1 + 2 + 3  # first, capture, replay, warm-up, timed


def test_measure_stops_at_repeats():
    r = FakeRunner()
    m = measure(r, [torch.randn(2, 100)], warmup=0, stop=StopRule(repeats=7, min_time=10))
    assert len(m.times) == 7


def test_fp32_rows_run_ieee_and_the_users_matmul_precision_comes_back(checkpoint_path, monkeypatch):
    seen = []

    def wrap(r):
        run = r.run
        r.run = lambda x: (seen.append(torch.get_float32_matmul_precision()), run(x))[1]
        return r

    _wrap_loader(monkeypatch, "eager", wrap)
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        report = run_bench(BenchConfig(checkpoint=checkpoint_path, backends=["eager"], precisions=["fp32", "tf32"],
                                       batch_sizes=[2], device="cpu", **FAST))
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(old)
    assert seen and set(seen) == {"highest"}
    by = {r["precision"]: r for r in report["results"]}
    assert by["fp32"]["options"]["float32_matmul_precision"] == "highest"
    assert by["tf32"]["status"] == "skipped" and "TF32" in by["tf32"]["reason"]


def test_every_cpu_backend_runs_and_agrees_with_eager(checkpoint_path, exported):
    backends = ["eager", "compile", "torchscript", "ort", "aoti"]
    report = run_bench(BenchConfig(checkpoint=checkpoint_path, exported=exported, backends=backends,
                                   precisions=["fp32"], batch_sizes=[1, 5], device="cpu", **FAST))
    rep.validate(report)
    rows = {(r["backend"], r["batch"]): r for r in report["results"]}
    assert set(rows) == {(b, n) for b in backends for n in (1, 5)}
    for r in rows.values():
        assert r["status"] == "ok", r
        assert r["parity"]["passed"] and r["parity"]["max_abs_err"] <= r["parity"]["atol"]
        assert r["samples_per_s"] == pytest.approx(r["batch"] / (r["median_ms"] / 1e3))
        assert r["gflops"] == pytest.approx(r["samples_per_s"] * report["model"]["flops_per_sample"] / 1e9)
        assert r["first_call_ms"] > 0 and r["repeats"] >= 3
    # ranks follow samples/s
    ranked = sorted((r for r in report["results"] if r["ranked"]), key=lambda r: r["rank"])
    assert [r["samples_per_s"] for r in ranked] == sorted((r["samples_per_s"] for r in ranked), reverse=True)
    env = report["environment"]
    assert env["threads"] >= 1 and env["cpu"] and env["versions"]["onnxruntime"][0].isdigit()


def _wrap_loader(monkeypatch, backend, wrap):
    real = bench_mod.load_runner

    def load(source, name=None, **kw):
        r = real(source, name, **kw)
        return wrap(r) if name == backend else r

    monkeypatch.setattr(bench_mod, "load_runner", load)


@pytest.mark.parametrize("corrupt", [lambda y: y + 0.05, lambda y: y.flatten().index_fill(0, torch.tensor([7]), float("nan")).reshape(y.shape)],
                         ids=["off-by-0.05", "one-nan"])
def test_a_backend_that_disagrees_with_eager_is_flagged_and_not_ranked(checkpoint_path, monkeypatch, corrupt):
    def wrap(r):
        run = r.run
        r.run = lambda x: corrupt(run(x))
        return r

    _wrap_loader(monkeypatch, "compile-reduce-overhead", wrap)
    # compile-reduce-overhead on CPU stands in for "some other backend"; patched before it compiles
    monkeypatch.setattr("gantool.runners.torch_runner.torch.compile", lambda m, **k: m)
    report = run_bench(BenchConfig(checkpoint=checkpoint_path, backends=["eager", "compile-reduce-overhead"],
                                   precisions=["fp32"], batch_sizes=[64], device="cpu", **FAST))
    rep.validate(report)
    bad = next(r for r in report["results"] if r["backend"] == "compile-reduce-overhead")
    good = next(r for r in report["results"] if r["backend"] == "eager")
    assert bad["status"] == "parity-failed" and not bad["ranked"] and bad["rank"] is None
    assert bad["parity"]["passed"] is False and bad["reason"]
    assert good["status"] == "ok" and good["rank"] == 1
    assert [b["backend"] for b in rep.summary(report)["best"]] == ["eager"]


def test_guard_never_lets_cpu_work_pass_as_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # past the no-device check
    assert guard("eager", "cuda", FakeRunner(device="cpu")) == ("error", "asked for cuda, but the runner loaded on cpu")
    status, reason = guard("ort-cuda", "cuda", FakeRunner(device="cuda", backend="ort-cuda", providers=["CPUExecutionProvider"]))
    assert status == "unavailable" and "CPUExecutionProvider" in reason and "CUDAExecutionProvider did not load" in reason
    assert "did not load" in guard("ort-trt", "cuda", FakeRunner(device="cuda", backend="ort-trt",
                                                                 providers=["CUDAExecutionProvider", "CPUExecutionProvider"]))[1]
    assert guard("ort", "cpu", FakeRunner(device="cpu", backend="ort", providers=["CPUExecutionProvider"])) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok_providers = FakeRunner(device="cuda", backend="ort-cuda", providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert guard("ort-cuda", "cuda", ok_providers)[0] == "unavailable"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine")
def test_cuda_backends_are_unavailable_rows_on_a_cpu_only_machine(checkpoint_path, exported):
    report = run_bench(BenchConfig(checkpoint=checkpoint_path, exported=exported,
                                   backends=["eager", "ort-cuda", "ort-cuda-graph", "ort"],
                                   precisions=["fp32"], batch_sizes=[2], device="cpu", **FAST))
    rep.validate(report)
    by = {r["backend"]: r for r in report["results"]}
    for b in ("ort-cuda", "ort-cuda-graph"):
        assert by[b]["status"] == "unavailable" and by[b]["device"] == "cuda"
        assert by[b]["samples_per_s"] is None and by[b]["median_ms"] is None and by[b]["reason"]
    assert by["ort"]["status"] == "ok" and by["eager"]["status"] == "ok"
    cuda = run_bench(BenchConfig(checkpoint=checkpoint_path, backends=["eager"], precisions=["fp32"],
                                 batch_sizes=[2], device="cuda", **FAST))
    row = cuda["results"][0]
    assert row["status"] == "unavailable" and "CUDA" in row["reason"] and row["samples_per_s"] is None


def test_a_batch_too_large_for_memory_is_one_row_the_rest_still_measured(checkpoint_path):
    report = run_bench(BenchConfig(checkpoint=checkpoint_path, backends=["eager"], precisions=["fp32"],
                                   batch_sizes=[2, 4_000_000_000, 3], device="cpu", **FAST))
    rep.validate(report)
    by = {r["batch"]: r for r in report["results"]}
    assert by[4_000_000_000]["status"] == "oom" and by[4_000_000_000]["reason"]
    assert by[2]["status"] == by[3]["status"] == "ok"


def test_a_runtime_oom_inside_run_is_caught(checkpoint_path, monkeypatch):
    def wrap(r):
        run = r.run

        def run_or_oom(x):
            if x.shape[0] >= 100:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return run(x)

        r.run = run_or_oom
        return r

    _wrap_loader(monkeypatch, "eager", wrap)
    report = run_bench(BenchConfig(checkpoint=checkpoint_path, backends=["eager"], precisions=["fp32"],
                                   batch_sizes=[4, 100], device="cpu", **FAST))
    by = {r["batch"]: r for r in report["results"]}
    assert by[100]["status"] == "oom" and "out of memory" in by[100]["reason"]
    assert by[4]["status"] == "ok"


def test_missing_precision_artifact_is_a_skipped_row_naming_the_export(checkpoint_path, exported):
    report = run_bench(BenchConfig(checkpoint=checkpoint_path, exported=exported, backends=["torchscript"],
                                   precisions=["fp32", "fp16"], batch_sizes=[2], device="cpu", **FAST))
    by = {r["precision"]: r for r in report["results"]}
    assert by["fp32"]["status"] == "ok"
    assert by["fp16"]["status"] == "skipped"
    assert "gantool export" in by["fp16"]["reason"] and "--dtype fp16" in by["fp16"]["reason"]


def test_bad_requests_raise_before_timing(checkpoint_path, tmp_path):
    with pytest.raises(ConfigError, match="unknown backend"):
        run_bench(BenchConfig(checkpoint=checkpoint_path, backends=["tensorflow"]))
    with pytest.raises(ConfigError, match="unknown precision"):
        run_bench(BenchConfig(checkpoint=checkpoint_path, backends=["eager"], precisions=["int4"]))
    with pytest.raises(ConfigError, match="> 0"):
        run_bench(BenchConfig(checkpoint=checkpoint_path, backends=["eager"], batch_sizes=[0]))
    with pytest.raises(ArtifactError, match="--format onnx"):
        run_bench(BenchConfig(checkpoint=checkpoint_path, exported=tmp_path, backends=["ort"]))
    with pytest.raises(ConfigError, match="--checkpoint"):
        run_bench(BenchConfig(backends=["eager"]))


def test_schema_accepts_a_report_and_rejects_broken_ones(checkpoint_path):
    report = run_bench(BenchConfig(checkpoint=checkpoint_path, backends=["eager"], precisions=["fp32"],
                                   batch_sizes=[2], device="cpu", warmup=0, repeats=2))
    doc = __import__("json").loads(rep.to_json(report))  # what --json writes
    rep.validate(doc)
    assert doc["peaks"] and doc["results"][0]["pct_peak"] > 0
    broken = []
    b = copy.deepcopy(doc); del b["results"][0]["median_ms"]; broken.append(b)  # noqa: E702
    b = copy.deepcopy(doc); b["results"][0]["ranked"] = False; broken.append(b)  # noqa: E702 ok but unranked
    b = copy.deepcopy(doc); b["results"][0]["status"] = "fast"; broken.append(b)  # noqa: E702
    b = copy.deepcopy(doc); b["results"][0]["batch"] = 0; broken.append(b)  # noqa: E702
    b = copy.deepcopy(doc); b["results"][0]["parity"]["passed"] = False; broken.append(b)  # noqa: E702
    b = copy.deepcopy(doc); del b["environment"]["versions"]["torch"]; broken.append(b)  # noqa: E702
    for b in broken:
        with pytest.raises(jsonschema.ValidationError):
            rep.validate(b)


def test_report_orders_by_samples_per_second_and_plots(checkpoint_path, tmp_path, monkeypatch):
    rows = [dict(backend=b, precision="fp32", device="cpu", batch=n, status=s, reason="" if s == "ok" else "x",
                 ranked=s == "ok", rank=None, samples_per_s=v, median_ms=1.0 if v else None, p90_ms=None,
                 p99_ms=None, first_call_ms=None, gflops=None, pct_peak=None, parity=None)
            for b, n, s, v in [("a", 1, "ok", 10.0), ("b", 1, "unavailable", None), ("c", 1, "ok", 30.0),
                               ("d", 64, "parity-failed", 99.0), ("a", 64, "ok", 20.0)]]
    assert [r["backend"] for r in rep.ordered(rows)] == ["c", "a", "a", "d", "b"]
    b64 = dict(rows[1], batch=64)
    collapsed = rep.collapse(rep.ordered(rows + [b64]))
    assert [(r["backend"], r["batch"]) for r in collapsed][-1] == ("b", "1,64")  # one line, both batches
    assert rep.fmt_time(0.0123) == "12.3 µs" and rep.fmt_time(4.56) == "4.56 ms" and rep.fmt_time(1200) == "1.2 s"
    report = {"environment": {"device": "cpu", "device_name": "X", "threads": 2, "versions": {"torch": "t"}},
              "model": {"flops_per_sample": flops_per_sample(Generator(), 100)}, "results": rows, "peaks": []}
    assert rep.plot(report, tmp_path / "p.png") is None
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    # without rich the table is plain text; without matplotlib the plot is a note, not a crash
    monkeypatch.setitem(__import__("sys").modules, "rich", None)
    monkeypatch.setitem(__import__("sys").modules, "rich.console", None)
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    out = tmp_path / "t.txt"
    with open(out, "w") as f:
        rep.print_table(report, f)
    text = out.read_text().splitlines()
    assert "samples/s" in text[2] and text[3].split()[0] == "c"
    assert max(map(len, text)) <= 100
    assert "matplotlib is not installed" in rep.plot(report, tmp_path / "q.png")
    assert not (tmp_path / "q.png").exists()


def _bench_plot_colours(report):
    """{backend: {colours}} of every line and legend entry in every panel of the bench plot's Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    fig = rep.figure(report, plt)
    seen: dict[str, set[str]] = {}
    try:
        for ax in fig.axes:
            for line in ax.get_lines():
                if not line.get_label().startswith("_"):
                    seen.setdefault(line.get_label().split()[0], set()).add(to_hex(line.get_color()))
            legend = ax.get_legend()
            for handle, text in zip(legend.legend_handles, legend.get_texts()):
                colour = handle.get_color() if hasattr(handle, "get_color") else handle.lines[0].get_color()
                seen.setdefault(text.get_text().split()[0], set()).add(to_hex(colour))
        return seen, len(fig.axes)
    finally:
        plt.close(fig)


def test_bench_plot_gives_each_backend_one_colour_in_every_panel():
    """Issue 36.4: bench.png showed a backend in one colour in the samples/s panel and another in the
    paired-ratio panel (each panel cycled colours over its own lines). One colour per backend, the same in
    every panel and every plot; precision and mode are told by line style and marker."""
    def row(backend, precision, batch, sps, ratio=True, mode="latency"):
        return dict(backend=backend, precision=precision, device="cpu", batch=batch, status="ok", reason="",
                    ranked=True, samples_per_s=sps, mode=mode,
                    ratio={"median": sps / 100, "ci_low": sps / 110, "ci_high": sps / 90} if ratio else None)
    rows = [row("eager", "fp32", b, 100.0 * b, ratio=False) for b in (1, 64)]
    rows += [row(be, pr, b, 90.0 * b) for be in ("ort", "torchscript", "openvino") for pr in ("fp32", "bf16")
             for b in (1, 64)]
    rows += [row("ort", "fp32", 64, 5000.0, ratio=False, mode="throughput")]
    report = {"environment": {"device": "cpu", "device_name": "X"}, "results": rows}
    seen, panels = _bench_plot_colours(report)
    assert panels == 2
    assert set(seen) == {"eager", "ort", "torchscript", "openvino"}
    assert all(len(c) == 1 for c in seen.values()), seen  # one colour a backend, across both panels
    assert len({next(iter(c)) for c in seen.values()}) == 4  # and four backends, four colours
    # a second plot with other backends keeps each backend's colour
    other, _ = _bench_plot_colours({**report, "results": [r for r in rows if r["backend"] in ("eager", "openvino")]})
    assert other == {k: seen[k] for k in other}
