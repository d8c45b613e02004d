"""Bench reports: a table sorted by samples/s (rich when installed), the JSON document, a PNG plot."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from gantool.checkpoint import atomic_write, atomic_write_text

SCHEMA_PATH = Path(__file__).with_name("schema.json")
COLUMNS = ["#", "backend", "dtype", "device", "batch", "samples/s", "median", "p90", "p99",
           "first call", "GFLOP/s", "% peak", "parity", "status"]


def ordered(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ranked rows by samples/s (fastest first), then measured-but-unranked, then the rest."""
    def key(r: dict[str, Any]):
        group = 0 if r["ranked"] else (1 if r["samples_per_s"] is not None else 2)
        return (group, -(r["samples_per_s"] or 0.0), r["backend"], r["precision"], r["batch"])

    return sorted(results, key=key)


def fmt_time(ms: float | None) -> str:
    """Milliseconds with a unit that keeps 3 significant digits: 12.3 µs, 4.56 ms, 1.20 s."""
    if ms is None:
        return "-"
    if ms < 1:
        return f"{ms * 1e3:.3g} µs"
    if ms < 1000:
        return f"{ms:.3g} ms"
    return f"{ms / 1e3:.3g} s"


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else (f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.1f}")


def collapse(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with no numbers that share (backend, dtype, status, reason) become one line listing
    their batch sizes; the JSON keeps every row."""
    out: list[dict[str, Any]] = []
    seen: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r["samples_per_s"] is not None:
            out.append(r)
            continue
        key = (r["backend"], r["precision"], r["device"], r["status"], r["reason"])
        if key in seen:
            seen[key]["batch"] = f"{seen[key]['batch']},{r['batch']}"
        else:
            seen[key] = dict(r)
            out.append(seen[key])
    return out


def dtype_label(r: dict[str, Any]) -> str:
    """The dtype cell: "bf16 emulated" so a slow emulated row is not read as the model's cost;
    "int8 static" / "int8 dynamic" from the file's quantization; the OpenVINO hint when it is not f32."""
    rt = r.get("runtime") or {}
    label = r["precision"]
    if r.get("precision_support") == "emulated":
        label += " emulated"
    if rt.get("quantization"):
        label += f" {rt['quantization']}"
    hint = rt.get("inference_precision_hint")
    if hint and hint != "f32":
        label += f" (ov {hint})"
    return label


def row_cells(r: dict[str, Any]) -> list[str]:
    p = r.get("parity") or {}
    parity = "-" if not p else ("ok" if p.get("passed") else "FAIL") + (
        f" {p['max_abs_err']:.1e}" if p.get("max_abs_err") is not None else "")
    status = r["status"] + (f": {r['reason']}" if r["reason"] else "")
    rt = r.get("runtime") or {}
    backend = r["backend"] + (f" ({rt['ep']}, {rt['browser'].split('.')[0]})" if rt.get("ep") and rt.get("browser") else "")
    device = r["device"] + (f" (rank {r['process_rank']})" if r.get("process_rank") is not None else "")
    return [str(r.get("rank") or ""), backend, dtype_label(r), device, str(r["batch"]),
            fmt_rate(r["samples_per_s"]), fmt_time(r["median_ms"]), fmt_time(r["p90_ms"]),
            fmt_time(r["p99_ms"]), fmt_time(r["first_call_ms"]),
            "-" if r["gflops"] is None else f"{r['gflops']:.1f}",
            "-" if r["pct_peak"] is None else f"{r['pct_peak']:.0f}%", parity, status]


def title(report: dict[str, Any]) -> str:
    env = report["environment"]
    isa = ",".join(k for k, v in (env.get("cpu_isa") or {}).items() if v) or "no avx2"
    return (f"gantool bench on {env['device']} ({env['device_name']}; {isa}), {env['threads']} threads, "
            f"torch {env['versions']['torch']}, {report['model']['flops_per_sample'] / 1e6:.2f} MFLOP/sample")


def print_table(report: dict[str, Any], file: TextIO | None = None) -> None:
    """The results table; rich when it is installed, aligned plain text otherwise."""
    file = file or sys.stdout
    rows = [row_cells(r) for r in collapse(ordered(report["results"]))]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(COLUMNS)]
        print(title(report), file=file)
        for line in [COLUMNS, *rows]:
            print("  ".join(cell.rjust(w) if i in (0, 4, 5) else cell.ljust(w)
                            for i, (cell, w) in enumerate(zip(line, widths))).rstrip(), file=file)
        return
    table = Table(title=title(report), title_justify="left")
    for i, c in enumerate(COLUMNS):
        table.add_column(c, justify="right" if 4 <= i <= 11 else "left", overflow="fold")
    for cells in rows:
        table.add_row(*cells)
    Console(file=file, width=max(160, Console().width)).print(table)


def print_peaks(report: dict[str, Any], file: TextIO | None = None) -> None:
    for p in report["peaks"]:
        print(f"peak {p['device']} {p['dtype']}: {p['gflops']:.1f} GFLOP/s ({p['probe']})", file=file or sys.stdout)


def summary(report: dict[str, Any], json_path: str | None = None) -> dict[str, Any]:
    """The compact last-line summary: the fastest ranked row per batch size."""
    best: dict[int, dict[str, Any]] = {}
    for r in report["results"]:
        if r["ranked"] and (r["batch"] not in best or r["samples_per_s"] > best[r["batch"]]["samples_per_s"]):
            best[r["batch"]] = r
    out = {"device": report["environment"]["device"], "device_name": report["environment"]["device_name"],
           "best": [{"batch": b, "backend": r["backend"], "dtype": r["precision"],
                     "samples_per_s": round(r["samples_per_s"], 1), "median_ms": round(r["median_ms"], 5)}
                    for b, r in sorted(best.items())],
           "rows": len(report["results"]),
           "not_ranked": sum(1 for r in report["results"] if not r["ranked"])}
    if "train" in report:  # gantool loop / seed loop, per precision
        out["train_ratio"] = {p: round(v["ratio"], 3) if "ratio" in v else v.get("unavailable")
                              for p, v in report["train"].get("gantool", {}).items()}
    if "distributed" in report:  # torchrun: all ranks at once against rank 0 alone
        d = report["distributed"]
        out["distributed"] = {"world_size": d["world_size"], "aggregate": [
            {k: (round(a[k], 3) if isinstance(a[k], float) else a[k])
             for k in ("backend", "precision", "batch", "samples_per_s", "scaling_efficiency")}
            for a in d["aggregate"]]}
    if json_path:
        out["json"] = str(json_path)
    return out


def validate(report: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when the report does not follow schema.json."""
    import jsonschema

    jsonschema.validate(report, json.loads(SCHEMA_PATH.read_text()))


def _clean(x: Any) -> Any:
    """JSON-safe copy: floats rounded to 6 significant digits, NaN/Inf as null."""
    if isinstance(x, float):
        return None if x != x or x in (float("inf"), float("-inf")) else float(f"{x:.6g}")
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(_clean(report), indent=2) + "\n"


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    return atomic_write_text(path, to_json(report))


def plot(report: dict[str, Any], path: str | Path) -> str | None:
    """samples/s against batch size, one line per (backend, dtype), log-log. Returns a note
    instead of writing when matplotlib is missing or nothing was measured."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"matplotlib is not installed: no plot written to {path}"
    series: dict[str, list[tuple[int, float]]] = {}
    for r in report["results"]:
        if r["ranked"]:
            series.setdefault(f"{r['backend']} {r['precision']}", []).append((r["batch"], r["samples_per_s"]))
    if not series:
        return f"no ranked rows: no plot written to {path}"
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([b for b, _ in pts], [s for _, s in pts], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("samples/s (median)")
    env = report["environment"]
    ax.set_title(f"generator inference on {env['device']} ({env['device_name']})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return None
