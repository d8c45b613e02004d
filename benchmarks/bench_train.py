"""One training step (batch 100) of gantool's loop against the faithful seed loop (pytest-benchmark).

Both take their batch as their loop does: the seed through its DataLoader with per-sample
transforms, gantool by gathering from the device-resident tensor. One round = one step, so
ops/s x batch = train samples/s. GANTOOL_BENCH_TRAIN_PRECISIONS picks gantool's precisions.
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

    def step():
        nonlocal batches
        try:
            images, _ = next(batches)
        except StopIteration:  # a new epoch: the seed re-iterates its DataLoader (reshuffles)
            batches = iter(loop.loader)
            images, _ = next(batches)
        loop.step(images)

    return step


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
        state["i"] += 1

    return step


@pytest.mark.parametrize("loop,precision", CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_train_step(benchmark, train_data, bench_device, loop, precision):
    device = torch.device(bench_device)
    step = _seed_step(train_data, device) if loop == "seed" else _gantool_step(train_data, device, precision)
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
