"""Metrics on feature vectors (N, d): FID, KID with its spread, precision/recall/density/coverage."""
from __future__ import annotations

import math

import torch
from torch import nn

K_NEAREST = 3          # Kynkaanniemi et al. 2019 use k = 3 for precision and recall
KID_SUBSETS = 100      # torchmetrics' and torch-fidelity's defaults
KID_SUBSET_SIZE = 1000
CHUNK = 2048           # rows of a distance matrix held at once: 2048 x 10,000 float64 = 160 MB


class _Given(nn.Module):
    """The `feature` module for torchmetrics when the features are already computed: identity."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FID:
    """torchmetrics' FrechetInceptionDistance on precomputed features, the real statistics kept."""

    def __init__(self, real: torch.Tensor):
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.metric = FrechetInceptionDistance(feature=_Given(real.shape[1]), reset_real_features=False)
        self.metric.update(real.float(), real=True)

    def __call__(self, fake: torch.Tensor) -> float:
        self.metric.reset()  # drops the fake statistics only
        self.metric.update(fake.float(), real=False)
        return float(self.metric.compute())


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
        seed: int = 0) -> tuple[float, float, int]:
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased polynomial-kernel MMD^2 on random subsets.

    Returns (mean, std over subsets, subset size). The subset size is capped at half the smaller set
    so the subsets differ in their real rows too; the std is then the spread of one subset's
    estimate, an upper bound on the mean's standard error. torchmetrics' poly_mmd does the kernel sums.
    """
    from torchmetrics.image.kid import poly_mmd

    m = min(subset_size, len(real) // 2, len(fake) // 2)
    if m < 2:
        raise ValueError(f"KID needs at least 4 samples a side, got {len(real)} real and {len(fake)} fake")
    gen = torch.Generator().manual_seed(seed)
    real, fake = real.double(), fake.double()
    vals = torch.stack([poly_mmd(real[torch.randperm(len(real), generator=gen)[:m]],
                                 fake[torch.randperm(len(fake), generator=gen)[:m]]) for _ in range(subsets)])
    return float(vals.mean()), float(vals.std(unbiased=False)), m


def knn_radii(x: torch.Tensor, k: int = K_NEAREST) -> torch.Tensor:
    """(N, d) -> (N,): each point's distance to its k-th nearest other point (the k-NN ball's radius)."""
    if len(x) <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} points, got {len(x)}")
    # The point itself is at distance 0 in its own row, so the k-th other point is the (k+1)-th smallest.
    return torch.cat([torch.cdist(x[i:i + CHUNK], x).kthvalue(k + 1, dim=1).values for i in range(0, len(x), CHUNK)])


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = K_NEAREST) -> dict[str, float]:
    """Precision and recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020).

    precision: share of fake points inside some real point's k-NN ball (fidelity);
    recall:    share of real points inside some fake point's k-NN ball (diversity);
    density:   mean count of real balls holding each fake point, over k (about 1 for real data);
    coverage:  share of real points whose ball holds at least one fake point.
    The same definitions as the authors' reference code (clovaai/generative-evaluation-prdc), with
    torch.cdist over row chunks so 10,000 x 10,000 never sits in memory at once.
    """
    real, fake = real.double(), fake.double()
    r_real, r_fake = knn_radii(real, k), knn_radii(fake, k)
    in_real_balls = torch.zeros(len(fake), dtype=torch.long)   # per fake point: how many real balls hold it
    real_recalled = torch.zeros(len(real), dtype=torch.bool)   # per real point: inside some fake ball
    nearest_fake = torch.full((len(real),), math.inf, dtype=torch.float64)
    for i in range(0, len(fake), CHUNK):
        d = torch.cdist(fake[i:i + CHUNK], real)  # (c, R)
        in_real_balls[i:i + CHUNK] = (d < r_real[None, :]).sum(dim=1)
        real_recalled |= (d < r_fake[i:i + CHUNK, None]).any(dim=0)
        nearest_fake = torch.minimum(nearest_fake, d.min(dim=0).values)
    return {
        "precision": float((in_real_balls > 0).double().mean()),
        "recall": float(real_recalled.double().mean()),
        "density": float(in_real_balls.double().mean() / k),
        "coverage": float((nearest_fake < r_real).double().mean()),
    }
