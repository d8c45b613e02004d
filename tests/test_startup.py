"""`gantool` answers help, parse errors and wrong paths without importing torch & co. (issue 26: each
such answer cost 4-11 s on a slow machine). A structural check, not a timing one: one subprocess runs
the commands in order and names the first that pulled in a heavy module."""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "onnx", "onnxruntime", "openvino", "matplotlib", "tritonclient", "numpy")

CASES = [
    ["--help"], ["--version"],
    *[[cmd, "-h"] for cmd in ("train", "export", "verify", "sample", "eval", "bench", "demo")],
    ["export", "--chekpoint", "runs/demo"],  # a misspelt option
    ["bench", "--batch-sizes"],  # an option without its value
    ["export", "--checkpoint", "{missing}"],
    ["export", "--checkpoint", "{missing}", "--format", "bogus"],
    ["export", "--checkpoint", "{tmp}", "--out", "{file}"],
    ["verify", "--exported", "{missing}"],
    ["verify", "--exported", "{tmp}"],  # a folder without manifest.json
    ["bench", "--exported", "{missing}"],
    ["sample", "--from", "{missing}"],
    ["eval", "--checkpoint", "{missing}"],
    ["eval", "--artifact", "{missing}"],
    ["train", "--dataset", "bogus"],
    ["train", "--arch", "bogus"],
    ["train", "--recipe", "bogus"],
    ["train", "--resume", "{missing}"],
]

PROBE = """
import json, sys
from gantool.cli import app
heavy, cases = {heavy!r}, json.loads(sys.argv[1])
for args in cases:
    try:
        app(args, prog_name="gantool")
    except SystemExit as e:
        code = e.code
    loaded = [m for m in heavy if m in sys.modules]
    if loaded:
        print(json.dumps({{"case": args, "loaded": loaded, "code": code}}))
        sys.exit(0)
print(json.dumps({{"case": None}}))
"""


def test_help_parse_errors_and_wrong_paths_import_no_heavy_module(tmp_path):
    subs = {"missing": str(tmp_path / "missing"), "tmp": str(tmp_path), "file": str(tmp_path / "a-file")}
    (tmp_path / "a-file").write_text("x")
    cases = [[a.format(**subs) for a in c] for c in CASES]
    r = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), json.dumps(cases)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    verdict = json.loads(r.stdout.strip().splitlines()[-1])
    assert verdict["case"] is None, f"`gantool {' '.join(verdict['case'])}` imported {verdict['loaded']}"
    # every case was answered (help: 0, bad input: a usage or user error)
    assert r.stderr.count("error: ") == len([c for c in CASES if "-h" not in c and c[0] not in ("--help", "--version")])
