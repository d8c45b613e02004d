"""One z for one seed: every command draws its latents from gantool.noise.latent, so the same seed
and count give bit-identical z in sample, verify, eval, bench and the training progress grids."""
from __future__ import annotations

import pytest
import torch

from conftest import FakeRunner
from gantool.noise import BLOCK_ROWS, latent
from gantool.runners import load_runner


@pytest.mark.parametrize("n", [1, 7, BLOCK_ROWS, BLOCK_ROWS + 3, 3 * BLOCK_ROWS - 1])
def test_a_prefix_of_a_larger_draw_is_the_smaller_draw(n):
    big = latent(4 * BLOCK_ROWS, seed=5)
    assert torch.equal(latent(n, seed=5), big[:n])
    assert latent(n, seed=5).shape == (n, 100) and latent(n, seed=5).dtype == torch.float32


def test_seeds_differ_and_repeat_exactly():
    assert torch.equal(latent(64, 1), latent(64, 1))
    assert not torch.equal(latent(64, 1), latent(64, 2))
    z = latent(20_000, 0)
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01  # N(0, I)
    assert latent(3, 0, latent_dim=7, dtype=torch.float16).shape == (3, 7)
    assert torch.equal(latent(3, 0, dtype=torch.float16), latent(3, 0).half())


@pytest.fixture()
def recording(checkpoint_path):
    """Eager fp32 of a checkpoint that remembers every z it was called on (`calls`)."""
    eager = load_runner(checkpoint_path, "eager")
    return FakeRunner(eager, latent_dim=eager.info.latent_dim, img_shape=eager.info.img_shape)


def test_sample_uses_the_seeded_z(recording, monkeypatch, tmp_path):
    import gantool.sample as sample

    monkeypatch.setattr(sample, "open_runner", lambda *a, **k: recording)
    sample.sample_grid("unused", tmp_path / "grid.png", n=9, seed=3)
    assert torch.equal(recording.calls[0], latent(9, 3))


def test_verify_uses_the_seeded_z(recording, checkpoint_path):
    from gantool.verify.compare import verify_runner

    verify_runner(load_runner(checkpoint_path, "eager"), recording, batch_sizes=(1, 7), seed=3)
    assert [c.shape[0] for c in recording.calls] == [1, 7]
    assert all(torch.equal(c, latent(len(c), 3)) for c in recording.calls)


def test_eval_uses_the_seeded_z(recording):
    from gantool.quality.metrics import generate

    generate(recording, 1500, seed=3)  # two eval batches of at most 1000
    assert torch.equal(torch.cat(recording.calls), latent(1500, 3))


def test_bench_inputs_start_with_the_seeded_z():
    from gantool.bench.timing import make_inputs

    zs = make_inputs(batch=7, latent=100, n=3, seed=3)
    assert torch.equal(zs[0], latent(7, 3))  # the timed and parity-checked first input
    assert torch.equal(torch.cat(zs), latent(21, 3))


def test_training_progress_grids_use_the_seeded_z(checkpoint_path):
    from gantool.data import Dataset
    from gantool.train import Trainer, resolve_configs

    model_cfg, cfg = resolve_configs("seed", seed=3, batch_size=4)
    data = Dataset("synthetic", torch.zeros(8, 1, 28, 28), torch.zeros(8, dtype=torch.long), {})
    t = Trainer(model_cfg, cfg, data, torch.device("cpu"))
    assert torch.equal(t.fixed_noise, latent(64, 3))
