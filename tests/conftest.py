"""Shared fixtures: a seed-architecture checkpoint made without training, so tests stay fast."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores are shared between torch's intra-op pool and the test process; keep runs predictable.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def make_checkpoint(path: Path, seed: int = 0, **model_overrides) -> Path:
    """Write a gantool checkpoint of a randomly initialised (untrained) seed G and D."""
    from gantool.checkpoint import save_checkpoint
    from gantool.config import ModelConfig, TrainConfig
    from gantool.model import Discriminator, Generator

    torch.manual_seed(seed)
    cfg = ModelConfig(**model_overrides)
    g, d = Generator(cfg), Discriminator(cfg)
    save_checkpoint(path, {
        "model_config": cfg.to_dict(),
        "train_config": TrainConfig().to_dict(),
        "generator": g.state_dict(),
        "discriminator": d.state_dict(),
        "step": 0,
        "epoch": 0,
        "data": {"dataset": "none", "note": "test fixture, untrained"},
        "versions": {"torch": torch.__version__},
    })
    return path


@pytest.fixture(scope="session")
def checkpoint_path(tmp_path_factory) -> Path:
    """A run directory holding checkpoint.pt of an untrained seed-architecture GAN."""
    run = tmp_path_factory.mktemp("run")
    make_checkpoint(run / "checkpoint.pt")
    return run
