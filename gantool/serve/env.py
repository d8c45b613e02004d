"""What the wheel's tritonserver and its Python-backend stub need from this machine, checked up front.

Two facts found on this machine, each a one-line error here instead of a broken server:
- The stub (`triton_python_backend_stub`, one per Python 3.8-3.13) links `libpython3.X.so.1.0` by
  name. A pyenv/venv Python whose libpython is not on the loader's path gets the distro's
  libpython of the same minor version instead (Debian's 3.11.2 under pyenv's 3.11.7 stdlib), and
  the model fails to load (`'_thread.RLock' object has no attribute '_recursion_count'`). The
  running interpreter's LIBDIR goes first on LD_LIBRARY_PATH.
- The stub's tensor conversion is built against NumPy 1.x: under NumPy 2 an input reads as the
  wrong numbers and an output comes back empty (checked with tritonserver 2.51 from
  nvidia-pytriton 0.7.0, whose metadata pins numpy<2 for this reason). Serving refuses NumPy 2.
"""
from __future__ import annotations

import os
import socket
import sys
import sysconfig
from pathlib import Path

from gantool.errors import ConfigError, DeviceError

EXTRA_HINT = "pip install 'gantool[serve]'  (or: pip install nvidia-pytriton==0.7.0)"
HOST = "127.0.0.1"


def require_pytriton() -> Path:
    """The installed pytriton package folder; one line naming the pip command when it is missing."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):  # a broken or blocked install counts as missing
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DeviceError(f"serving needs the serve extra (PyTriton with Triton's tritonserver): {EXTRA_HINT}")
    require_numpy1()
    return Path(list(spec.submodule_search_locations)[0])


def require_numpy1() -> None:
    from importlib.metadata import version

    v = version("numpy")
    if int(v.split(".")[0]) >= 2:
        raise DeviceError(f"numpy {v}: the Triton Python-backend stub in nvidia-pytriton 0.7.0 is built for NumPy 1.x "
                          "and reads inputs wrong under NumPy 2; pip install 'numpy<2' (the serve extra pins it)")


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the server and its stubs run in: this interpreter's libpython first on the
    loader path, its bin first on PATH (the stub takes its Python environment from `python` there)."""
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
    env["LD_LIBRARY_PATH"] = ":".join([libdir, *parts] if libdir else parts)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def check_python_abi() -> None:
    """The stub needs a shared libpython for this interpreter (a static build has none to load)."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise DeviceError(f"{sys.executable} is built without a shared libpython; Triton's Python-backend stub "
                          "needs one (use a Python built with --enable-shared, e.g. a distro or pyenv build)")


def port_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR as servers (Triton's gRPC and HTTP
    included) bind: only a socket still bound or listening there counts, not old connections in TIME_WAIT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def check_ports(host: str, ports: dict[str, int]) -> None:
    """One line for the first port that is taken (or repeated), before anything starts."""
    seen: dict[int, str] = {}
    for flag, port in ports.items():
        if not 0 < port < 65536:
            raise ConfigError(f"{flag} {port}: not a TCP port (1..65535)")
        if port in seen:
            raise ConfigError(f"{flag} {port} is also {seen[port]}; give each endpoint its own port")
        seen[port] = flag
        if not port_free(port, host):
            raise ConfigError(f"{flag} {port}: {host}:{port} is already in use (pick another port)")


def free_ports(n: int, host: str = HOST) -> list[int]:
    """n distinct ports the kernel says are free now (tests and the demo; a race is still possible)."""
    socks, out = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
            out.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return out
