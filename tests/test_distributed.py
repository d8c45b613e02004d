"""torchrun: a 2-rank gloo run launched as users launch it, DDP step == one-process step, a 2-rank bench
report, and bad input as one line from rank 0 with a non-zero exit from every rank."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_one_line_error, gantool_cli
from gantool.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--recipe", "seed", "--limit", "200", "--batch-size", "50", "--log-every", "2", "--no-progress",
         "--device", "cpu"]


def env() -> dict[str, str]:
    """Subprocesses import this checkout's gantool, one thread a rank."""
    e = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RESTART_COUNT"):
        e.pop(k, None)
    return e


def torchrun(*args: str, cwd: Path, nproc: int = 2, timeout: int = 240, extra: list[str] | None = None):
    """`python -m torch.distributed.run --standalone` (torchrun) as a user runs it; a free port each time."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           *(extra or []), *args]
    return subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


class Result:
    """CompletedProcess as the fields assert_one_line_error reads."""

    def __init__(self, p: subprocess.CompletedProcess):
        self.exit_code, self.stdout, self.stderr = p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def dist_run(tmp_path_factory):
    """24 steps (6 epochs x 4) of the seed recipe on 2 gloo ranks, from an empty working directory."""
    cwd = tmp_path_factory.mktemp("torchrun")
    res = torchrun("-m", "gantool", "train", *SMALL, "--epochs", "6", "--out", "run", cwd=cwd,
                   extra=["--log-dir", str(cwd.parent / f"{cwd.name}-logs"), "--redirects", "3", "--tee", "3"])
    assert res.returncode == 0, res.stdout + res.stderr
    return cwd, res


def test_two_rank_run_finishes_and_only_rank0_writes(dist_run):
    cwd, res = dist_run
    assert sorted(p.name for p in cwd.iterdir()) == ["run"]  # nothing beside --out
    run = cwd / "run"
    names = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert names == sorted(["checkpoint.pt", "loss.png", "metrics.jsonl", "samples", "samples/final.png",
                            *(f"samples/step-{s:06d}.png" for s in range(4, 25, 4))])
    # Rank 1 said nothing: every line came from rank 0 ([0]: prefix from --tee), once.
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("[default0]:") for ln in lines), res.stdout
    assert sum("run written to run" in ln for ln in lines) == 1
    assert "x 2 ranks (gloo, batch 25 each)" in res.stdout
    payload = load_checkpoint(run)
    assert payload["step"] == 24 and payload["world_size"] == 2 and len(payload["rng"]["ranks"]) == 2
    # The two ranks drew different noise: their saved RNG streams differ.
    a, b = (r["torch"] for r in payload["rng"]["ranks"])
    assert not torch.equal(a, b)
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 24 and records[-1]["samples_per_s"] > 0


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun worker `rank` (a child of the agent `parent`), from /proc."""
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent \
                    and f"RANK={rank}\0".encode() in (d / "environ").read_bytes():
                return int(d.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's pid through /proc")
def test_kill_9_of_a_rank_then_torchrun_restart_resumes(tmp_path):
    """kill -9 of rank 1 after the first checkpoint: the checkpoint stays loadable and torchrun's
    --max-restarts starts both ranks again, which resume from it (same world size) and finish."""
    import signal
    import time

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "--max-restarts=1", "-m", "gantool", "train", *SMALL, "--epochs", "16", "--out", "run"]
    agent = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 900  # startup alone took minutes on the shared, overloaded 2-core machine
        while not (tmp_path / "run" / "checkpoint.pt").exists() and agent.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        pid = _rank_pid(agent.pid, 1)
        assert (tmp_path / "run" / "checkpoint.pt").exists(), "no checkpoint within the deadline"
        assert pid is not None and agent.poll() is None, "rank 1 not found while the job runs"
        os.kill(pid, signal.SIGKILL)
        load_checkpoint(tmp_path / "run")  # whole: checkpoints are written atomically
        stdout, stderr = agent.communicate(timeout=300)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, stdout + stderr
    assert "torchrun restart 1: resuming from run/checkpoint.pt" in stdout
    payload = load_checkpoint(tmp_path / "run")
    assert payload["step"] == 64 and payload["world_size"] == 2


def test_resume_with_another_world_size(dist_run, tmp_path):
    """One process continues the 2-rank run: same global batch and data order, fresh noise streams."""
    cwd, _ = dist_run
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes((cwd / "run" / "checkpoint.pt").read_bytes())
    out = gantool_cli("train", "--resume", run, "--epochs", "7", "--no-progress")
    assert out.exit_code == 0, out.output + out.stderr
    assert "the run had 2 rank(s), now 1" in out.stdout
    payload = load_checkpoint(run)
    assert payload["step"] == 28 and payload["world_size"] == 1


@pytest.mark.usefixtures("one_thread")
def test_two_rank_step_equals_one_process_step(tmp_path):
    """Dropout off, the tuned architecture (conv D, PacGAN 2, class head) with top-k on: one DDP
    step on 2 ranks gives the G and D of one step of a single process on the same global batch."""
    import dist_step

    dist_step.main(str(tmp_path / "one.pt"))  # this process: world size 1
    two = torchrun(str(ROOT / "tests" / "dist_step.py"), str(tmp_path / "two.pt"), cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for net in ("G", "D"):
        moved = max((a[net][k] - a["init_" + net][k]).abs().max().item() for k in a[net])
        assert moved > 1e-5, f"{net} did not move: the comparison would be vacuous"
        diff = max((a[net][k] - b[net][k]).abs().max().item() for k in a[net])
        assert diff <= 1e-6, f"{net}: 2-rank step differs from the 1-process step by {diff:.3g}"
    assert torch.allclose(a["stats"], b["stats"], atol=1e-5)  # losses of the global batch, on both


def test_two_rank_bench_gives_one_merged_report(checkpoint_path, tmp_path):
    out = tmp_path / "bench.json"
    res = torchrun("-m", "gantool", "bench", "--checkpoint", str(checkpoint_path), "--backends", "eager",
                   "--precisions", "fp32", "--batch-sizes", "8", "--warmup", "0", "--min-time", "0",
                   "--min-repeats", "3", "--json", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("gantool bench on") == 1  # one table, from rank 0
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["distributed"]["world_size"] == 2
    from gantool.bench.report import validate

    doc = json.loads(out.read_text())
    validate(doc)
    assert sorted(r["process_rank"] for r in doc["results"]) == [0, 1]
    assert doc["distributed"]["threads_per_rank"] == [1, 1]
    (agg,) = doc["distributed"]["aggregate"]
    assert agg["status"] == "ok" and len(agg["per_rank_samples_per_s"]) == 2
    assert agg["samples_per_s"] == pytest.approx(sum(agg["per_rank_samples_per_s"]), rel=1e-4)
    assert agg["scaling_efficiency"] == pytest.approx(agg["samples_per_s"] / (2 * agg["single_rank_samples_per_s"]), rel=1e-4)


@pytest.fixture
def as_rank(monkeypatch):
    """Make this process look like rank r of a 2-rank torchrun job (its environment), so the CLI's
    bad-input path runs in-process: every rank validates before any collective."""
    import gantool.distributed

    monkeypatch.setattr(gantool.distributed, "QUIET_EXIT_DELAY_S", 0.0)

    def set_rank(r: int) -> None:
        for k, v in dict(RANK=r, LOCAL_RANK=r, WORLD_SIZE=2, LOCAL_WORLD_SIZE=2).items():
            monkeypatch.setenv(k, str(v))

    return set_rank


@pytest.mark.parametrize("args, needle", [
    (["train", "--recipe", "tuned", "--limit", "200", "--batch-size", "54", "--device", "cpu", "--out", "o"],
     "--batch-size 54 is not divisible by 2 ranks x PacGAN pack 2 (= 4)"),
    (["train", *SMALL, "--batch-size", "51", "--out", "o"], "not divisible by 2 ranks x PacGAN pack 1"),
    (["train", *SMALL, "--device", "cuda", "--out", "o"], "--device cuda: "),
    (["export", "--checkpoint", "CKPT", "--format", "triton", "--out", "repo", "--max-batch-size", "0"],
     "--max-batch-size must be >= 1"),
    (["export", "--checkpoint", "CKPT", "--format", "triton", "--out", "full"], "that gantool did not write"),
])
def test_bad_input_one_line_from_rank0_and_every_rank_fails(args, needle, as_rank, tmp_path, monkeypatch,
                                                            checkpoint_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "generator_onnx").mkdir()  # a model folder of that name gantool did not write
    if "cuda" in args:  # one GPU for two ranks, whatever this machine has
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    args = [str(checkpoint_path) if a == "CKPT" else a for a in args]
    codes = []
    for r in (0, 1):
        as_rank(r)
        res = gantool_cli(*args)
        if r == 0:
            assert_one_line_error(res, needle)
        else:
            assert res.stderr == "" and res.stdout == "", res.stderr  # rank 1 says nothing
        codes.append(res.exit_code)
    assert codes[0] == codes[1] != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # nothing written


def test_fewer_gpus_than_ranks_is_one_clear_error(monkeypatch):
    from gantool.distributed import Dist
    from gantool.errors import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match="2 ranks on this node need one GPU each, but 1 CUDA device"):
        Dist(rank=1, world=2, local_rank=1, local_world=2).device("cuda")
    assert Dist(rank=0, world=2, local_rank=0, local_world=1).device("cuda") == torch.device("cuda", 0)


def test_nproc_shortcut_launches_torchrun_and_reports_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "gantool", "train", "--nproc", "2", *SMALL, "--batch-size", "51",
                          "--out", "o"], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
    assert_one_line_error(Result(res), "not divisible by 2 ranks")
