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


class FakeServer:
    """A ServerCpu stand-in: the served load test's server took `per_s` CPU seconds a second."""

    def __init__(self, machine, per_s):
        self.machine, self.per_s, self.url, self.pids = machine, per_s, "127.0.0.1:8001", {4242}

    def seconds(self):
        return self.per_s * self.machine.t

    def describe(self):
        return "the server being measured (1 process(es): the one listening on port 8001 and its tree)"


def test_the_server_being_measured_is_not_other_work():
    """Issue 36.9: in a served load test the server's CPU time counted as "other processes", so bench blamed
    a busy machine for the very server it measured. Its processes' time is left out, and the line says so."""
    busy = FakeMachine([68.0, 67.0, 68.0, 67.5], other_per_s=1.6)  # 80 % of 2 cores besides bench itself
    assert "other processes used 80%" in warning_line(run(busy))
    served = FakeMachine([68.0, 67.0, 68.0, 67.5], other_per_s=1.6)
    w = MachineWatch("cpu", probe=served.probe, ticks=served.ticks, loadavg=lambda: (2.0, 2.0, 2.0),
                     clock=lambda: served.t, cores=2, server=FakeServer(served, 1.5))
    for n in ("start", "after triton", "end"):
        w.sample(n)
    c = w.conditions()
    assert c["warnings"] == [] and c["other_cpu_share"] == 0.05, c
    assert c["server_excluded"]["pids"] == [4242] and c["server_excluded"]["cpu_share"] == 0.75
    # and when the rest of the machine is busy too, the line says the server was left out
    loaded = FakeMachine([68.0, 67.0, 68.0, 67.5], other_per_s=3.0)
    w = MachineWatch("cpu", probe=loaded.probe, ticks=loaded.ticks, loadavg=lambda: (2.0, 2.0, 2.0),
                     clock=lambda: loaded.t, cores=2, server=FakeServer(loaded, 1.5))
    for n in ("start", "end"):
        w.sample(n)
    line = warning_line(w.conditions())
    assert "other processes used 75%" in line and "not counting the server being measured" in line


SERVER = """
import socket, subprocess, sys, time
if sys.argv[1] == "parent":  # like gantool serve: starts the process that listens
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2], "child", sys.argv[2]])
    child.wait()
else:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
    print(s.getsockname()[1], flush=True)
    end = time.time() + 30
    while time.time() < end:
        pass  # busy: the server's work
"""


def test_server_pids_finds_the_listener_its_gantool_parent_and_their_cpu(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from gantool.bench.watch import ServerCpu, server_pids

    # argv names gantool, as `python -m gantool serve` does; the listener is its child
    parent = subprocess.Popen([sys.executable, "-c", SERVER, "parent", SERVER, "gantool-serve-stand-in"],
                              stdout=subprocess.PIPE, text=True)
    pids: set[int] = set()
    try:
        port = int(parent.stdout.readline())
        pids = server_pids(port)
        assert parent.pid in pids and len(pids) == 2, pids
        assert os.getpid() not in pids
        cpu = ServerCpu(f"127.0.0.1:{port}")
        time.sleep(0.5)
        assert cpu.seconds() > 0.1 and cpu.pids == pids
        assert ServerCpu(f"example.com:{port}").seconds() == 0.0  # a remote server's CPU is not this machine's
    finally:
        for p in pids - {parent.pid}:  # the listener (this test started it)
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        parent.kill()
        parent.wait()
