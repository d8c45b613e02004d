"""The app itself: -h, --version, and usage errors as one stderr line (no rich box, no traceback)."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gantool import __version__
from gantool.cli import app

runner = CliRunner()


def test_version_and_help():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"gantool {__version__}"
    r = runner.invoke(app, ["-h"])
    assert r.exit_code == 0
    for cmd in ("train", "export", "verify", "sample", "eval", "bench"):
        assert cmd in r.stdout


@pytest.mark.parametrize("argv, needle", [
    (["nosuch"], "No such command"),
    (["export", "--opset", "x", "--checkpoint", "y"], "--opset"),
    (["bench", "--min-time", "abc"], "--min-time"),
    (["train", "--no-such-flag"], "No such option"),
])
def test_usage_errors_are_one_line(argv, needle):
    r = runner.invoke(app, argv)
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in r.output and "╭" not in r.stderr
