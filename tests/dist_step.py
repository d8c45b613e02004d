"""One optimisation step of the tuned architecture (dropout off, top-k on) on a fixed global batch,
as one process or as a torchrun rank; rank 0 saves G and D before and after, and the step's stats,
to argv[1]. tests/test_distributed.py checks that a 2-rank step equals a 1-process step."""
import sys

import torch

from gantool.config import ModelConfig
from gantool.data import Dataset
from gantool.distributed import Dist
from gantool.train.options import resolve_configs
from gantool.train.trainer import Trainer

B = 16  # global batch: 2 ranks x 8, PacGAN packs of 2


def main(out: str) -> None:
    dist = Dist.from_env()
    dist.init(torch.device("cpu"))
    # lr 1e-4: Adam's first update is lr * g / (|g| + eps), so for gradients near eps the fp32
    # reduction-order noise of DDP's all-reduce moves a weight by up to ~1e-3 * lr.
    model, cfg = resolve_configs("tuned", batch_size=B, device="cpu", top_k=0.5, top_k_gamma=0.5, lr=1e-4)
    model = ModelConfig(**{**model.to_dict(), "d_dropout": 0.0, "d_hidden": tuple(model.d_hidden),
                           "g_hidden": tuple(model.g_hidden), "d_channels": tuple(model.d_channels)})
    g = torch.Generator().manual_seed(1)
    data = Dataset("synthetic", torch.rand(64, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (64,), generator=g))
    t = Trainer(model, cfg, data, torch.device("cpu"), dist)
    init = {"init_G": {k: v.clone() for k, v in t.G.state_dict().items()},
            "init_D": {k: v.clone() for k, v in t.D.state_dict().items()}}
    t.epoch = 3  # top-k share max(0.5, 0.5**3) = 0.5: G learns from the global top half
    stats = []
    for step in range(1):
        idx = torch.arange(step * B, (step + 1) * B)
        z = torch.randn(B, model.latent_dim, generator=g)  # the global batch's noise, sliced per rank
        lo, hi = dist.rank * t.local_batch, (dist.rank + 1) * t.local_batch
        s = t.train_step(t.images[idx][lo:hi], t.labels[idx][lo:hi], z=z[lo:hi])
        stats.append(dist.mean(s))
    if dist.is_main:
        torch.save({"G": t.G.state_dict(), "D": t.D.state_dict(), "stats": torch.stack(stats), **init}, out)
    dist.close()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1])
