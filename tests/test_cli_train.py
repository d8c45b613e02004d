"""`gantool train` through the CLI: a smoke run, resume, and every bad input as one `error:` line."""
from __future__ import annotations

import pytest
import torch

from gantool.checkpoint import load_checkpoint, sha256_file
from gantool.train.trainer import Trainer
from conftest import assert_one_line_error, gantool_cli, make_checkpoint

# --limit (hidden) keeps runs to a few seconds: 200 images, batch 50 -> 4 steps an epoch. The seed
# recipe is named so a tuned default recipe (e.g. PacGAN packs that 50 is not a multiple of) can't break these.
SMALL = ["--recipe", "seed", "--limit", "200", "--batch-size", "50", "--log-every", "2", "--no-progress", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args: str):
    return gantool_cli("train", *args)



@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = invoke(*SMALL, "--epochs", "1", "--out", str(out), "--seed", "3")
    assert result.exit_code == 0, result.output + result.stderr
    return out, result


def test_smoke_run_prints_where_it_wrote(cli_run):
    out, result = cli_run
    assert f"run written to {out}" in result.stdout
    assert (out / "checkpoint.pt").is_file() and (out / "samples" / "final.png").is_file()
    payload = load_checkpoint(out)
    assert payload["step"] == 4 and payload["train_config"]["seed"] == 3


def test_resume_extends_a_run_with_more_epochs(cli_run, tmp_path):
    out, _ = cli_run
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes())
    result = invoke("--resume", str(copy), "--epochs", "2", "--no-progress")
    assert result.exit_code == 0, result.output + result.stderr
    assert load_checkpoint(copy)["step"] == 8 and f"run written to {copy}" in result.stdout


@pytest.mark.parametrize("args, needle", [
    (["--epochs", "0"], "--epochs must be > 0"),
    (["--epochs", "-3"], "--epochs must be > 0"),
    (["--batch-size", "0"], "--batch-size must be > 0"),
    (["--batch-size", "-5"], "--batch-size must be > 0"),
    (["--batch-size", "abc"], "'abc' is not an integer"),
    (["--lr", "fast"], "not a number"),
    (["--dataset", "cifar"], "unknown dataset 'cifar'"),
    (["--recipe", "nope"], "unknown recipe 'nope'"),
    (["--precision", "fp8"], "unknown precision"),
    (["--device", "tpu"], "unknown device"),
])
def test_bad_options(args, needle, tmp_path):
    assert_one_line_error(invoke(*args, "--out", str(tmp_path / "o")), needle)


def test_batch_larger_than_dataset(tmp_path):
    assert_one_line_error(invoke("--recipe", "seed", "--limit", "200", "--batch-size", "500", "--out", str(tmp_path / "o")),
                          "larger than the dataset (200 images)")
    assert_one_line_error(invoke("--recipe", "seed", "--batch-size", "5000", "--out", str(tmp_path / "o")),
                          "larger than the dataset (4500 images)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(tmp_path):
    assert_one_line_error(invoke("--device", "cuda", "--out", str(tmp_path / "o")), "CUDA is not available")


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    assert_one_line_error(invoke(*SMALL, "--out", str(blocker / "run")), "cannot write to --out")
    assert blocker.read_text() == "keep me"


def test_out_holding_another_run_is_not_overwritten(cli_run):
    out, _ = cli_run
    before = sha256_file(out / "checkpoint.pt")
    assert_one_line_error(invoke(*SMALL, "--epochs", "1", "--out", str(out)), "already holds a run", "--resume")
    assert sha256_file(out / "checkpoint.pt") == before


def test_resume_missing(tmp_path):
    assert_one_line_error(invoke("--resume", str(tmp_path / "nothing.pt")), "checkpoint not found")


def test_resume_truncated(cli_run, tmp_path):
    out, _ = cli_run
    bad = tmp_path / "truncated.pt"
    bad.write_bytes((out / "checkpoint.pt").read_bytes()[:5000])
    assert_one_line_error(invoke("--resume", str(bad)), "truncated or not a checkpoint")


def test_resume_non_checkpoint(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello, I am not a checkpoint")
    assert_one_line_error(invoke("--resume", str(bad)), "not a gantool checkpoint")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    assert_one_line_error(invoke("--resume", str(other)), "not a gantool checkpoint")


def test_resume_other_architecture(cli_run, tmp_path):
    # A checkpoint whose weights belong to another architecture than its config describes.
    out, _ = cli_run
    payload = load_checkpoint(out)
    fake = tmp_path / "wide.pt"
    make_checkpoint(fake, g_hidden=(64,), d_hidden=(64,))
    wide = load_checkpoint(fake)
    payload["generator"], payload["discriminator"] = wide["generator"], wide["discriminator"]
    from gantool.checkpoint import save_checkpoint

    mixed = tmp_path / "mixed.pt"
    save_checkpoint(mixed, {k: v for k, v in payload.items() if k not in ("format", "version")})
    assert_one_line_error(invoke("--resume", str(mixed), "--no-progress"), "do not fit this architecture")
    # A checkpoint of an untrained fixture has no optimiser state: it cannot be resumed.
    assert_one_line_error(invoke("--resume", str(fake), "--no-progress"), "not a training checkpoint")
    # Asking for a recipe of another architecture than the checkpoint's.
    from gantool import config as gconfig

    gconfig.RECIPES["packed-test"] = gconfig.Recipe(name="packed-test", description="", epochs=1, model={"d_pack": 2})
    try:
        assert_one_line_error(invoke("--resume", str(out), "--recipe", "packed-test"), "another architecture")
    finally:
        del gconfig.RECIPES["packed-test"]


def test_nan_loss_exit_code_step_and_last_good_checkpoint(tmp_path, monkeypatch):
    original = Trainer.train_step

    def poisoned(self, real, labels=None):
        if self.step == 5:  # epoch 1 (steps 1-4) is checkpointed; step 6 sees NaN weights
            with torch.no_grad():
                self.D.net[0].weight.fill_(float("inf"))
        return original(self, real, labels)

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    out = tmp_path / "nan"
    result = invoke(*SMALL, "--epochs", "3", "--out", str(out))
    assert_one_line_error(result, "NaN/Inf at step 6", "step 4", code=3)
    good = load_checkpoint(out)
    assert good["step"] == 4 and all(torch.isfinite(v).all() for v in good["discriminator"].values())


def test_a_run_short_of_digits_prints_one_hint(cli_run):
    from gantool.config import DIGITS_AFTER_STEPS

    _, result = cli_run
    hints = [ln for ln in result.stdout.splitlines() if ln.startswith("hint:")]
    assert len(hints) == 1 and "ended at step 4" in hints[0] and f"{DIGITS_AFTER_STEPS:,} steps" in hints[0]
    assert "hint:" not in result.stderr


def test_loss_plot_labels_name_what_is_summed():
    from gantool.train.log import loss_labels
    from gantool.train.options import resolve_configs

    d, g = loss_labels(resolve_configs("seed")[1])
    assert (d, g) == ("D: BCE(real, 1) + BCE(fake, 0)", "G: BCE(D(G(z)), 1)")
    d, g = loss_labels(resolve_configs()[1])  # the default recipe: label smoothing and the class term
    assert "BCE(real, 0.9)" in d and "CE(class head, labels)" in d
    assert "entropy" in g and "can go < 0" in g
