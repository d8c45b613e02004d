"""Output paths through the CLI: checked before any work (directory, read-only folder), and files honour the umask."""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from conftest import assert_one_line_error, gantool_cli


run = gantool_cli


def _writable(folder: Path) -> bool:
    try:
        fd, p = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(p)
    return True


@pytest.fixture
def readonly_dir(tmp_path) -> Path:
    """A folder this process cannot write: chmod 0555, or (as root, who ignores modes) sysfs."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    if _writable(d):
        d.chmod(0o755)
        if not (Path("/sys").is_dir() and not _writable(Path("/sys"))):
            pytest.skip("no read-only folder available to this user")
        yield Path("/sys")
    else:
        yield d
        d.chmod(0o755)


# (argv before the output path, flag name, argv after): every output option of every command.
def _cases(ckpt: Path, exported: Path) -> list[tuple[list, str]]:
    return [
        (["sample", "--from", ckpt, "--n", "4", "--out"], "--out"),
        (["verify", "--exported", exported, "--json"], "--json"),
        (["verify", "--exported", exported, "--image"], "--image"),
        (["eval", "--checkpoint", ckpt, "--n", "10", "--json"], "--json"),
        (["bench", "--exported", exported, "--checkpoint", ckpt, "--backends", "eager", "--batch-sizes", "2", "--json"], "--json"),
        (["bench", "--exported", exported, "--checkpoint", ckpt, "--backends", "eager", "--batch-sizes", "2", "--plot"], "--plot"),
    ]


IDS = ["sample-out", "verify-json", "verify-image", "eval-json", "bench-json", "bench-plot"]


@pytest.mark.parametrize("case", range(6), ids=IDS)
def test_output_file_that_is_a_directory_fails_before_work(case, checkpoint_path, exported_dir, tmp_path):
    argv, flag = _cases(checkpoint_path, exported_dir)[case]
    target = tmp_path / "a_directory"
    target.mkdir()
    r = run(*argv, target)
    # One line, and nothing on stdout or stderr before it: no sampling, parity, scoring or timing ran.
    assert_one_line_error(r, flag, "is a directory")
    assert r.stdout == ""
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("case", range(6), ids=IDS)
def test_output_file_in_readonly_folder_fails_before_work(case, checkpoint_path, exported_dir, readonly_dir):
    argv, flag = _cases(checkpoint_path, exported_dir)[case]
    r = run(*argv, readonly_dir / "out.file")
    assert_one_line_error(r, flag, "cannot write")
    assert r.stdout == ""


def test_output_dirs_of_export_and_train_fail_before_work(checkpoint_path, tmp_path, readonly_dir):
    a_file = tmp_path / "file"
    a_file.write_text("user data")
    for argv in (["export", "--checkpoint", checkpoint_path, "--format", "torchscript", "--out"],
                 ["train", "--epochs", "1", "--limit", "100", "--out"]):
        r = run(*argv, a_file)
        assert_one_line_error(r, "--out", "not a directory")
        assert r.stdout == "" and a_file.read_text() == "user data"
        r = run(*argv, readonly_dir / "sub")
        assert_one_line_error(r, "--out", "cannot write")
        assert r.stdout == ""
        r = run(*argv, a_file / "below")  # a parent that is a file
        assert_one_line_error(r, "--out", "not a directory")


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_honour_the_umask(umask, checkpoint_path, exported_dir, tmp_path, one_thread):
    old = os.umask(umask)
    try:
        run_dir = tmp_path / "run"
        r = run("train", "--recipe", "seed", "--epochs", "1", "--limit", "200", "--no-progress", "--out", run_dir)
        assert r.exit_code == 0, r.stdout + r.stderr
        r2 = run("sample", "--from", checkpoint_path, "--n", "4", "--out", tmp_path / "grid.png")
        r3 = run("verify", "--exported", exported_dir, "--json", tmp_path / "v.json")
        assert r2.exit_code == 0 and r3.exit_code == 0, r2.stderr + r3.stderr
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    files = [run_dir / "checkpoint.pt", run_dir / "loss.png", run_dir / "metrics.jsonl", run_dir / "samples" / "final.png",
             tmp_path / "grid.png", tmp_path / "v.json"]
    assert {str(f.relative_to(tmp_path)): oct(_mode(f)) for f in files} == {
        str(f.relative_to(tmp_path)): oct(want) for f in files}


def test_rewriting_a_file_keeps_its_mode_like_open(checkpoint_path, tmp_path):
    out = tmp_path / "grid.png"
    out.write_bytes(b"old")
    out.chmod(0o600)  # the user made it private: a rewrite (like open(path, "w")) keeps that
    r = run("sample", "--from", checkpoint_path, "--n", "4", "--out", out)
    assert r.exit_code == 0, r.stderr
    assert _mode(out) == 0o600 and out.read_bytes()[:4] == b"\x89PNG"


def test_a_replaced_output_file_is_said_in_the_line_that_names_it(checkpoint_path, tmp_path):
    """The one overwrite rule (README, "Writing over earlier output"; issue 36.2): a file given to --out /
    --json / --plot / --image is replaced, and the line that names it says so."""
    png = tmp_path / "grid.png"
    first = gantool_cli("sample", "--from", checkpoint_path, "--n", "4", "--out", png, "--device", "cpu")
    assert first.exit_code == 0 and "(replaced the earlier file)" not in first.stdout, first.stdout + first.stderr
    again = gantool_cli("sample", "--from", checkpoint_path, "--n", "4", "--out", png, "--device", "cpu")
    assert again.exit_code == 0, again.stderr
    assert again.stdout.strip().endswith(f"to {png} (replaced the earlier file)"), again.stdout
