""".ci/run: a failed browser-stack install fails CI unless GANTOOL_SKIP_WEB=1 is set on purpose, and
the skip count is printed at the end (run on a copy with `make` and scripts/web_deps.sh faked)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
FAKE_MAKE = """#!/usr/bin/env bash
echo "make $* GANTOOL_REQUIRE_WEB=${GANTOOL_REQUIRE_WEB:-}" >> "$CALLS"
if [ "$1" = test ]; then echo "SKIPPED [7] tests/test_export_web.py: GANTOOL_SKIP_WEB=1"; echo "=== 450 passed, 7 skipped in 600.00s ==="; fi
"""


@pytest.fixture
def ci(tmp_path):
    """A copy of .ci/run in a bare tree; returns run(web_deps_exit, **env) -> (process, calls)."""
    repo, bin_ = tmp_path / "repo", tmp_path / "bin"
    (repo / ".ci").mkdir(parents=True)
    (repo / "scripts").mkdir()
    bin_.mkdir()
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    (bin_ / "make").write_text(FAKE_MAKE)
    (bin_ / "make").chmod(0o755)
    calls = tmp_path / "calls"

    def run(web_deps_exit: int, **env: str):
        (repo / "scripts" / "web_deps.sh").write_text(
            f"#!/usr/bin/env bash\necho web_deps >> \"$CALLS\"\necho 'web_deps: npm ci failed' >&2\nexit {web_deps_exit}\n")
        (repo / "scripts" / "web_deps.sh").chmod(0o755)
        calls.write_text("")
        e = {k: v for k, v in os.environ.items() if not k.startswith("GANTOOL_")}
        e.update(PATH=f"{bin_}:{os.environ['PATH']}", CALLS=str(calls), **env)
        p = subprocess.run(["bash", str(repo / ".ci" / "run")], capture_output=True, text=True, env=e, timeout=60)
        return p, calls.read_text().splitlines()

    return run


def test_a_failed_web_install_fails_ci(ci):
    p, calls = ci(1)
    assert p.returncode != 0 and calls == ["web_deps"], (p.returncode, calls)  # no tests ran
    assert "scripts/web_deps.sh failed" in p.stderr and "GANTOOL_SKIP_WEB=1" in p.stderr


def test_skip_web_on_purpose_runs_the_rest_and_prints_the_skip_count(ci):
    p, calls = ci(1, GANTOOL_SKIP_WEB="1")
    assert p.returncode == 0, p.stderr
    assert calls == ["make test PYTEST_ARGS=-rs GANTOOL_REQUIRE_WEB=", "make bench-ci GANTOOL_REQUIRE_WEB="]
    assert "GANTOOL_SKIP_WEB=1" in p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith("ci: 7 test(s) skipped")


def test_installed_web_stack_is_required_by_the_tests(ci):
    p, calls = ci(0)
    assert p.returncode == 0, p.stderr
    assert calls == ["web_deps", "make test PYTEST_ARGS=-rs GANTOOL_REQUIRE_WEB=1", "make bench-ci GANTOOL_REQUIRE_WEB=1"]
    assert p.stdout.strip().splitlines()[-1].startswith("ci: 7 test(s) skipped")
