"""z ~ N(0, I): the one function that makes every latent in gantool (sample, verify, eval, bench, grids)."""
from __future__ import annotations

import torch

from gantool.config import ModelConfig

# z is drawn in fixed blocks of rows from one seeded CPU generator, so row i depends only on
# (seed, i): the first k rows of latent(n, seed) are latent(k, seed) for every n >= k.
BLOCK_ROWS = 256


def latent(n: int, seed: int = 0, latent_dim: int = ModelConfig.latent_dim,
           device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, latent_dim) standard-normal z for `seed`, bit-identical on every machine and command;
    drawn in float32 on the CPU, then moved to `device` and cast to `dtype`."""
    if n < 0:
        raise ValueError(f"latent: n must be >= 0, got {n}")
    g = torch.Generator().manual_seed(seed)
    blocks = -(-n // BLOCK_ROWS)
    # One allocation up front: a size that cannot fit fails here at once (bench reports it as an
    # oom row) instead of growing a list of blocks until the OS kills the process.
    z = torch.empty(blocks * BLOCK_ROWS, latent_dim)
    for i in range(blocks):
        torch.randn(BLOCK_ROWS, latent_dim, generator=g, out=z[i * BLOCK_ROWS:(i + 1) * BLOCK_ROWS])
    return z[:n].to(device, dtype)
