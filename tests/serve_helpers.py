"""Helpers for the tests that start a real Triton server on 127.0.0.1 (the server child itself is
gantool.serve.child, shared with the demo's serve stage), and subprocess CLI runs."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

from gantool.serve.child import ServeChild as ServeProcess, alive, descendants  # noqa: F401


def run_cli(*args: str, timeout: float = 120, **kw) -> SimpleNamespace:
    """`python -m gantool ARGS` as a subprocess; .exit_code/.stdout/.stderr like CliRunner's result."""
    r = subprocess.run([sys.executable, "-m", "gantool", *args], capture_output=True, text=True, timeout=timeout, **kw)
    return SimpleNamespace(exit_code=r.returncode, stdout=r.stdout, stderr=r.stderr, output=r.stdout + r.stderr)
