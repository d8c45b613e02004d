"""bench says when the machine slowed down or filled with other work during the run (issue 26.1)."""
from __future__ import annotations

from gantool.bench.watch import MAX_DRIFT, MachineWatch, warning_line


class FakeMachine:
    """A probe that reads from a script of GFLOP/s, CPU ticks that grow as told, a clock of whole seconds."""

    def __init__(self, gflops, other_per_s=0.0, own_per_s=2.0):
        self.gflops, self.t = list(gflops), 0.0
        self.other, self.own = other_per_s, own_per_s

    def probe(self, device):
        self.t += 10.0  # each stretch between probes is 10 s of rows
        return self.gflops.pop(0)

    def ticks(self):
        return ((self.other + self.own) * self.t, self.own * self.t)

    def watch(self):
        return MachineWatch("cpu", probe=self.probe, ticks=self.ticks, loadavg=lambda: (2.0, 2.0, 2.0),
                            clock=lambda: self.t, cores=2)


def run(machine, names=("start", "after eager", "after ort", "end")):
    w = machine.watch()
    for n in names:
        w.sample(n)
    return w.conditions()


def test_a_steady_quiet_machine_gets_no_warning():
    c = run(FakeMachine([68.7, 66.0, 69.1, 67.5]))
    assert c["warnings"] == [] and warning_line(c) is None
    assert c["peak_spread"] <= MAX_DRIFT and c["other_cpu_share"] == 0.0
    assert [p["when"] for p in c["probes"]] == ["start", "after eager", "after ort", "end"]


def test_a_machine_that_slows_down_is_said_with_both_peaks():
    # the VM: the peak fell from 68.7 to 30.1 GFLOP/s while every row still said ok
    c = run(FakeMachine([68.7, 67.9, 30.1, 30.4]))
    assert c["peak_spread"] > 1.2
    line = warning_line(c)
    assert line.startswith("bench: warning: the machine's speed moved during this run: matmul peak 30.1 GFLOP/s "
                           "(after ort) vs 68.7 (start)"), line
    # 16 % moves: just past the bound still warns, 10 % does not
    assert run(FakeMachine([50.0, 43.0]), ("start", "end"))["warnings"]
    assert not run(FakeMachine([50.0, 45.5]), ("start", "end"))["warnings"]


def test_other_work_on_the_machine_is_said_with_its_share():
    # bench's own 2 threads use 2 cores' worth; another job takes one more core: half the machine
    c = run(FakeMachine([60.0, 60.0, 60.0, 60.0], other_per_s=1.0))
    assert c["other_cpu_share"] == 0.5
    assert "other processes used 50% of this machine's 2 cores" in warning_line(c)


def test_read_bench_puts_the_warning_beside_the_numbers(tmp_path):
    import json
    import time

    from gantool.demo import read_bench

    doc = {"environment": {"device": "cpu"}, "results": [
        {"backend": "ort", "precision": "fp32", "batch": 64, "samples_per_s": 1000.0, "median_ms": 64.0,
         "ranked": True, "reason": None}],
        "conditions": run(FakeMachine([68.7, 30.1]), ("start", "end"))}
    (tmp_path / "bench.json").write_text(json.dumps(doc))
    res, text = read_bench(tmp_path, time.time() - 60)
    assert "batch 64 ort fp32 1,000/s (bench: warning: the machine's speed moved" in text
    assert res["conditions"]["warnings"]
