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


# ---- a gate that fails when it cannot tell (issue 35.3) ----------------------------------------

def _paired(value, lo, hi):
    return {"value": value, "ci_low": lo, "ci_high": hi, "paired": True}


def test_a_fall_inside_a_wide_interval_is_undecided_not_a_pass():
    """A 50 % fall measured as [0.5, 1.95] against [1.9, 2.1] used to count as noise and pass."""
    base = _paired(2.0, 1.9, 2.1)
    v, why = gate.verdict(base, _paired(1.0, 0.5, 1.95), 0.3)
    assert v == "undecided" and "too wide" in why and "[0.500, 1.950]" in why, why
    assert gate.verdict(base, _paired(1.0, 0.9, 1.1), 0.3)[0] == "fail"  # a measured fall
    assert gate.verdict(base, _paired(1.9, 0.5, 3.0), 0.3) == ("ok", "")  # within the band, however wide
    rows = lambda sps, ratio: {"results": [_row("eager", 64, 100.0), dict(_row("ort", 64, sps), ratio=ratio)]}  # noqa: E731
    g = gate.compare(rows(100.0, {"median": 1.0, "ci_low": 0.5, "ci_high": 1.95, "n": 20}),
                     rows(200.0, {"median": 2.0, "ci_low": 1.9, "ci_high": 2.1, "n": 20}), 0.3)
    assert not g["passed"] and g["undecided"] == 1 and g["failed"] == 1


class JitteryMachine:
    """A fake clock: each round's slice of the fast row costs 0.5 ms or 4 ms (eager always 2 ms), so its
    per-round ratios are 4.0 or 0.5 and their median's interval is as wide as the spread."""

    def __init__(self):
        self.now, self.slices = 0.0, 0


class JitteryTimer:
    def __init__(self, machine, cost):
        self.machine, self.cost = machine, cost
        self.times, self.elapsed = [], 0.0

    def take(self, enough, rewarm=0):
        new, start = [], self.machine.now
        cost = self.cost(self.machine) if callable(self.cost) else self.cost
        while not enough(new, self.machine.now - start):
            self.machine.now += cost
            new.append(cost)
        self.elapsed += self.machine.now - start
        self.times += new
        return new


def test_rounds_on_a_jittery_fake_clock_give_an_interval_the_gate_calls_undecided():
    from gantool.bench.rounds import interleave, paired_ratio
    from gantool.bench.timing import StopRule

    m = JitteryMachine()

    def fast(machine):
        machine.slices += 1
        return 0.5e-3 if machine.slices % 5 in (1, 4) else 4e-3  # 40 % of rounds fast, 60 % slow

    rounds = interleave([JitteryTimer(m, 2e-3), JitteryTimer(m, fast)], StopRule(repeats=20), seed=0)
    r = paired_ratio(rounds, ref=0, row=1)
    assert r["median"] == pytest.approx(0.5) and r["ci_low"] == pytest.approx(0.5) and r["ci_high"] == pytest.approx(4.0)
    v, why = gate.verdict(_paired(2.0, 1.9, 2.1), _paired(r["median"], r["ci_low"], r["ci_high"]), 0.3)
    assert v == "undecided", why


@pytest.fixture
def jittery_then(monkeypatch):
    """The CLI's interleaved Timer on a fake clock: eager 2 ms a sample; ort 1 ms (a ratio of 2.0,
    interval [2, 2]) or, while state["wide"] says so for its n-th timer, 0.5 ms / 4 ms by round."""
    from gantool.bench import rows

    state = {"wide": lambda n: False, "ort_timers": 0}

    class Timer(rows.Timer):
        def __init__(self, runner, *a, **kw):
            super().__init__(runner, *a, **kw)
            self.slices = 0
            if runner.info.backend == "ort":
                state["ort_timers"] += 1
            self.wide = runner.info.backend == "ort" and state["wide"](state["ort_timers"])

        def take(self, enough, rewarm=0):
            new = super().take(enough, rewarm)
            self.slices += 1
            if self.runner.info.backend == "eager":
                t = 2e-3
            elif self.wide:
                t = 0.5e-3 if self.slices % 5 in (1, 4) else 4e-3
            else:
                t = 1e-3
            self.times[-len(new):] = [t] * len(new)
            return [t] * len(new)

    monkeypatch.setattr(rows, "Timer", Timer)
    return state


def test_cli_gate_remeasures_an_undecided_ratio_and_fails_when_it_stays_undecided(checkpoint_path, exported_dir,
                                                                                  tmp_path, jittery_then):
    args = ["--checkpoint", str(checkpoint_path), "--exported", str(exported_dir), "--backends", "eager,ort",
            "--precisions", "fp32", "--batch-sizes", "64", "--warmup", "0", "--min-time", "0", "--repeats", "20",
            "--device", "cpu", "--threads", "1"]
    base = tmp_path / "base.json"
    assert invoke(*args, "--json", str(base)).exit_code == 0
    jittery_then["wide"] = lambda n: True  # every ort timer, the re-measurement's too
    out = tmp_path / "cur.json"
    res = invoke(*args, "--json", str(out), "--compare", str(base), "--max-regression", "30%")
    assert_one_line_error(res, "ratio gate failed", "undecided", code=1, progress_prefix="bench: ")
    assert "undecided: ort fp32 latency b64" in res.stdout and "too wide" in res.stdout
    assert jittery_then["ort_timers"] == 3  # the baseline's, this run's, and the re-measurement's
    doc = json.loads(out.read_text())
    row, = [r for r in doc["gate"]["rows"] if r["ratio"] == "ort fp32 latency b64"]
    assert row["verdict"] == "undecided" and doc["gate"]["remeasured"]["rows"] == ["ort fp32 latency 64"]
    ort, = [r for r in doc["results"] if r["backend"] == "ort"]
    assert ort["remeasured"] and ort["ratio"]["n"] == 80  # 4x the rounds


def test_cli_gate_passes_when_the_remeasurement_decides_within_the_band(checkpoint_path, exported_dir, tmp_path,
                                                                        jittery_then):
    args = ["--checkpoint", str(checkpoint_path), "--exported", str(exported_dir), "--backends", "eager,ort",
            "--precisions", "fp32", "--batch-sizes", "64", "--warmup", "0", "--min-time", "0", "--repeats", "20",
            "--device", "cpu", "--threads", "1"]
    base = tmp_path / "base.json"
    assert invoke(*args, "--json", str(base)).exit_code == 0
    jittery_then["wide"] = lambda n: n == 2  # this run's ort timer only; the re-measurement is steady
    res = invoke(*args, "--compare", str(base), "--max-regression", "30%")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "re-measured 1 undecided ratio(s)" in res.stdout


def test_cli_gate_with_real_timings_fails_a_runner_slowed_2x_in_uneven_rounds(checkpoint_path, exported_dir,
                                                                             tmp_path, monkeypatch):
    """Real timings: ort's runner runs its call k times, k fixed per slice. The baseline runs k=1.5 on
    average (1, 2 alternating); the current run slows ort ~2x more, unevenly: k = 1 in 40 % of the rounds,
    4 in 60 %. Its median ratio falls far past the band while the fast rounds stretch the interval up
    into the baseline's: the old rule called that noise and passed."""
    from gantool.bench import rows, suite

    real_load = suite.load_runner
    plan = {"ks": [1, 2], "slice": 0, "k": 1}

    def load(source, name=None, **kw):
        r = real_load(source, name, **kw)
        if name == "ort":
            run = r.run
            r.run = lambda x: [run(x) for _ in range(plan["k"])][-1]
        return r

    class Timer(rows.Timer):
        def take(self, enough, rewarm=0):
            if self.runner.info.backend == "ort":
                plan["k"] = plan["ks"][plan["slice"] % len(plan["ks"])]
                plan["slice"] += 1
            try:
                return super().take(enough, rewarm)
            finally:
                plan["k"] = 1

    monkeypatch.setattr(suite, "load_runner", load)
    monkeypatch.setattr(rows, "Timer", Timer)
    args = ["--checkpoint", str(checkpoint_path), "--exported", str(exported_dir), "--backends", "eager,ort",
            "--precisions", "fp32", "--batch-sizes", "64", "--warmup", "2", "--min-time", "0", "--repeats", "20",
            "--device", "cpu", "--threads", "1"]
    base = tmp_path / "base.json"
    assert invoke(*args, "--json", str(base)).exit_code == 0
    plan.update(ks=[1, 4, 4, 1, 4], slice=0)
    out = tmp_path / "cur.json"
    res = invoke(*args, "--json", str(out), "--compare", str(base), "--max-regression", "30%")
    assert_one_line_error(res, "ratio gate failed", code=1, progress_prefix="bench: ")
    row, = [r for r in json.loads(out.read_text())["gate"]["rows"] if r["ratio"] == "ort fp32 latency b64"]
    assert row["verdict"] in ("fail", "undecided") and row["change"] < -0.3, row
