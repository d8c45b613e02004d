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
    # issue 36.5: simple mistakes that need no model, answered before torch too
    ["sample", "--from", "{run}", "--n", "-5"],
    ["bench", "--exported", "{tmp}", "--batch-sizes", "0"],
    ["bench", "--exported", "{tmp}", "--compare", "{tmp}"],
    ["bench", "--exported", "{tmp}", "--backends", "eager,onnxruntime"],
    ["export", "--checkpoint", "{run}", "--device", "bogus"],
    # issue 36.3: a folder where a file is expected
    ["eval", "--generator", "{gen}:make", "--weights", "{tmp}"],
    ["export", "--generator", "{gen}:make", "--weights", "{tmp}"],
    ["bench", "--generator", "{gen}:make", "--weights", "{tmp}"],
    ["eval", "--checkpoint", "{run}", "--real", "{tmp}"],
    ["eval", "--artifact", "{tmp}"],
    ["eval", "--generator", "{tmp}/pkg.py:make"],
]
# --device cuda on a machine without an NVIDIA driver (told from /dev and /proc, not by torch)
CUDA_CASES = [
    ["train", "--device", "cuda", "--out", "{tmp}/new-run"],
    ["export", "--checkpoint", "{run}", "--device", "cuda"],
    ["sample", "--from", "{run}", "--device", "cuda"],
    ["eval", "--checkpoint", "{run}", "--device", "cuda"],
    ["bench", "--exported", "{tmp}", "--device", "cuda"],
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
    from gantool.cli.common import no_cuda_driver

    subs = {"missing": str(tmp_path / "missing"), "tmp": str(tmp_path), "file": str(tmp_path / "a-file"),
            "run": str(tmp_path / "run"), "gen": str(tmp_path / "gen.py")}
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_text("never read: each case fails before")
    (tmp_path / "gen.py").write_text("raise SystemExit('never imported: each case fails before')\n")
    (tmp_path / "pkg.py").mkdir()  # a folder named like a file
    all_cases = CASES + (CUDA_CASES if no_cuda_driver() else [])
    cases = [[a.format(**subs) for a in c] for c in all_cases]
    r = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), json.dumps(cases)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    verdict = json.loads(r.stdout.strip().splitlines()[-1])
    assert verdict["case"] is None, f"`gantool {' '.join(verdict['case'])}` imported {verdict['loaded']}"
    # every case was answered (help: 0, bad input: a usage or user error)
    assert r.stderr.count("error: ") == len([c for c in all_cases if "-h" not in c and c[0] not in ("--help", "--version")])
