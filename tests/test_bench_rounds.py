"""Interleaved rounds and paired ratios (issue 24): the design's proof is a machine that drifts."""
from __future__ import annotations

import statistics

import pytest

from gantool.bench import gate
from gantool.bench.rounds import interleave, paired_ratio, ratio_summary, round_order
from gantool.bench.timing import StopRule


class DriftingMachine:
    """Virtual time; every call costs its row's base time x (1 + drift x now): the machine slows down
    linearly while bench runs (as these VMs do by 10-20 % within minutes)."""

    def __init__(self, drift_per_s: float):
        self.now, self.drift = 0.0, drift_per_s

    def call(self, base_s: float) -> float:
        cost = base_s * (1 + self.drift * self.now)
        self.now += cost
        return cost


class FakeTimer:
    """gantool.bench.timing.Timer's interface (take, times, elapsed) on the drifting machine."""

    def __init__(self, machine: DriftingMachine, base_s: float):
        self.machine, self.base = machine, base_s
        self.times: list[float] = []
        self.elapsed = 0.0

    def take(self, enough, rewarm=0):
        new, start = [], self.machine.now
        while not enough(new, self.machine.now - start):
            new.append(self.machine.call(self.base))
        self.elapsed += self.machine.now - start
        self.times += new
        return new


def test_interleaving_recovers_the_true_ratio_on_a_drifting_machine_where_sequential_order_does_not():
    # eager takes 2 ms a call, the fast backend 1 ms: the true speed ratio is 2.0. The machine gets 2x
    # slower every 10 s; each row gets ~5 s of samples.
    stop = StopRule(min_repeats=10, min_time=5.0, max_time=5.0, ci_target=0.0)

    seq = DriftingMachine(0.1)
    eager, fast = FakeTimer(seq, 2e-3), FakeTimer(seq, 1e-3)
    for t in (eager, fast):  # sequential: every sample of eager, then every sample of the fast row
        t.take(lambda new, el, t=t: stop.done(t.times + new, el))
    sequential = statistics.median(eager.times) / statistics.median(fast.times)
    assert abs(sequential / 2.0 - 1) > 0.25, sequential  # the drift reads as a speed difference

    il = DriftingMachine(0.1)
    timers = [FakeTimer(il, 2e-3), FakeTimer(il, 1e-3)]
    rounds = interleave(timers, stop, seed=0, slice_s=0.05, min_calls=3)
    r = paired_ratio(rounds, ref=0, row=1)
    assert abs(r["median"] / 2.0 - 1) < 0.03, r
    assert r["ci_low"] <= 2.0 * 1.03 and r["ci_high"] >= 2.0 * 0.97 and r["n"] == len(rounds) > 50
    # both rows ran in every round, each round in its own order
    assert all(sorted(x["order"]) == [0, 1] and None not in x["median_s"] for x in rounds)
    assert {tuple(x["order"]) for x in rounds} == {(0, 1), (1, 0)}


def test_the_order_is_seeded_and_replayable():
    a = [round_order(5, seed=7, r=i) for i in range(20)]
    assert a == [round_order(5, seed=7, r=i) for i in range(20)]
    assert a != [round_order(5, seed=8, r=i) for i in range(20)]
    assert all(sorted(o) == list(range(5)) for o in a) and len({tuple(o) for o in a}) > 5
    m = DriftingMachine(0.0)
    rounds = interleave([FakeTimer(m, 1e-3) for _ in range(3)], StopRule(repeats=4), seed=7)
    assert [x["order"] for x in rounds] == [round_order(3, 7, i) for i in range(4)]


def test_paired_ratio_interval_is_the_order_statistics_one():
    # n = 10: the distribution-free 95 % interval of the median is [x(2), x(9)] (1-based)
    s = ratio_summary([float(v) for v in (7, 3, 10, 1, 5, 9, 2, 8, 6, 4)])
    assert s == {"median": 5.5, "ci_low": 2.0, "ci_high": 9.0, "n": 10}
    assert ratio_summary([1.0, 2.0])["ci_low"] is None  # too few rounds for any interval
    assert ratio_summary([]) is None


def _report(ort_ratio, lo, hi):
    row = lambda b, sps, ratio=None: {"backend": b, "precision": "fp32", "batch": 64, "mode": "latency",  # noqa: E731
                                     "status": "ok", "samples_per_s": sps, "ratio": ratio}
    return {"results": [row("eager", 100.0), row("ort", 100.0 * ort_ratio,
                                                  {"median": ort_ratio, "ci_low": lo, "ci_high": hi, "n": 40})]}


def test_gate_weighs_both_intervals():
    base = _report(2.0, 1.9, 2.1)
    # fell 12 % past a 10 % band, but the intervals overlap: too wide to tell, and undecided is no pass
    noisy = gate.compare(_report(1.76, 1.6, 1.95), base, 0.10)
    assert not noisy["passed"] and noisy["rows"][0]["verdict"] == "undecided"
    # a real 2x slowdown of the backend: fails, the line names the row and both ratios
    slow = gate.compare(_report(1.0, 0.97, 1.03), base, 0.10)
    assert not slow["passed"] and slow["rows"][0]["verdict"] == "fail"
    assert slow["rows"][0]["why"].startswith("1.000 now vs 2.000 in the baseline (-50%, band -10%)")
    assert "do not overlap" in slow["rows"][0]["why"]
    # within the band: ok whatever the intervals
    assert gate.compare(_report(1.95, 1.5, 2.4), base, 0.10)["rows"][0]["verdict"] == "ok"


def test_print_gate_says_which_and_why(capsys):
    import sys

    g = gate.compare(_report(1.0, 0.97, 1.03), _report(2.0, 1.9, 2.1), 0.10)
    gate.print_gate(g, "base.json", sys.stdout)
    out = capsys.readouterr().out
    assert "fail: ort fp32 latency b64: 1.000 now vs 2.000 in the baseline" in out


@pytest.mark.parametrize("bad", [None, {"median": 2.0, "ci_low": None, "ci_high": None, "n": 3}])
def test_a_ratio_without_interval_fails_past_the_band_as_before(bad):
    base = _report(2.0, 1.9, 2.1)
    cur = _report(1.0, None, None)
    cur["results"][1]["ratio"] = bad if bad is None else dict(bad, median=1.0)
    g = gate.compare(cur, base, 0.10)
    assert g["rows"][0]["verdict"] == "fail" and "no interval" in g["rows"][0]["why"]
