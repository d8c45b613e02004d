"""The wheel's plain `tritonserver` binary on a model repository (no PyTriton in the loop): what a
repository from `gantool export --format triton --kind python` is loaded with in the tests and docs.

The wheel has only Triton's Python backend (its onnxruntime/pytorch backends ship in NVIDIA's
containers), so only generator_python is loaded (explicit model control); the stub for this
Python version is linked into a backend folder beside the log, as PyTriton does for itself.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gantool.errors import DeviceError
from gantool.serve.env import HOST, check_ports, check_python_abi, require_pytriton, server_env

STOP_TIMEOUT_S = 10.0


def backend_dir(pytriton: Path, dest: Path) -> Path:
    """dest/python/{libtriton_python.so, triton_python_backend_utils.py, triton_python_backend_stub}."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = pytriton / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise DeviceError(f"the Triton wheel has no Python-backend stub for Python {version} (it ships 3.8-3.13)")
    py = dest / "python"
    py.mkdir(parents=True, exist_ok=True)
    src = pytriton / "tritonserver" / "backends" / "python"
    for f in (src / "libtriton_python.so", src / "triton_python_backend_utils.py", stub):
        (py / f.name).symlink_to(f)
    return dest


class TritonServerProcess:
    """`with TritonServerProcess(repo, models, ports) as s:` a tritonserver child on HOST, ready on
    entry (or a one-line DeviceError with the log's last line), stopped with SIGINT on exit (SIGKILL
    to its process group when it does not stop within STOP_TIMEOUT_S)."""

    def __init__(self, repository: Path, models: list[str], http_port: int, grpc_port: int, metrics_port: int,
                 host: str = HOST, exit_timeout_s: int = 3, ready_timeout_s: float = 60.0):
        self.repository, self.models, self.host = Path(repository), models, host
        self.ports = {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port}
        self.exit_timeout_s, self.ready_timeout_s = exit_timeout_s, ready_timeout_s
        self.proc: subprocess.Popen | None = None

    def start(self) -> "TritonServerProcess":
        pytriton = require_pytriton()
        check_python_abi()
        check_ports(self.host, self.ports)
        self.work = Path(tempfile.mkdtemp(prefix="gantool-tritonserver-"))
        self.log_path = self.work / "tritonserver.log"
        backends = backend_dir(pytriton, self.work / "backends")
        cmd = [str(pytriton / "tritonserver" / "bin" / "tritonserver"),
               f"--model-repository={self.repository.resolve()}", f"--backend-directory={backends}",
               "--model-control-mode=explicit", *[f"--load-model={m}" for m in self.models],
               f"--http-address={self.host}", f"--grpc-address={self.host}", f"--metrics-address={self.host}",
               *[f"{k}={v}" for k, v in self.ports.items()], "--allow-gpu-metrics=false",
               f"--exit-timeout-secs={self.exit_timeout_s}", "--strict-readiness=true"]
        env = server_env()
        libs = pytriton.parent / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] += f":{libs}"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        self._wait_ready()
        return self

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports['--grpc-port']}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _wait_ready(self) -> None:
        import urllib.request

        url = f"http://{self.host}:{self.ports['--http-port']}/v2/health/ready"
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise DeviceError(f"tritonserver exited with {self.proc.returncode}: {self.last_log_line()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise DeviceError(f"tritonserver not ready after {self.ready_timeout_s:.0f} s: {self.last_log_line()}")

    def last_log_line(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines()
                     if ln.startswith("E") or "error" in ln.lower()]
        except OSError:
            return "no log"
        from gantool.errors import clip

        return clip(lines[-1] if lines else "see " + str(self.log_path))

    def stop(self) -> int | None:
        """SIGINT, wait; SIGKILL the process group if it is still there. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        try:  # the stubs are the server's children, in its session
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        if self.proc.returncode == 0:  # a clean stop: the log and the stub links are not needed
            shutil.rmtree(self.work, ignore_errors=True)
        return self.proc.returncode

    def __enter__(self) -> "TritonServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
