"""The served generator against in-process ORT, in one run on one machine (docs/bench.md's serving section).

    python scripts/serve_bench.py --exported exported --out benchmarks/results/serve-cpu.json
    python scripts/serve_bench.py --exported exported --soak 60 --out benchmarks/results/soak-cpu.json

Starts `gantool serve` (PyTriton) on free loopback ports -- or with --python-backend the wheel's plain
tritonserver on an `export --format triton --kind python` repository -- then, in this process with
bench's own suite: in-process ORT fp32 at --ort-batches (latency rows), and the load rows (every
answer checked against eager), and prints the merged table and where the server's time went.
The server tree's RSS (gantool serve + tritonserver + stub) is read before and after the load.
--soak S runs only concurrency 16 for S seconds (0 errors / 0 wrong answers / RSS growth), after
--soak-warmup seconds of the same load that are not counted (pools and caches fill there).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exported", type=Path, required=True)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--request-batches", default="1", help="rows per request")
    ap.add_argument("--ort-batches", default="1,4,8,16,32,64,128,256")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--soak", type=float, default=0.0, help="seconds at concurrency 16 instead of the sweep")
    ap.add_argument("--soak-warmup", type=float, default=10.0, help="seconds of load before the soak's first RSS reading")
    ap.add_argument("--serve-args", default="", help="extra gantool serve options, e.g. '--max-queue-delay-us 1000'")
    ap.add_argument("--python-backend", action="store_true", help="plain tritonserver + generator_python instead")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()

    from gantool.bench import report as rep
    from gantool.bench.load_rows import summary_lines
    from gantool.bench.suite import BenchConfig, run_bench
    from gantool.serve.child import ServeChild, descendants, rss_mb

    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    conc = [16] if a.soak else ints(a.concurrency)
    duration = a.soak or a.duration
    common = dict(exported=a.exported, precisions=["fp32"], device="cpu", max_time=3.0)
    ort = None
    if not a.soak:  # in-process first, on a quiet server: the rows the served numbers are held against
        ort = run_bench(BenchConfig(backends=["ort"], batch_sizes=ints(a.ort_batches), **common))
    if a.python_backend:
        server, url, model, pids = _python_backend(a.exported)
    else:
        server = ServeChild(a.exported, *a.serve_args.split())
        url, model, pids = server.url, "generator", server.pids
    try:
        if a.soak:  # allocator pools and caches fill in the first seconds: growth is measured after them
            run_bench(BenchConfig(backends=["triton"], batch_sizes=ints(a.request_batches), url=url, triton_model=model,
                                  concurrency=conc, duration=a.soak_warmup, **common))
        tree = lambda: sorted({*pids, *descendants(pids[0])})  # noqa: E731 - the server and what it started
        rss0 = rss_mb(tree())
        series, done = [], threading.Event()

        def sample() -> None:  # the server tree's RSS every 10 s of the load: growth that levels off, or not
            t0 = time.monotonic()
            while not done.wait(10.0):
                series.append((round(time.monotonic() - t0, 1), round(rss_mb(tree()), 1)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        load = run_bench(BenchConfig(backends=["triton"], batch_sizes=ints(a.request_batches), url=url,
                                     triton_model=model, concurrency=conc, duration=duration, **common),
                         progress=lambda m: print(f"bench: {m}", flush=True))
        done.set()
        rss1 = rss_mb(tree())
    finally:
        server.stop()
    report = dict(load, results=(ort["results"] if ort else []) + load["results"])
    report["server_rss_mb"] = {"warmup_s": a.soak_warmup if a.soak else 0, "series_s_mb": series, "before": round(rss0, 1), "after": round(rss1, 1), "growth": round(rss1 - rss0, 1),
                               "processes": "gantool serve + tritonserver + Python-backend stub"
                               if not a.python_backend else "tritonserver + Python-backend stub"}
    report["serve_args"] = a.serve_args or None
    ranked = sorted((r for r in report["results"] if r["ranked"]), key=lambda r: -r["samples_per_s"])
    for i, r in enumerate(ranked, 1):  # one ranking over the merged rows
        r["rank"] = i
    rep.print_table(report, wide=True)
    for line in summary_lines(report):
        print(line)
    print(f"server RSS {rss0:.0f} MB -> {rss1:.0f} MB ({rss1 - rss0:+.1f} MB) over the load; every 10 s: "
          + ", ".join(f"{t:.0f} s {mb:.0f}" for t, mb in series))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    rep.write_json(report, a.out)
    print(f"wrote {a.out}")


def _python_backend(exported: Path):
    """Export generator_python next to a temp dir and start the wheel's tritonserver on it."""
    import subprocess
    import sys

    from gantool.export.triton import PYTHON_MODEL
    from gantool.serve.env import free_ports
    from gantool.serve.tritonserver import TritonServerProcess

    manifest = json.loads((exported / "manifest.json").read_text())
    ckpt = (manifest.get("source") or {}).get("checkpoint") or manifest.get("source_checkpoint")
    repo = Path(tempfile.mkdtemp(prefix="gantool-pyrepo-")) / "repo"
    subprocess.run([sys.executable, "-m", "gantool", "export", "--checkpoint", str(ckpt), "--format", "triton",
                    "--kind", "python", "--max-batch-size", "1024", "--out", str(repo), "--no-verify"], check=True)
    server = TritonServerProcess(repo, [PYTHON_MODEL], *free_ports(3)).start()
    from gantool.serve.child import descendants

    return server, server.grpc_url, PYTHON_MODEL, [server.pid, *sorted(descendants(server.pid))]


if __name__ == "__main__":
    main()
