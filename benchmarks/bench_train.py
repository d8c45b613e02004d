"""One training step (batch 100) of gantool's loop against the faithful seed loop (pytest-benchmark).

Both take their batch as their loop does: the seed through its DataLoader with per-sample
transforms, gantool by gathering from the device-resident tensor. One round = one step, so
ops/s x batch = train samples/s. GANTOOL_BENCH_TRAIN_PRECISIONS picks gantool's precisions.
Each case then checks that what it timed was training: G's weights moved and stayed finite, and
the losses of the last step are finite (a step that silently did nothing would time fast).
"""
from __future__ import annotations

import os

import pytest
import torch

from gantool.data import load_dataset
from gantool.device import sync

BATCH = int(os.environ.get("GANTOOL_BENCH_TRAIN_BATCH", "100"))
PRECISIONS = os.environ.get("GANTOOL_BENCH_TRAIN_PRECISIONS", "fp32,bf16").split(",")
CASES = [("seed", "fp32")] + [("gantool", p) for p in PRECISIONS if p]


@pytest.fixture(scope="session")
def train_data():
    return load_dataset("mnist-5k")


def _seed_step(data, device):
    from gantool.train.seed_loop import SeedLoop, seed_dataset

    loop = SeedLoop(seed_dataset(data.images, data.labels), device=device, batch_size=BATCH)
    batches = iter(())
    last = {}

    def step():
        nonlocal batches
        try:
            images, _ = next(batches)
        except StopIteration:  # a new epoch: the seed re-iterates its DataLoader (reshuffles)
            batches = iter(loop.loader)
            images, _ = next(batches)
        last["losses"] = loop.step(images)[:2]  # d_loss, g_loss

    return step, loop.generator, lambda: torch.tensor([float(x) for x in last["losses"]])


def _gantool_step(data, device, precision):
    from gantool.train import Trainer, resolve_configs

    model_cfg, cfg = resolve_configs("seed", batch_size=BATCH, precision=precision, device=str(device))
    t = Trainer(model_cfg, cfg, data, device)
    n = t.images.shape[0]
    state = {"i": n // BATCH, "perm": None}
    buf = torch.zeros(cfg.log_every, 4, device=device)

    def step():
        if state["i"] == n // BATCH:
            state["perm"], state["i"] = torch.randperm(n, generator=t.shuffle).to(device), 0
        i = state["i"]
        buf[i % cfg.log_every] = t.train_on(state["perm"][i * BATCH:(i + 1) * BATCH])
        state["last"] = i % cfg.log_every
        state["i"] += 1

    return step, t.G, lambda: buf[state["last"]].float().cpu()


@pytest.mark.parametrize("loop,precision", CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_train_step(benchmark, train_data, bench_device, loop, precision):
    device = torch.device(bench_device)
    step, g, losses = _seed_step(train_data, device) if loop == "seed" else _gantool_step(train_data, device, precision)
    before = [p.detach().clone() for p in g.parameters()]
    for _ in range(3):  # warm-up: allocator, oneDNN primitives, cuBLAS handles
        step()
    sync(device)

    def timed():
        step()
        sync(device)

    benchmark.group = f"train step, batch {BATCH}"
    benchmark.extra_info.update(loop=loop, precision=precision, batch=BATCH, device=str(device),
                                threads=torch.get_num_threads())
    benchmark(timed)
    after = list(g.parameters())
    assert all(torch.isfinite(p).all() for p in after), "G's weights are not finite after the timed steps"
    assert any(not torch.equal(a, b) for a, b in zip(after, before)), "the timed steps did not change G"
    assert torch.isfinite(losses()).all(), f"the last step's losses are not finite: {losses()}"
