"""Wrong input paths and values get the right words (issue 36.3, 36.5): an option that takes a file says
"X is a folder; expected a file" for a folder that exists (not "not found"); --device cuda on a machine
without an NVIDIA driver is named in one line. (tests/test_startup.py checks that these answers, and
sample --n <= 0, come before torch is imported.)"""
from __future__ import annotations

import pytest

from conftest import assert_one_line_error, gantool_cli


@pytest.fixture
def places(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "gen.py").write_text("raise SystemExit('never imported: each case fails before')\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_text("never read")
    return tmp_path


FOLDER_CASES = [
    (["eval", "--generator", "{t}/gen.py:make", "--weights", "{t}/folder"], "--weights"),
    (["export", "--generator", "{t}/gen.py:make", "--weights", "{t}/folder"], "--weights"),
    (["verify", "--exported", "{t}/folder", "--generator", "{t}/gen.py:make", "--weights", "{t}/folder"], "--weights"),
    (["sample", "--generator", "{t}/gen.py:make", "--weights", "{t}/folder"], "--weights"),
    (["bench", "--exported", "{t}/folder", "--generator", "{t}/gen.py:make", "--weights", "{t}/folder"], "--weights"),
    (["eval", "--generator", "{t}/gen.py:make", "--real", "{t}/folder"], "--real"),
    (["eval", "--checkpoint", "{t}/run", "--real", "{t}/folder"], "--real"),
    (["eval", "--artifact", "{t}/folder"], "--artifact"),
    (["bench", "--exported", "{t}/folder", "--compare", "{t}/folder"], "--compare"),
]


@pytest.mark.parametrize("args,flag", FOLDER_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else str(v))
def test_a_folder_where_a_file_is_expected_is_named_a_folder(places, args, flag):
    r = gantool_cli(*[a.format(t=places) for a in args])
    assert_one_line_error(r, f"{flag} {places / 'folder'} is a folder; expected a file")
    assert "not found" not in r.stderr


def test_a_generator_path_that_is_a_folder_is_named_a_folder(places):
    (places / "pkg.py").mkdir()
    assert_one_line_error(gantool_cli("eval", "--generator", f"{places}/pkg.py:make"), "is a folder; expected a file")


def test_a_run_folder_without_its_checkpoint_says_so(places):
    assert_one_line_error(gantool_cli("eval", "--checkpoint", places / "folder"),
                          f"{places / 'folder'} is a folder without checkpoint.pt")


def test_cuda_without_a_driver_is_said_at_once(places, monkeypatch):
    from gantool.cli import common

    monkeypatch.setattr(common, "no_cuda_driver", lambda: True)  # this machine as one without an NVIDIA driver
    for args in (["train", "--device", "cuda", "--out", places / "new"],
                 ["export", "--checkpoint", places / "run", "--device", "cuda", "--out", places / "exp"],
                 ["sample", "--from", places / "run", "--device", "cuda:0", "--out", places / "g.png"],
                 ["eval", "--checkpoint", places / "run", "--device", "cuda"],
                 ["bench", "--exported", places / "folder", "--device", "cuda"]):
        assert_one_line_error(gantool_cli(*args), "CUDA is not available on this machine", "no NVIDIA driver")
    assert_one_line_error(gantool_cli("sample", "--from", places / "run", "--device", "tpu"), "unknown device 'tpu'")


def test_the_driver_check_reads_dev_and_proc(monkeypatch):
    import os

    from gantool.cli import common

    monkeypatch.setattr(os.path, "exists", lambda p: p == "/proc/driver/nvidia")
    assert common.no_cuda_driver() is False
    monkeypatch.setattr(os.path, "exists", lambda p: False)
    monkeypatch.setattr("glob.glob", lambda pattern: [])
    assert common.no_cuda_driver() is True
