"""Feature-space metrics against direct definitions: PRDC as the authors' code computes it, KID, FID."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gantool.quality import manifold


def _reference_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """clovaai/generative-evaluation-prdc's compute_prdc, full matrices in numpy."""
    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    r_real = np.partition(dist(real, real), k, axis=-1)[:, k]
    r_fake = np.partition(dist(fake, fake), k, axis=-1)[:, k]
    d = dist(real, fake)
    return {"precision": (d < r_real[:, None]).any(axis=0).mean(),
            "recall": (d < r_fake[None, :]).any(axis=1).mean(),
            "density": (d < r_real[:, None]).sum(axis=0).mean() / k,
            "coverage": (d.min(axis=1) < r_real).mean()}


@pytest.mark.parametrize("k", [3, 5])
def test_prdc_matches_the_reference_definition_across_chunks(monkeypatch, k):
    monkeypatch.setattr(manifold, "CHUNK", 97)  # several row chunks, one ragged
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(300, 8, generator=g), 1.3 * torch.randn(350, 8, generator=g) + 0.3
    ours = manifold.prdc(real, fake, k)
    ref = _reference_prdc(real.double().numpy(), fake.double().numpy(), k)
    assert ours == pytest.approx(ref, abs=1e-12)
    assert 0.1 < ours["precision"] < 0.9 and 0.1 < ours["recall"] < 1.0  # a case that can fail either way


def test_prdc_separates_fidelity_from_diversity():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(400, 4, generator=g)
    same = manifold.prdc(real, torch.randn(400, 4, generator=g))
    collapsed = manifold.prdc(real, 0.05 * torch.randn(400, 4, generator=g))   # all near one real mode
    far = manifold.prdc(real, torch.randn(400, 4, generator=g) + 20.0)
    assert same["precision"] > 0.8 and same["recall"] > 0.8 and 0.7 < same["density"] < 1.3 and same["coverage"] > 0.8
    assert collapsed["precision"] > 0.95 and collapsed["recall"] < 0.05 and collapsed["coverage"] < 0.1
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_kid_is_zero_in_expectation_and_grows_with_distance():
    g = torch.Generator().manual_seed(2)
    real = torch.randn(600, 16, generator=g)
    same, std, m = manifold.kid(real, torch.randn(600, 16, generator=g))
    shifted, _, _ = manifold.kid(real, torch.randn(600, 16, generator=g) + 0.5)
    assert m == 300 and abs(same) < 2 * std and shifted > 10 * std
    assert manifold.kid(real, real[:100], seed=5) == manifold.kid(real, real[:100], seed=5)  # seeded subsets
    with pytest.raises(ValueError, match="at least 4"):
        manifold.kid(real, real[:3])


def test_fid_on_features_equals_torchmetrics_on_images():
    from torchmetrics.image.fid import FrechetInceptionDistance

    g = torch.Generator().manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 6))
    net.num_features = 6
    real, fake = torch.randn(200, 1, 3, 4, generator=g), torch.randn(150, 1, 3, 4, generator=g) + 0.2
    direct = FrechetInceptionDistance(feature=net, normalize=True)
    direct.update(real, real=True)
    direct.update(fake, real=False)
    with torch.no_grad():
        ours = manifold.FID(net(real))(net(fake))
    assert ours == pytest.approx(float(direct.compute()), rel=1e-4) and ours > 0.01
