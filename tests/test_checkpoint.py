"""Checkpoints: round trip, atomic writes, safe loading, and one-line errors for bad files."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from gantool.checkpoint import (atomic_write, atomic_write_text, load_checkpoint, load_generator, load_state,
                                save_checkpoint, strip_compile_prefix)
from gantool.config import ModelConfig
from gantool.errors import CheckpointError, OutputError
from gantool.model import Generator
from conftest import make_checkpoint


def test_round_trip(tmp_path):
    cfg = ModelConfig(g_hidden=(16,), d_hidden=(16,))
    g = Generator(cfg)
    payload = {"model_config": cfg.to_dict(), "generator": g.state_dict(), "step": 7,
               "rng": {"torch": torch.get_rng_state()}, "fixed_noise": torch.randn(4, 100)}
    save_checkpoint(tmp_path / "c.pt", payload)
    back = load_checkpoint(tmp_path / "c.pt")
    assert back["format"] == "gantool.checkpoint" and back["step"] == 7
    assert torch.equal(back["rng"]["torch"], payload["rng"]["torch"])
    g2, cfg2, _ = load_generator(tmp_path / "c.pt")
    assert cfg2 == cfg and not g2.training
    z = torch.randn(3, 100)
    assert torch.equal(g.eval()(z), g2(z))
    # a run directory resolves to its checkpoint.pt
    save_checkpoint(tmp_path / "run" / "checkpoint.pt", payload)
    assert load_checkpoint(tmp_path / "run")["step"] == 7


def test_load_generator_prefers_ema_when_present(tmp_path):
    cfg = ModelConfig(g_hidden=(8,), d_hidden=(8,))
    g, ema = Generator(cfg), Generator(cfg)
    save_checkpoint(tmp_path / "c.pt", {"model_config": cfg.to_dict(), "generator": g.state_dict(),
                                        "generator_ema": ema.state_dict()})
    got_ema, _, _ = load_generator(tmp_path / "c.pt", ema=True)
    got_raw, _, _ = load_generator(tmp_path / "c.pt", ema=False)
    assert torch.equal(got_ema.net[0].weight, ema.net[0].weight)
    assert torch.equal(got_raw.net[0].weight, g.net[0].weight)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "file.txt"
    atomic_write_text(target, "old")

    def explode(p):
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, explode)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]  # no temp file left behind


def test_unwritable_location(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        save_checkpoint(blocker / "c.pt", {"model_config": {}, "generator": {}})


def test_missing_truncated_and_foreign_files(tmp_path, checkpoint_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    raw = (checkpoint_path / "checkpoint.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "trunc.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a gantool checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    save_checkpoint(tmp_path / "nogen.pt", {"model_config": {}})
    with pytest.raises(CheckpointError, match="missing generator"):
        load_checkpoint(tmp_path / "nogen.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('GANTOOL_EVIL_MARK', '/tmp/gantool-evil-ran')}",))


def test_code_running_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    mark = tmp_path / "ran"
    monkeypatch.setenv("GANTOOL_EVIL_MARK", str(mark))
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": "gantool.checkpoint", "evil": _Evil()}, f)
    torch.save({"format": "gantool.checkpoint", "version": 1, "model_config": {}, "generator": {}, "x": _Evil()},
               tmp_path / "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(CheckpointError):
            load_checkpoint(tmp_path / name)
    assert not mark.exists()


def test_weights_of_another_architecture_are_one_line(tmp_path):
    wide = make_checkpoint(tmp_path / "wide.pt", g_hidden=(64,))
    payload = load_checkpoint(wide)
    with pytest.raises(CheckpointError, match="do not fit this architecture") as e:
        load_state(Generator(), payload["generator"], "generator")
    assert "\n" not in str(e.value)


def test_compile_prefix_is_stripped():
    assert list(strip_compile_prefix({"_orig_mod.net.0.weight": torch.zeros(1)})) == ["net.0.weight"]


def test_a_text_file_is_not_a_checkpoint_rather_than_unsafe(tmp_path):
    p = tmp_path / "notes.pt"
    p.write_text("hello, this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a (gantool )?checkpoint") as e:
        load_checkpoint(p)
    assert "run code" not in str(e.value)
    p.write_text("v" * 100)  # pickle opcode 'v' is not allowed by weights_only: still "not a checkpoint"
    with pytest.raises(CheckpointError, match="not a (gantool )?checkpoint") as e:
        load_checkpoint(p)
    assert "run code" not in str(e.value)
