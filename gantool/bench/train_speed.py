"""Train samples/s of gantool's loop against the faithful seed loop: same data, device and batch.

The loops run in rounds (issue 24): each round times one short slice of every loop, in a fresh
seeded random order, and gantool's speed over the seed's is the median of the per-round ratios with
a distribution-free 95 % interval. A machine that drifts (these VMs move 10-20 % within minutes)
slows both slices of a round alike, so the ratio holds; a fixed order would put the drift between
the loops into the ratio (it moved 1.89x -> 2.43x between runs).
"""
from __future__ import annotations

import platform
import statistics
import time
from typing import Any, Callable, Iterable, Sequence

import torch

from gantool import __version__
from gantool.bench.rounds import ratio_summary, round_order
from gantool.config import ModelConfig
from gantool.data import load_dataset
from gantool.device import DTYPES, device_name, resolve_device, supports_dtype, sync
from gantool.errors import ConfigError, first_line

# A slice: a few steps (at batch 100 a CPU step of the seed loop takes ~0.11 s on the quiet 2-core VM,
# gantool's ~0.04 s, so a round of both is ~0.75 s); enough rounds for the median's 95 % interval
# (it needs >= 6; 15 give the 4th..12th of the sorted per-round ratios).
CPU_STEPS, GPU_STEPS = 5, 20
CPU_ROUNDS, GPU_ROUNDS = 15, 30


def round_orders(names: Sequence[str], rounds: int, seed: int) -> list[list[str]]:
    """A fresh random order of the loops for each round, from `seed` alone (recorded, replayable):
    gantool.bench.rounds' order, the one bench's inference rows take turns in."""
    names = list(names)
    return [[names[i] for i in round_order(len(names), seed, r)] for r in range(rounds)]


def run_rounds(loops: dict[str, Callable[[], None]], orders: list[list[str]],
               clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds of one slice of every loop per round, run in each round's order. A loop must finish
    its work before returning (on CUDA: synchronise), so that the next slice's clock starts clean."""
    times: dict[str, list[float]] = {name: [] for name in loops}
    for order in orders:
        for name in order:
            t0 = clock()
            loops[name]()
            times[name].append(clock() - t0)
    return times


def paired_ratio(ref_times: Sequence[float], times: Sequence[float]) -> dict[str, Any]:
    """Speed over the reference, round by round (ref seconds / seconds for the same work: > 1 = faster):
    the median of those ratios and its 95 % interval from order statistics (None below 6 rounds)."""
    return ratio_summary([r / t for r, t in zip(ref_times, times, strict=True)])


def _synced(device: torch.device, fn: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        fn()
        sync(device)  # queued kernels belong to the timed slice

    return run


def gantool_steps(trainer, steps: int) -> Callable[[], None]:
    """The inner body of gantool's loop (shuffle per epoch, gather on device, train_step, stats
    into the device buffer, one host read per log window) without checkpoints or grids."""
    B, n = trainer.cfg.batch_size, trainer.images.shape[0]
    per_epoch, log_every = n // B, trainer.cfg.log_every
    buf = torch.zeros(log_every, 4, device=trainer.device)
    state = {"i": 0, "perm": None}

    def run() -> None:
        for k in range(steps):
            i = state["i"] % per_epoch
            if i == 0:
                state["perm"] = torch.randperm(n, generator=trainer.shuffle).to(trainer.device)
            buf[k % log_every] = trainer.train_on(state["perm"][i * B:(i + 1) * B])
            state["i"] += 1
            if (k + 1) % log_every == 0:
                buf.cpu()
        buf.cpu()

    return run


def seed_runner(data, device: torch.device, batch_size: int, steps: int, warmup: int):
    """(run, warm) for the faithful seed loop: each call iterates its DataLoader as the seed does."""
    from gantool.train.seed_loop import SeedLoop, seed_dataset

    loop = SeedLoop(seed_dataset(data.images, data.labels), device=device, batch_size=batch_size)
    return (lambda: loop.run(steps)), (lambda: loop.run(warmup))


def gantool_runner(data, device: torch.device, precision: str, batch_size: int, steps: int, warmup: int,
                   compile: bool = False, model: ModelConfig | None = None):
    """(run, warm) for gantool's loop with the seed's architecture and hyper-parameters."""
    from gantool.train import Trainer, resolve_configs

    model_cfg, cfg = resolve_configs("seed", batch_size=batch_size, precision=precision, compile=compile, device=str(device))
    trainer = Trainer(model or model_cfg, cfg, data, device)
    return gantool_steps(trainer, steps), gantool_steps(trainer, warmup)


def compare_train_speed(
    dataset: str = "mnist-5k",
    device: str = "auto",
    precisions: Iterable[str] = ("fp32", "bf16"),
    batch_size: int = 100,
    steps: int | None = None,
    warmup: int = 5,
    repeats: int | None = None,
    compile: bool = False,
    data_dir: str = "data",
    log: Callable[[str], None] | None = None,
    order_seed: int = 0,
) -> dict[str, Any]:
    """Train samples/s of the seed loop (fp32, as written) and of gantool's loop per precision.

    `repeats` rounds (default 15 on CPU, 30 on a GPU) of one `steps`-step slice of every loop
    (default 3 on CPU, 20 on a GPU), each round in a fresh order drawn from `order_seed`. Returns a
    JSON-able dict; a precision's `ratio` is gantool / seed, the median of the per-round ratios, and
    `ratio_ci` its 95 % interval. A precision the device cannot run is reported as
    {"unavailable": reason}, never as numbers of another precision.
    """
    dev = resolve_device(device)
    steps = (CPU_STEPS if dev.type == "cpu" else GPU_STEPS) if steps is None else steps
    repeats = (CPU_ROUNDS if dev.type == "cpu" else GPU_ROUNDS) if repeats is None else repeats
    if batch_size <= 0 or steps <= 0 or warmup < 0 or repeats <= 0:
        raise ConfigError("batch_size, steps and repeats must be > 0 and warmup >= 0")
    precisions = list(precisions)
    unknown = [p for p in precisions if p not in DTYPES]
    if unknown:
        raise ConfigError(f"unknown precision {unknown[0]!r}; choose one of: {', '.join(DTYPES)}")
    data = load_dataset(dataset, data_dir)
    if batch_size > len(data):
        raise ConfigError(f"batch size {batch_size} is larger than the dataset ({len(data)} images)")
    say = log or (lambda _m: None)
    loops: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
        "seed": seed_runner(data, dev, batch_size, steps, warmup)}
    gantool: dict[str, Any] = {}
    for p in precisions:
        if not supports_dtype(dev, DTYPES[p]):
            gantool[p] = {"unavailable": f"{p} autocast is not supported on {dev.type}"}
            continue
        loops[p] = gantool_runner(data, dev, p, batch_size, steps, warmup, compile=compile)
    for name, (_, warm) in list(loops.items()):
        say(f"warm-up {name}: {warmup} steps" + (" (includes torch.compile)" if compile and name != "seed" else ""))
        try:
            warm()
        except RuntimeError as e:  # e.g. a dtype kernel missing on this build
            gantool[name] = {"unavailable": first_line(e)}
            del loops[name]
    sync(dev)
    orders = round_orders(list(loops), repeats, order_seed)
    say(f"{repeats} rounds of {steps} steps a loop at batch {batch_size} on {dev}, each round in a random order "
        f"(seed {order_seed})")
    times = run_rounds({name: _synced(dev, run) for name, (run, _) in loops.items()}, orders)

    def rates(name: str) -> dict[str, Any]:
        rs = [steps * batch_size / t for t in times[name]]
        return {"samples_per_s": statistics.median(rs), "runs_samples_per_s": rs, "steps": steps, "repeats": repeats}

    seed = {**rates("seed"), "dtype": "fp32"}
    for p in precisions:
        if p in loops:
            ci = paired_ratio(times["seed"], times[p])
            gantool[p] = {**rates(p), "precision": p, "compile": compile, "ratio": ci["median"], "ratio_ci": ci}
    report: dict[str, Any] = {
        "dataset": data.name, "device": str(dev), "device_name": device_name(dev), "batch_size": batch_size,
        "threads": torch.get_num_threads() if dev.type == "cpu" else None,
        "versions": {"gantool": __version__, "torch": str(torch.__version__), "python": platform.python_version()},
        "order": {"kind": "interleaved", "seed": order_seed, "rounds": orders},
        "seed_loop": seed,
        "gantool": {p: gantool[p] for p in precisions},
    }
    return report


def format_report(r: dict[str, Any]) -> str:
    lines = [f"train speed on {r['device']} ({r['device_name']}), batch {r['batch_size']}, {r['dataset']}"
             + (f", {r['threads']} threads" if r.get("threads") else ""),
             f"  seed loop (fp32, DataLoader + transforms): {r['seed_loop']['samples_per_s']:,.0f} samples/s"]
    for p, v in r["gantool"].items():
        if "unavailable" in v:
            lines.append(f"  gantool {p}: unavailable: {v['unavailable']}")
        else:
            ci = v.get("ratio_ci")  # absent from reports written before issue 24
            spread = "" if not ci else (
                f", 95% CI {ci['ci_low']:.2f}-{ci['ci_high']:.2f}x over {ci['n']} paired rounds"
                if ci.get("ci_low") is not None else f", {ci['n']} paired rounds: too few for a 95% CI (6)")
            lines.append(f"  gantool {p}{' compiled' if v.get('compile') else ''}: {v['samples_per_s']:,.0f} samples/s "
                         f"({v['ratio']:.2f}x the seed loop{spread})")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m gantool.bench.train_speed  (quick manual check)
    import json
    import sys

    res = compare_train_speed(log=lambda m: print(m, file=sys.stderr))
    print(format_report(res), file=sys.stderr)
    print(json.dumps(res))
