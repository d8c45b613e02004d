"""Did the machine stay the same while bench ran? The matmul peak probed before, between and after the
backends, and the CPU time other processes took, so a slowed or busy machine is said, not hidden behind
tight intervals (issue 26: a VM whose eager b64 fell from 14.4k to 1.0k samples/s still said `ok`).

    watch = MachineWatch("cpu")
    watch.sample("start"); ...rows...; watch.sample("after eager"); ...; watch.sample("end")
    report["conditions"] = watch.conditions()     # probes, spread, other work, warnings
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable

# The peak may move this much (best / worst - 1) before bench says the machine changed speed: repeat
# probes on a quiet 2-core VM agree within ~5 %; the slowdowns worth a warning were 2x and more.
MAX_DRIFT = 0.15
# Share of the machine's CPU time that other processes may take during the run before bench says so.
MAX_OTHER = 0.25
PROBE_S = 0.2


def _cpu_ticks() -> tuple[float, float] | None:
    """(busy seconds of the whole machine, this process's CPU seconds) from /proc; None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    t = os.times()
    return (sum(fields[:8]) - idle) / hz, t.user + t.system + t.children_user + t.children_system


# --- the server being measured is not "other work" (issue 36.9) ------------------------------------------
LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "::1", "[::1]", "")
SERVER_WORDS = ("gantool", "tritonserver", "triton_python_backend", "pytriton")


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on TCP `port` (/proc/net/tcp and tcp6; state 0A = LISTEN)."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(cols[9])
        except (OSError, ValueError):
            continue
    return inodes


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds: utime + stime) of `pid` from /proc/<pid>/stat; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[1]), (float(rest[11]) + float(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def server_pids(port: int) -> set[int]:
    """The processes of a local server listening on `port`: the listener(s), the gantool/tritonserver
    processes above them (gantool serve starts tritonserver), and everything below those; never this
    process or its ancestors."""
    inodes = _listening_inodes(port)
    if not inodes:
        return set()
    mine, pid = set(), os.getpid()
    while pid > 1 and pid not in mine:
        mine.add(pid)
        st = _stat(pid)
        pid = st[0] if st else 0
    parents: dict[int, int] = {}
    listeners = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        p = int(entry)
        st = _stat(p)
        if st:
            parents[p] = st[0]
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                listeners.add(p)
                break
    roots = set()
    for p in listeners - mine:
        top = p
        while parents.get(top, 0) > 1 and parents[top] not in mine and any(
                w in _cmdline(parents[top]) for w in SERVER_WORDS):
            top = parents[top]
        roots.add(top)
    tree, grew = set(roots), True
    while grew:
        grew = False
        for p, parent in parents.items():
            if parent in tree and p not in tree and p not in mine:
                tree.add(p)
                grew = True
    return tree


class ServerCpu:
    """CPU seconds the server on a local `url` (HOST:PORT) has used since this was made, so bench's
    busy-machine share leaves out the server it is measuring. `seconds()` is 0.0 for a remote server."""

    def __init__(self, url: str, pids: Callable[[int], set[int]] = server_pids,
                 cpu: Callable[[int], float | None] = lambda p: (st[1] if (st := _stat(p)) else None)):
        host, _, port = url.rpartition(":") if ":" in url else (url, "", "8001")
        self.url, self._pids, self._cpu = url, pids, cpu
        self.port = int(port) if port.isdigit() else 8001
        self.local = host.strip("[]") in LOCAL_HOSTS or host in (os.uname().nodename,)
        self.pids: set[int] = self._pids(self.port) if self.local else set()
        self._start = {p: c for p in self.pids if (c := self._cpu(p)) is not None}

    def seconds(self) -> float:
        if not self.local:
            return 0.0
        self.pids |= self._pids(self.port)
        now = {p: c for p in self.pids if (c := self._cpu(p)) is not None}
        return sum(max(0.0, c - self._start.get(p, 0.0)) for p, c in now.items())

    def describe(self) -> str:
        return f"the server being measured ({len(self.pids)} process(es): the one listening on port {self.port} and its tree)"


class MachineWatch:
    """Probes of the machine during one bench run. `probe(device) -> GFLOP/s`, `ticks`, `loadavg` and
    `clock` are injectable so the tests can play a machine that slows down."""

    def __init__(self, device: str, probe: Callable[[str], float] | None = None,
                 ticks: Callable[[], tuple[float, float] | None] = _cpu_ticks,
                 loadavg: Callable[[], tuple[float, float, float]] = os.getloadavg,
                 clock: Callable[[], float] = time.monotonic, cores: int | None = None,
                 server: "ServerCpu | None" = None):
        self.device = device
        self.server = server  # a served load test's server: its CPU time is not "other processes"
        self.probe = probe or _matmul_gflops
        self.ticks, self.loadavg, self.clock = ticks, loadavg, clock
        self.cores = cores or os.cpu_count() or 1
        self.probes: list[dict[str, Any]] = []
        self._t0 = self._ticks0 = None

    def sample(self, when: str) -> None:
        if self._t0 is None:
            self._t0, self._ticks0 = self.clock(), self.ticks()
        t = round(self.clock() - self._t0, 2)
        try:
            gflops = round(self.probe(self.device), 2)
        except (RuntimeError, TypeError, AssertionError):  # no such device here (its rows say unavailable)
            return
        self.probes.append({"when": when, "t_s": t, "gflops": gflops, "load1": round(self.loadavg()[0], 2)})

    def conditions(self) -> dict[str, Any]:
        """What the JSON's `conditions` holds: the probes, the peak's spread, other work, the warnings."""
        out: dict[str, Any] = {"probes": self.probes, "max_drift": MAX_DRIFT, "max_other_share": MAX_OTHER,
                               "peak_spread": None, "other_cpu_share": None, "warnings": []}
        if len(self.probes) >= 2:
            best = max(self.probes, key=lambda p: p["gflops"])
            worst = min(self.probes, key=lambda p: p["gflops"])
            out["peak_spread"] = round(best["gflops"] / worst["gflops"] - 1, 3) if worst["gflops"] > 0 else None
            if out["peak_spread"] is None or out["peak_spread"] > MAX_DRIFT:
                first, last = self.probes[0], self.probes[-1]
                out["warnings"].append(
                    f"the machine's speed moved during this run: matmul peak {worst['gflops']:.1f} GFLOP/s "
                    f"({worst['when']}) vs {best['gflops']:.1f} ({best['when']}), {first['gflops']:.1f} at the start and "
                    f"{last['gflops']:.1f} at the end; rows timed in the slow stretch read low, and ratios "
                    f"between them mean less")
        end, start = self.ticks(), self._ticks0
        if end is not None and start is not None and self.probes:
            wall = max(self.clock() - self._t0, 1e-9)  # the same span as the ticks
            served = self.server.seconds() if self.server is not None else 0.0
            other = max(0.0, (end[0] - start[0]) - (end[1] - start[1]) - served) / (wall * self.cores)
            out["other_cpu_share"] = round(other, 3)
            if self.server is not None:
                out["server_excluded"] = {"url": self.server.url, "pids": sorted(self.server.pids),
                                          "cpu_share": round(served / (wall * self.cores), 3)}
            not_counted = f", not counting {self.server.describe()}" if self.server is not None and self.server.pids else ""
            if other > MAX_OTHER:
                load = max(p["load1"] for p in self.probes)
                out["warnings"].append(
                    f"other processes used {other:.0%} of this machine's {self.cores} cores during the run"
                    f"{not_counted} (load average up to {load:.1f}): every row shared the CPU, so its samples/s "
                    f"is low by an unknown factor")
        return out


def _matmul_gflops(device: str) -> float:
    from gantool.bench.roofline import measure_peak

    return measure_peak(device, "fp32", min_time=PROBE_S, min_repeats=3).gflops


def warning_line(conditions: dict[str, Any] | None) -> str | None:
    """The one stderr / REPORT.md line for a run's conditions, or None when nothing moved."""
    if not conditions or not conditions.get("warnings"):
        return None
    return "bench: warning: " + "; and ".join(conditions["warnings"])  # a progress-style line, before any error
