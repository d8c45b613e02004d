"""REPORT.md / REPORT.json of `gantool demo`: the machine, each stage's status, wall time and result,
the bench and serve tables. gantool.demo runs the stages and fills the report; this only writes it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def duration(s: float | None) -> str:
    if s is None:
        return "-"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s" if m else f"{s:.1f} s"


def _isa(isa: dict[str, bool | None]) -> str:
    have = [k for k, v in isa.items() if v]
    lacking = [k for k, v in isa.items() if v is False]
    return (", ".join(have) or "none of " + "/".join(isa)) + (f" (no {', '.join(lacking)})" if lacking else "")


def to_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    v = m["versions"]
    gpu = ", ".join(m["gpus"]) if m["gpus"] else "none"
    lines = [
        "# gantool demo report", "",
        f"Written by `make demo` (`gantool demo`) at {report['created']} into `{report['out']}/`; "
        f"total {duration(report.get('total_seconds'))}: the sum of the stage wall times below"
        + (f" (this run {duration(report['run_seconds'])}; rows it did not run are kept from earlier runs, "
           "with the time each finished)" if any(s.get("finished") and s["finished"] < report["created"]
                                                 for s in report["stages"]) and report.get("run_seconds") else "")
        + ".", "",
        f"- **CPU:** {m['cpu']}, {m['cpu_count']} logical cores, torch threads {m['threads']}; ISA: {_isa(m['isa'])}",
        f"- **GPU:** {gpu}",
        f"- **Versions:** " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- **ONNX Runtime providers in the wheel:** {', '.join(m['onnxruntime_providers']) or 'none'}",
        f"- **Platform:** {m['platform']}", "",
        "| stage | status | wall time | finished (UTC) | result |", "| --- | --- | --- | --- | --- |",
    ]
    for s in report["stages"]:
        when = (s.get("finished") or "-").replace("T", " ").replace("+00:00", "")
        lines.append(f"| {s['name']} | {s['status']} | {duration(s['seconds'])} | {when} | "
                     f"{s['summary'].replace('|', chr(92) + '|')} |")
    bench = next((s for s in report["stages"] if s["name"] == "bench" and s["result"].get("rows")), None)
    if bench:
        # only rows with a measurement (issue 36.4); modes named as bench.json names them
        rows = [r for r in bench["result"]["rows"] if r.get("samples_per_s")]
        batches = sorted({r["batch"] for r in rows})
        key = lambda r: (r["backend"], r["precision"], r.get("mode") or "latency")  # noqa: E731
        lines += ["", f"Bench, samples/s on {bench['result']['device']} (median over repeats; rows with a measurement; "
                  "- = that batch not measured; every row in bench.json):", "",
                  "| backend | dtype | mode | " + " | ".join(f"batch {b}" for b in batches) + " |",
                  "| --- | --- | --- |" + " ---: |" * len(batches)]
        for k in dict.fromkeys(key(r) for r in rows):
            cells = {r["batch"]: r["samples_per_s"] for r in rows if key(r) == k}
            lines.append(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(
                f"{cells[b]:,.0f}" if cells.get(b) else "-" for b in batches) + " |")
    serve = next((s for s in report["stages"] if s["name"] == "serve" and s["result"].get("rows")), None)
    if serve:
        ms = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
        lines += ["", "Served by `gantool serve` (Triton + PyTriton, ORT per batch), batch-1 requests on loopback; "
                  "latency is the client's, queue/compute Triton's own per request:", "",
                  "| concurrency | samples/s | p50 ms | p99 ms | queue ms | compute ms | mean batch formed | errors | "
                  "answers checked (wrong) |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in serve["result"]["rows"]:
            lat = r.get("client_latency_ms") or {}
            lines.append(f"| {r['concurrency']} | {r['samples_per_s'] or 0:,.0f} | {ms(lat.get('p50'))} | "
                         f"{ms(lat.get('p99'))} | {ms(r.get('queue_ms'))} | {ms(r.get('compute_infer_ms'))} | "
                         f"{ms(r.get('mean_batch'))} | {r['errors']} | {r['checked']} ({r['wrong']}) |")
    out = Path(report["out"])
    pics = [("samples", "samples/final.png"), ("losses", "loss.png"), ("parity", "verify.png"), ("bench", "bench.png")]
    have = [f"[{label}]({p})" for label, p in pics if (out / p).exists()]
    if have:
        lines += ["", "Images: " + ", ".join(have)]
    return "\n".join(lines) + "\n"


def previous_stages(out: Path, schema: str, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The stages an earlier REPORT.json in `out` ran (ok, reused or failed), by name: a demo that runs only
    some stages keeps the others' rows as they were, their times included (issue 36.7)."""
    try:
        old = json.loads((out / "REPORT.json").read_text())
        if old.get("schema") != schema:
            return {}
        return {s["name"]: s for s in old["stages"]
                if isinstance(s, dict) and s.get("status") in ("ok", "reused", "failed") and s.get("name") in names}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def write_report(out: Path, report: dict[str, Any]) -> None:
    from gantool.checkpoint import atomic_write_text

    atomic_write_text(out / "REPORT.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "REPORT.md", to_markdown(report))
