"""Every `gantool ...` command the README shows runs as written (issue 26.4): the pipeline table's commands
and each line of its bash blocks, in a temp folder after the table's own `gantool train`, with small sizes
appended where the command has options for them (the last value of an option wins)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
# Options appended to shrink a command without changing what it does (a user's run is bigger, not other).
SMALL = {
    "train": ["--epochs", "1", "--limit", "200", "--no-progress"],
    "eval": ["--n", "300"],
    "bench": ["--max-time", "0.1", "--batch-sizes", "1"],
    "demo": ["--quick", "--n", "300", "--formats", "onnx,torchscript", "--batch-sizes", "1"],
}
# Commands that need what a test cannot start: a Triton server listening on --url (gantool serve's own
# tests start one), Chromium for the web backend.
NEEDS = {"--url": "a Triton server at --url (tests/test_serve.py)", "web": "Chromium (tests/test_export_web.py)"}


def readme_commands(text: str) -> list[str]:
    """`gantool ...` of the pipeline table (in order), then every line of each bash block that starts with it
    (continuations joined, trailing comments dropped)."""
    table = [m for line in text.splitlines() if line.startswith("|")
             for m in re.findall(r"`(gantool [^`]+)`", line)]
    blocks = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s+#", line, maxsplit=1)[0].strip()
            if line.startswith("gantool "):
                blocks.append(line)
    return table + blocks


def needs(args: list[str]) -> str | None:
    if args[0] == "serve":
        return "a server that runs until stopped (tests/test_serve.py starts and stops one)"
    if "--url" in args:
        return NEEDS["--url"]
    backends = args[args.index("--backends") + 1].split(",") if "--backends" in args[:-1] else []
    if args[0] == "bench" and "web" in backends:
        return NEEDS["web"]
    return None


ROOT = README.parent
FIRST_SCREEN = 40  # lines: what a new user sees before scrolling


def activate_line(text: str) -> str:
    """The README's first-screen line that puts gantool on the PATH (issue 36.1)."""
    lines = [re.split(r"\s+#", line, maxsplit=1)[0].strip() for line in text.splitlines()[:FIRST_SCREEN]]
    found = [line for line in lines if line.startswith("source ") and line.endswith("/bin/activate")]
    assert found, f"README.md's first {FIRST_SCREEN} lines do not say how to put gantool on the PATH (source .venv/bin/activate)"
    return found[0]


def test_the_readme_first_screen_puts_gantool_on_the_path(tmp_path):
    """The first-screen line, run as written in a shell whose PATH has no gantool, makes `gantool -h` work."""
    line = activate_line(README.read_text())
    venv = Path(sys.prefix)
    if venv == Path(sys.base_prefix) or not (venv / "bin" / "activate").is_file():
        pytest.skip("the tests do not run in a venv, so there is no activate script to source")
    (tmp_path / ".venv").symlink_to(venv)  # the folder `make` creates, here the venv running the tests
    env = {**{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}, "PATH": "/usr/bin:/bin",  # a new shell's
           "PYTHONPATH": str(ROOT)}  # this tree's gantool, whichever tree the venv's install points at
    before = subprocess.run(["bash", "-c", "command -v gantool"], cwd=tmp_path, env=env, capture_output=True, text=True)
    if before.returncode == 0:
        pytest.skip(f"a gantool is installed system-wide ({before.stdout.strip()}): the check would prove nothing")
    r = subprocess.run(["bash", "-c", f"{line} && gantool -h"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "Usage: gantool" in r.stdout, r.stderr[-1500:]


@pytest.mark.parametrize("target", ["demo", "test"])
def test_make_demo_and_test_end_with_the_readmes_activate_line(target):
    """`make demo` / `make test` print the same line when they finish (pass or fail), as rustup and uv do."""
    line = activate_line(README.read_text())
    r = subprocess.run(["make", "-n", "-o", ".venv/.installed", target], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert line in r.stdout and "echo" in r.stdout, r.stdout
    # printed after the command ends whatever its exit code, and that exit code is kept
    assert "|| rc=$?" in r.stdout and "exit $rc" in r.stdout, r.stdout


OUTPUT_OPTIONS = ("--out", "--json", "--plot", "--image", "--profile")


def test_every_readme_command_writes_under_runs():
    """Issue 36.6: README commands wrote grid.png, site/ and model_repository/ into the repository root while
    the pipeline table wrote under runs/demo/; every output a README command names lies under runs/."""
    text = README.read_text()
    outside = []
    for cmd in readme_commands(text):
        args = shlex.split(cmd)
        outside += [f"{cmd}: {flag} {value}" for flag, value in zip(args, args[1:])
                    if flag in OUTPUT_OPTIONS and not value.startswith("runs/")]
    # and the shell lines around them that name those folders (http.server --directory, docker -v)
    outside += [line for line in text.splitlines() if re.search(r"--directory (?!runs/)|-v \$PWD/(?!runs/)", line)]
    assert not outside, outside


def test_every_fid_multiple_in_the_readme_names_its_feature_space():
    """Issue 36.10: the README quoted "FID 4.7x the floor" without saying in which of eval's two feature
    spaces (cnn, mlp), and the bar is judged in every space. Each FID multiple names its space."""
    text = " ".join(README.read_text().split())  # one line: a sentence may wrap
    unnamed = []
    for m in re.finditer(r"FID[^|]{0,60}?(\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?x)", text):
        after = text[m.end():m.end() + 70]
        if not re.search(r"\b(cnn|mlp)\b|every feature space|both feature spaces", after):
            unnamed.append(text[m.start():m.end() + 70])
    assert not unnamed, unnamed


def test_the_readme_lists_the_commands_this_test_runs():
    cmds = readme_commands(README.read_text())
    heads = {shlex.split(c)[1] for c in cmds}
    assert {"train", "export", "verify", "sample", "eval", "bench", "demo"} <= heads, heads
    assert any("--generator my_gen.py:make" in c for c in cmds) and any("--format web" in c for c in cmds)


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path):
    text = README.read_text()
    # What a user brings: my_gen.py is the README's own file; g.pt its README line makes; real.npy their images
    python_block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    (tmp_path / "my_gen.py").write_text(python_block)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "real.npy", rng.integers(0, 256, (300, 3, 32, 32), dtype=np.uint8))
    # my_gen.py importable, and this tree's gantool whichever tree the interpreter's install points at
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    setup = [line for line in text.splitlines() if line.startswith("python3 -c ") and "g.pt" in line]
    assert setup, "the README says how g.pt is made"
    for line in setup:
        code = shlex.split(re.split(r"\s+#", line, maxsplit=1)[0])[2]
        subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, timeout=120)

    ran, skipped = [], []
    for cmd in readme_commands(text):
        args = shlex.split(cmd)[1:]
        why = needs(args)
        if why:
            skipped.append(f"{cmd} (needs {why})")
            continue
        args = [*args, *SMALL.get(args[0], [])]
        if args[:2] == ["verify", "--exported"] and "--distribution" in args:
            args += ["--distribution", "200"]
        r = subprocess.run([sys.executable, "-m", "gantool", *args], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, f"README command failed: {cmd}\n(ran: gantool {' '.join(args)})\n{r.stderr[-1500:]}"
        ran.append(cmd)
    assert len(ran) >= 15, ran
    assert all("--url" in s or "web" in s or "serve " in s.split("(needs")[0] + " " for s in skipped), skipped
    # what the commands wrote is what the README says they write
    for path in ("runs/demo/checkpoint.pt", "runs/demo/exported/manifest.json", "runs/demo/grid.png",
                 "runs/demo/site/index.html", "runs/my_gen/manifest.json", "runs/my_gen/grid.png",
                 "runs/demo/REPORT.md"):
        assert (tmp_path / path).is_file(), path
    # and none of what they write lands beside runs/ (issue 36.6)
    assert not [p for p in ("grid.png", "site", "model_repository", "exp", "exported") if (tmp_path / p).exists()]
