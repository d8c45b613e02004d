"""What the conv G costs: samples/s of the seed's MLP G and the DCGAN G per backend, in one run.

    python scripts/bench_models.py --out benchmarks/results/models-cpu.json    # ~5 min on 2 cores

Both generators are the built-in recipes' shapes (speed does not depend on the weights, so untrained
checkpoints stand in; pass --mlp/--dcgan RUN for trained ones). Each is exported to ONNX and
TorchScript fp32 and benched with `gantool bench`'s own suite (median with its 95 % CI, every row
checked against eager fp32), one model after the other in the same process, on the same machine.
Prints a markdown table (docs/quality.md) and writes the two bench reports into one JSON.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mlp", type=Path, help="MLP run dir (default: an untrained seed-shape checkpoint)")
    ap.add_argument("--dcgan", type=Path, help="DCGAN run dir (default: an untrained recipe-dcgan checkpoint)")
    ap.add_argument("--backends", default="eager,compile,torchscript,ort")
    ap.add_argument("--batch-sizes", default="1,64,1024")
    ap.add_argument("--max-time", type=float, default=3.0)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()

    from gantool.bench.suite import BenchConfig, run_bench
    from gantool.checkpoint import atomic_write_text, save_untrained_checkpoint
    from gantool.config import RECIPES
    from gantool.export import export_artifacts

    tmp = Path(tempfile.mkdtemp(prefix="bench-models-"))
    runs = {"mlp": a.mlp, "dcgan": a.dcgan}
    if runs["mlp"] is None:
        runs["mlp"] = save_untrained_checkpoint(tmp / "mlp.pt", note="untrained: speed only")
    if runs["dcgan"] is None:
        runs["dcgan"] = save_untrained_checkpoint(tmp / "dcgan.pt", note="untrained: speed only",
                                                  **RECIPES["dcgan"].model)
    reports = {}
    for name, run in runs.items():
        exp = tmp / f"{name}-exported"
        export_artifacts(run, ["onnx", "torchscript"], exp, dtypes=["fp32"])
        cfg = BenchConfig(checkpoint=run, exported=exp, backends=a.backends.split(","), precisions=["fp32"],
                          batch_sizes=[int(b) for b in a.batch_sizes.split(",")], device="cpu",
                          max_time=a.max_time, peak_probe=False)
        reports[name] = run_bench(cfg, progress=lambda m, n=name: print(f"[{n}] {m}", flush=True))
    atomic_write_text(a.out, json.dumps(reports, indent=1) + "\n")
    print(table(reports))


def table(reports: dict) -> str:
    env = next(iter(reports.values()))["environment"]
    isa = ",".join(k for k, v in env["cpu_isa"].items() if v)
    rows = {}
    for name, rep in reports.items():
        for r in rep["results"]:
            rows.setdefault((r["backend"], r["batch"]), {})[name] = r
    flops = {n: rep["model"]["flops_per_sample"] for n, rep in reports.items()}
    lines = [f"{env['device_name']} ({isa}), {env['threads']} threads, torch {env['versions']['torch']}, "
             f"onnxruntime {env['versions'].get('onnxruntime')}, fp32; MFLOP/sample: "
             + ", ".join(f"{n} {f / 1e6:.2f}" for n, f in flops.items()),
             "", "| backend | batch | MLP samples/s | DCGAN samples/s | DCGAN / MLP |", "| --- | ---: | ---: | ---: | ---: |"]
    for (backend, batch), by in rows.items():
        def cell(r):
            return f"{r['samples_per_s']:,.0f}" if r and r["status"] == "ok" else (r["status"] if r else "-")
        m, d = by.get("mlp"), by.get("dcgan")
        ratio = (f"{d['samples_per_s'] / m['samples_per_s']:.3f}x" if m and d and m["status"] == d["status"] == "ok"
                 else "-")
        lines.append(f"| {backend} | {batch} | {cell(m)} | {cell(d)} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
