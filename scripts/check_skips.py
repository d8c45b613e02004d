#!/usr/bin/env python3
"""CI's skip check (.ci/run): every test pytest skipped must be listed in tests/expected_skips.txt.

Reads a pytest log with the -rs (or -ra) short summary, where each skip is a line
    SKIPPED [N] tests/test_x.py:LINE: reason
and fails (exit 1, one line per unexpected skip on stderr) on a skip no expected line matches, or
when the final "K skipped" count is not accounted for by SKIPPED lines (the summary is missing:
it cannot tell which tests were skipped, so it does not pass). An expected line is
    tests/test_x.py: reason prefix    # why CI expects it
--allow 'FILE: REASON PREFIX' adds one for this run (GANTOOL_SKIP_WEB=1). Standard library only.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

SKIP_LINE = re.compile(r"^SKIPPED \[(\d+)\] (\S+?\.py)(?::\d+)?: (.*)$")
TOTAL = re.compile(r"\b(\d+) skipped\b")


def parse_expected(text: str) -> list[tuple[str, str]]:
    out = []
    for raw in text.splitlines():
        line = raw.split("  #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        file, sep, reason = line.partition(": ")
        if not sep or not file.endswith(".py"):
            raise ValueError(f"expected 'tests/FILE.py: reason prefix', got {raw!r}")
        out.append((file.strip(), reason.strip()))
    return out


def check(log: str, expected: list[tuple[str, str]]) -> tuple[int, list[str]]:
    """(skips seen, problems)."""
    seen, problems = 0, []
    for line in log.splitlines():
        m = SKIP_LINE.match(line.strip())
        if not m:
            continue
        n, file, reason = int(m[1]), m[2], m[3]
        seen += n
        if not any(file == f and reason.startswith(r) for f, r in expected):
            problems.append(f"unexpected skip: {n} in {file}: {reason}")
    totals = [int(t) for line in log.splitlines() if re.search(r"\b(passed|failed|error|skipped)\b.* in [\d.]+s", line)
              for t in TOTAL.findall(line)]
    total = totals[-1] if totals else 0
    if total != seen:
        problems.append(f"pytest reports {total} skipped but its summary lists {seen} (run it with -rs): "
                        "cannot tell which tests were skipped")
    return seen, problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("--expected", default="tests/expected_skips.txt")
    ap.add_argument("--allow", action="append", default=[])
    a = ap.parse_args(argv)
    try:
        expected = parse_expected(Path(a.expected).read_text()) + parse_expected("\n".join(a.allow))
        log = Path(a.log).read_text(errors="replace")
    except (OSError, ValueError) as e:
        print(f"ci: skip check: {e}", file=sys.stderr)
        return 1
    seen, problems = check(log, expected)
    for p in problems:
        print(f"ci: {p}", file=sys.stderr)
    if problems:
        print(f"ci: {len(problems)} skip problem(s): list an expected skip, with its reason, in {a.expected}, "
              "or fix what made the test skip", file=sys.stderr)
        return 1
    print(f"ci: {seen} test(s) skipped, each expected by {a.expected}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
