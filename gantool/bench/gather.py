"""`gantool bench` under torchrun: every rank times its own device, rank 0 merges one report with scaling."""
from __future__ import annotations

from typing import Any, Callable

from gantool.bench.suite import Bench, BenchConfig
from gantool.bench.timing import BenchResult
from gantool.distributed import Dist


class RankBench(Bench):
    """Bench on one rank of a torchrun job. Each row is timed twice: rank 0 alone while the other
    ranks wait (the one-rank baseline), then every rank at once (the scaled run)."""

    def __init__(self, cfg: BenchConfig, dist: Dist, progress: Callable[[str], None] | None = None):
        super().__init__(cfg, progress)
        self.d = dist
        self.solo: dict[tuple[str, str, int, str], dict[str, Any]] = {}

    def measure_row(self, runner, backend: str, precision: str, dev: str, batch: int,
                    art: str | None, mode: str = "latency") -> BenchResult:
        self.d.barrier()
        if self.d.is_main:
            self.solo[(backend, precision, batch, mode)] = super().measure_row(
                runner, backend, precision, dev, batch, art, mode).to_dict()
        self.d.barrier()
        return super().measure_row(runner, backend, precision, dev, batch, art, mode)


def rank_config(cfg: BenchConfig, dist: Dist) -> BenchConfig:
    """This rank's share of the machine: its own GPU (cuda:LOCAL_RANK), or on CPU one thread
    (one process a core) unless --threads says otherwise."""
    import dataclasses

    device = dist.device(cfg.device)
    threads = cfg.threads or (1 if device.type == "cpu" else None)
    # sequential order: RankBench times each row twice (rank 0 alone, then all ranks) around barriers
    return dataclasses.replace(cfg, device=str(device), threads=threads, interleave=False)


def run_distributed(cfg: BenchConfig, dist: Dist, progress: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Every rank benches; rank 0 returns the merged report, the other ranks None."""
    cfg = rank_config(cfg, dist)
    dist.init(dist.device(cfg.device))
    bench = RankBench(cfg, dist, progress if dist.is_main else None)
    report = bench.run()
    parts = dist.gather_objects((report, bench.solo))
    return merge(parts, dist) if dist.is_main else None


def merge(parts: list[tuple[dict[str, Any], dict]], dist: Dist) -> dict[str, Any]:
    """One report from every rank's: rows tagged with their process rank (re-ranked together),
    and per (backend, dtype, batch) the aggregate samples/s of all ranks at once against rank 0 alone."""
    report = dict(parts[0][0])
    solo = parts[0][1]
    rows = []
    for r, (rep, _) in enumerate(parts):
        for row in rep["results"]:
            rows.append(dict(row, process_rank=r, rank=None))
    for i, row in enumerate(sorted((x for x in rows if x["ranked"]), key=lambda x: -x["samples_per_s"]), 1):
        row["rank"] = i
    aggregate = []
    for (backend, precision, batch, mode), one in sorted(solo.items()):
        same = [x for x in rows if (x["backend"], x["precision"], x["batch"], x.get("mode", "latency"))
                == (backend, precision, batch, mode)]
        ok = len(same) == dist.world and all(x["samples_per_s"] for x in same)
        total = sum(x["samples_per_s"] for x in same) if ok else None
        single = one["samples_per_s"]
        aggregate.append({
            "backend": backend, "precision": precision, "batch": batch, "mode": mode, "ranks": dist.world,
            "per_rank_samples_per_s": [x["samples_per_s"] for x in sorted(same, key=lambda x: x["process_rank"])],
            "samples_per_s": total, "single_rank_samples_per_s": single,
            "single_rank_median_ms": one["median_ms"],
            "speedup": total / single if total and single else None,
            "scaling_efficiency": total / (dist.world * single) if total and single else None,
            "status": "ok" if ok and single else "incomplete",
        })
    report["results"] = rows
    report["distributed"] = {
        "world_size": dist.world, "backend": dist.backend, "launcher": "torchrun",
        "devices": [rep["config"]["device"] for rep, _ in parts],
        "threads_per_rank": [rep["config"]["threads"] for rep, _ in parts],
        "baseline": "rank 0 alone (the other ranks idle), same row, just before all ranks run it together",
        "aggregate": aggregate,
    }
    return report


def format_aggregate(report: dict[str, Any]) -> list[str]:
    """Human lines: per row, all ranks' samples/s against one rank's."""
    d = report["distributed"]
    out = []
    for a in d["aggregate"]:
        if a["samples_per_s"] is None:
            out.append(f"{a['backend']} {a['precision']} batch {a['batch']}: not every rank measured it")
            continue
        out.append(f"{a['backend']} {a['precision']} batch {a['batch']}: {d['world_size']} ranks "
                   f"{a['samples_per_s']:,.0f} samples/s vs one rank {a['single_rank_samples_per_s']:,.0f} "
                   f"= {a['speedup']:.2f}x (scaling efficiency {100 * a['scaling_efficiency']:.0f}%)")
    return out
