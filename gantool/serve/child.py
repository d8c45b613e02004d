"""A `gantool serve` child process and its process tree, read from /proc (Linux): what the tests,
`gantool demo --stages serve` and scripts/serve_bench.py start, measure (RSS) and stop."""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from gantool.errors import DeviceError
from gantool.serve.env import free_ports, port_free

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children of children too), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def rss_mb(pids: list[int]) -> float:
    """Resident memory of these processes together, MB (VmRSS from /proc; gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class LineReader:
    """A text stream's lines through a daemon thread, so a wait for the next one is bounded."""

    def __init__(self, stream):
        self._q: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self._q.put(line)
        self._q.put("")  # end of stream

    def get(self, timeout: float) -> str | None:
        """The next line; "" at the end of the stream, None when none came within `timeout` s."""
        try:
            return self._q.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None


class ServeChild:
    """`gantool serve` in a child process on free ports, ready once it logs its URLs (tests, demo, scripts).
    The child's $TMPDIR is a folder of its own (its log and PyTriton's workspace go there), removed
    once the child is gone, however it stopped: a SIGKILLed server leaves nothing in /tmp or $HOME."""

    def __init__(self, exported: Path, *extra: str):
        self.tmp = tempfile.mkdtemp(prefix="gantool-child-")  # short: PyTriton's unix sockets live below it
        self.http, self.grpc, self.metrics = free_ports(3)
        self.cmd = [sys.executable, "-m", "gantool", "serve", "--exported", str(exported),
                    "--http-port", str(self.http), "--grpc-port", str(self.grpc),
                    "--metrics-port", str(self.metrics), *extra]
        # stderr to a file, not a pipe nobody drains: a server that logs a lot must never block on it
        self._err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self._err, text=True,
                                     start_new_session=True, env={**os.environ, "TMPDIR": self.tmp})
        self.stdout: list[str] = []
        lines = LineReader(self.proc.stdout)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:  # bounded even when the child prints nothing
            line = lines.get(deadline - time.monotonic())
            if not line:
                break
            self.stdout.append(line)
            if "stop with" in line:
                break
        if not any("stop with" in ln for ln in self.stdout):
            self.kill()
            said = (''.join(self.stdout) + self.stderr()).strip()[-300:]
            raise DeviceError(f"gantool serve did not log its URLs ('stop with ...') within {START_TIMEOUT_S:.0f} s: {said}")
        self.tree = descendants(self.proc.pid)  # tritonserver and its Python-backend stub(s)

    def stderr(self) -> str:
        """What the server wrote to stderr so far."""
        self._err.seek(0)
        return self._err.read()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    @property
    def ports(self) -> list[int]:
        return [self.http, self.grpc, self.metrics]

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, float]:
        """Send `sig`, wait; (exit code, seconds it took)."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise DeviceError(f"gantool serve still running {STOP_TIMEOUT_S:.0f} s after signal {sig}") from None
        self._clean()
        return code, time.monotonic() - t0

    def _clean(self) -> None:
        """Remove the child's $TMPDIR once none of its processes is left (bounded wait)."""
        deadline = time.monotonic() + 10
        while any(alive(p) for p in self.tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server and every process it started (the tests' last resort, and the crash test)."""
        self.tree = set(getattr(self, "tree", set())) | descendants(self.proc.pid)
        for pid in [self.proc.pid, *self.tree]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(STOP_TIMEOUT_S)
        self._clean()

    def assert_gone(self) -> None:
        """No process of the server left, its ports free again (within a few seconds)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = [p for p in self.tree if alive(p)]
            taken = [p for p in self.ports if not port_free(p)]
            if not left and not taken:
                return
            time.sleep(0.2)
        raise DeviceError(f"after stop: processes {left} alive, ports {taken} taken")

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid, *self.tree]
