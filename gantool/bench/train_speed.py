"""Train samples/s of gantool's loop against the faithful seed loop: same data, device and batch."""
from __future__ import annotations

import platform
import statistics
import time
from typing import Any, Callable, Iterable

import torch

from gantool import __version__
from gantool.config import ModelConfig
from gantool.data import load_dataset
from gantool.device import DTYPES, device_name, resolve_device, supports_dtype, sync
from gantool.errors import ConfigError, first_line


def _timed(device: torch.device, fn: Callable[[], None]) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)  # queued kernels belong to the timed region
    return time.perf_counter() - t0


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
    repeats: int = 3,
    compile: bool = False,
    data_dir: str = "data",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Median train samples/s of the seed loop (fp32, as written) and of gantool's loop per precision.

    Returns a JSON-able dict; `ratio` is gantool / seed. A precision the device cannot run is
    reported as {"unavailable": reason}, never as numbers of another precision. `steps` per
    repeat defaults to 40 on CPU and 200 on a GPU (where a step takes well under a millisecond).
    """
    dev = resolve_device(device)
    if steps is None:
        steps = 40 if dev.type == "cpu" else 200
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
    # Repeats interleave the loops, so a busy machine slows all of them alike and the ratio holds.
    times: dict[str, list[float]] = {name: [] for name in loops}
    for r in range(repeats):
        for name, (run, _) in loops.items():
            say(f"repeat {r + 1}/{repeats} {name}: {steps} steps at batch {batch_size} on {dev}")
            times[name].append(_timed(dev, run))

    def rates(name: str) -> dict[str, Any]:
        rs = [steps * batch_size / t for t in times[name]]
        return {"samples_per_s": statistics.median(rs), "runs_samples_per_s": rs, "steps": steps, "repeats": repeats}

    seed = {**rates("seed"), "dtype": "fp32"}
    for p in precisions:
        if p in loops:
            g = rates(p)
            gantool[p] = {**g, "precision": p, "compile": compile, "ratio": g["samples_per_s"] / seed["samples_per_s"]}
    report: dict[str, Any] = {
        "dataset": data.name, "device": str(dev), "device_name": device_name(dev), "batch_size": batch_size,
        "threads": torch.get_num_threads() if dev.type == "cpu" else None,
        "versions": {"gantool": __version__, "torch": str(torch.__version__), "python": platform.python_version()},
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
            lines.append(f"  gantool {p}{' compiled' if v.get('compile') else ''}: {v['samples_per_s']:,.0f} samples/s "
                         f"({v['ratio']:.2f}x the seed loop)")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m gantool.bench.train_speed  (quick manual check)
    import json
    import sys

    res = compare_train_speed(log=lambda m: print(m, file=sys.stderr))
    print(format_report(res), file=sys.stderr)
    print(json.dumps(res))
