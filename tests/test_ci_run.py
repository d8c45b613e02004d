""".ci/run: a failed browser-stack install fails CI unless GANTOOL_SKIP_WEB=1 is set on purpose, and
a skip that tests/expected_skips.txt does not list fails CI (run on a copy with `make` and
scripts/web_deps.sh faked; the fake `make test` prints $SKIPS, pytest's -rs summary lines)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
FAKE_MAKE = """#!/usr/bin/env bash
echo "make $* GANTOOL_REQUIRE_WEB=${GANTOOL_REQUIRE_WEB:-}" >> "$CALLS"
if [ "$1" = test ]; then printf '%s\\n' "$SKIPS"; echo "=== 450 passed, $NSKIPPED skipped in 600.00s ==="; fi
"""
WEB_SKIPS = "SKIPPED [7] tests/test_export_web.py:147: GANTOOL_SKIP_WEB=1: the browser tests are skipped on purpose"


@pytest.fixture
def ci(tmp_path):
    """A copy of .ci/run in a bare tree; returns run(web_deps_exit, **env) -> (process, calls)."""
    repo, bin_ = tmp_path / "repo", tmp_path / "bin"
    (repo / ".ci").mkdir(parents=True)
    (repo / "scripts").mkdir()
    bin_.mkdir()
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    shutil.copy(ROOT / "scripts" / "check_skips.py", repo / "scripts" / "check_skips.py")
    (repo / "tests").mkdir()
    expected = repo / "tests" / "expected_skips.txt"
    shutil.copy(ROOT / "tests" / "expected_skips.txt", expected)
    (bin_ / "make").write_text(FAKE_MAKE)
    (bin_ / "make").chmod(0o755)
    calls = tmp_path / "calls"

    def run(web_deps_exit: int, skips: str = "", nskipped: int | None = None, expect: str | None = None, **env: str):
        (repo / "scripts" / "web_deps.sh").write_text(
            f"#!/usr/bin/env bash\necho web_deps >> \"$CALLS\"\necho 'web_deps: npm ci failed' >&2\nexit {web_deps_exit}\n")
        (repo / "scripts" / "web_deps.sh").chmod(0o755)
        calls.write_text("")
        if expect is not None:
            expected.write_text(expect)
        n = sum(int(k) for k in re.findall(r"^SKIPPED \[(\d+)\]", skips, re.M)) if nskipped is None else nskipped
        e = {k: v for k, v in os.environ.items() if not k.startswith("GANTOOL_")}
        e.update(PATH=f"{bin_}:{os.environ['PATH']}", CALLS=str(calls), SKIPS=skips, NSKIPPED=str(n), **env)
        p = subprocess.run(["bash", str(repo / ".ci" / "run")], capture_output=True, text=True, env=e, timeout=60)
        return p, calls.read_text().splitlines()

    return run


def test_a_failed_web_install_fails_ci(ci):
    p, calls = ci(1)
    assert p.returncode != 0 and calls == ["web_deps"], (p.returncode, calls)  # no tests ran
    assert "scripts/web_deps.sh failed" in p.stderr and "GANTOOL_SKIP_WEB=1" in p.stderr


def test_skip_web_on_purpose_runs_the_rest_and_prints_the_skip_count(ci):
    p, calls = ci(1, WEB_SKIPS, GANTOOL_SKIP_WEB="1")
    assert p.returncode == 0, p.stderr
    assert calls == ["make test PYTEST_ARGS=-rs GANTOOL_REQUIRE_WEB=", "make bench-ci GANTOOL_REQUIRE_WEB="]
    assert "GANTOOL_SKIP_WEB=1" in p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith("ci: 7 test(s) skipped")


def test_installed_web_stack_is_required_by_the_tests(ci):
    p, calls = ci(0)
    assert p.returncode == 0, p.stderr
    assert calls == ["web_deps", "make test PYTEST_ARGS=-rs GANTOOL_REQUIRE_WEB=1", "make bench-ci GANTOOL_REQUIRE_WEB=1"]
    assert p.stdout.strip().splitlines()[-1].startswith("ci: 0 test(s) skipped")


@pytest.mark.parametrize("skips", [
    "SKIPPED [13] tests/test_serve.py:20: needs the serve extra: pip install 'gantool[serve]'",  # a broken extra
    WEB_SKIPS,  # the browser tests skipped without GANTOOL_SKIP_WEB=1
])
def test_a_skip_ci_does_not_expect_fails_ci_before_the_bench(ci, skips):
    p, calls = ci(0, skips)
    assert p.returncode != 0 and calls[-1].startswith("make test"), (p.returncode, calls)  # bench-ci not run
    assert "unexpected skip" in p.stderr and skips.split(": ", 1)[1] in p.stderr, p.stderr
    assert "tests/expected_skips.txt" in p.stderr


def test_an_expected_skip_passes_and_a_skip_count_without_its_list_fails(ci):
    serve = "SKIPPED [2] tests/test_serve.py:20: needs the serve extra: pip install 'gantool[serve]'"
    p, _ = ci(0, serve, expect="tests/test_serve.py: needs the serve extra  # say why CI expects it\n")
    assert p.returncode == 0 and "ci: 2 test(s) skipped" in p.stdout, p.stderr
    p, _ = ci(0, "", nskipped=3)  # "3 skipped" but no -rs lines: it cannot tell which, so it fails
    assert p.returncode != 0 and "cannot tell which tests were skipped" in p.stderr, p.stderr


def test_the_committed_list_parses_and_expects_no_skip_today():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_skips", ROOT / "scripts" / "check_skips.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.parse_expected((ROOT / "tests" / "expected_skips.txt").read_text()) == []


def test_a_missing_extra_skips_here_and_fails_under_ci(monkeypatch):
    from conftest import need_extra

    monkeypatch.delenv("GANTOOL_REQUIRE_EXTRAS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs the serve extra"):
        need_extra("gantool_no_such_module", "serve extra")
    monkeypatch.setenv("GANTOOL_REQUIRE_EXTRAS", "1")
    with pytest.raises(pytest.fail.Exception, match="GANTOOL_REQUIRE_EXTRAS=1"):
        need_extra("gantool_no_such_module", "serve extra")
    assert need_extra("json", "stdlib").dumps([]) == "[]"
