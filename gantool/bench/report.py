"""Bench reports: a table sorted by samples/s (within 100 columns; --wide for all), the JSON document, a PNG plot."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from gantool.checkpoint import atomic_write, atomic_write_text

SCHEMA_PATH = Path(__file__).with_name("schema.json")
WIDTH = 100  # the default table fits a 100-column terminal; --wide adds the rest
COLUMNS = ["backend", "dtype", "mode", "batch", "samples/s", "median", "±95%", "n", "status"]
WIDE_COLUMNS = ["#", "backend", "dtype", "mode", "device", "batch", "samples/s", "median", "±95%", "n", "vs eager", "IQR",
                "p90", "p99", "first call", "capture", "GFLOP/s", "% peak", "mem MB", "parity", "status"]
RIGHT = {"#", "batch", "samples/s", "median", "±95%", "n", "vs eager", "IQR", "p90", "p99", "first call", "capture",
         "GFLOP/s", "% peak", "mem MB"}
# The mode column says what the JSON says (issue 36.4: the table said call/pipe, the JSON and REPORT.md
# latency/throughput); the legend says what one timed sample is in each.
MODE_SHORT = {"latency": "latency", "throughput": "throughput"}


def ordered(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ranked rows by samples/s (fastest first), then measured-but-unranked, then the rest."""
    def key(r: dict[str, Any]):
        group = 0 if r["ranked"] else (1 if r["samples_per_s"] is not None else 2)
        return (group, -(r["samples_per_s"] or 0.0), r["backend"], r["precision"], r.get("mode", ""), r["batch"])

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


def collapse(rows: list[dict[str, Any]], all_batches: list[int] | None = None) -> list[dict[str, Any]]:
    """Rows with no numbers that share (backend, dtype, mode, status, reason) become one line listing
    their batch sizes ("all" when that is every batch size); the JSON keeps every row."""
    out: list[dict[str, Any]] = []
    seen: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r["samples_per_s"] is not None:
            out.append(r)
            continue
        key = (r["backend"], r["precision"], r["device"], r.get("mode"), r["status"], r["reason"])
        if key in seen:
            seen[key]["batch"] = f"{seen[key]['batch']},{r['batch']}"
        else:
            seen[key] = dict(r)
            out.append(seen[key])
    if all_batches and len(all_batches) > 1:
        every = ",".join(map(str, all_batches))
        for r in out:
            if r["batch"] == every:
                r["batch"] = "all"
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


def fmt_ratio(ratio: dict[str, Any] | None) -> str:
    """A paired ratio over eager fp32 (interleaved rounds): '1.41x [1.38-1.45]', or '-'."""
    if not ratio:
        return "-"
    ci = f" [{ratio['ci_low']:.2f}-{ratio['ci_high']:.2f}]" if ratio.get("ci_low") is not None else ""
    return f"{ratio['median']:.2f}x{ci}"


def row_cells(r: dict[str, Any], note: str = "", wide: bool = False) -> dict[str, str]:
    p = r.get("parity") or {}
    ci = "-" if r.get("ci_rel") is None else f"±{100 * r['ci_rel']:.1f}%"
    rt = r.get("runtime") or {}
    backend = r["backend"] + (f" ({rt['ep']}, {rt['browser'].split('.')[0]})" if rt.get("ep") and rt.get("browser") else "")
    cells = {"backend": backend, "dtype": dtype_label(r), "mode": (f"c{r.get('concurrency')}" if r.get("mode") == "load"
                                                     else MODE_SHORT.get(r.get("mode", "latency"), "?")),
             "batch": str(r["batch"]), "samples/s": fmt_rate(r["samples_per_s"]), "median": fmt_time(r["median_ms"]),
             "±95%": ci, "n": "-" if not r.get("repeats") else str(r["repeats"]),
             "status": r["status"] + (f" [{note}]" if note else "")}
    if wide:
        cells.update({
            "#": str(r.get("rank") or ""), "vs eager": fmt_ratio(r.get("ratio")),
            "device": r["device"] + (f" (rank {r['process_rank']})" if r.get("process_rank") is not None else ""), "IQR": fmt_time(r.get("iqr_ms")),
            "p90": fmt_time(r.get("p90_ms")), "p99": fmt_time(r.get("p99_ms")),
            "first call": fmt_time(r.get("first_call_ms")), "capture": fmt_time(r.get("capture_ms")),
            "GFLOP/s": "-" if r.get("gflops") is None else f"{r['gflops']:.1f}",
            "% peak": "-" if r.get("pct_peak") is None else f"{r['pct_peak']:.0f}%",
            "mem MB": "-" if r.get("peak_mem_mb") is None else f"{r['peak_mem_mb']:.0f}",
            "parity": "-" if not p else ("ok" if p.get("passed") else "FAIL") + (
                f" {p['max_abs_err']:.1e}" if p.get("max_abs_err") is not None else "")})
    return cells


def title(report: dict[str, Any]) -> str:
    env = report["environment"]
    isa = ",".join(k for k, v in (env.get("cpu_isa") or {}).items() if v) or "no avx2"
    return (f"gantool bench on {env['device']} ({env['device_name']}; {isa}), {env['threads']} threads, "
            f"torch {env['versions']['torch']}, {report['model']['flops_per_sample'] / 1e6:.2f} MFLOP/sample")


def print_table(report: dict[str, Any], file: TextIO | None = None, wide: bool = False) -> None:
    """The results table: within 100 columns by default (reasons as numbered notes below it);
    `wide` adds rank, device, IQR, p90/p99, first call, capture, GFLOP/s, % peak, memory, parity."""
    import textwrap

    file = file or sys.stdout
    columns = WIDE_COLUMNS if wide else COLUMNS
    rows = collapse(ordered(report["results"]), report.get("config", {}).get("batch_sizes"))
    notes: list[str] = []
    table = []
    for r in rows:
        note = ""
        if r["reason"]:
            if r["reason"] not in notes:
                notes.append(r["reason"])
            note = str(notes.index(r["reason"]) + 1)
        table.append(row_cells(r, note, wide))
    widths = {c: max([len(c)] + [len(t[c]) for t in table]) for c in columns}
    legend = ["  latency: one call of `batch` z, waited for; throughput: calls back to back; ±95%: median's CI"]
    if any(r.get("mode") == "load" for r in rows):
        legend.append("  cN: N requests in flight to a server; median/p90/p99: the client's request latency")
    for line in textwrap.wrap(title(report), WIDTH) + legend:
        print(line, file=file)
    for cells in [dict(zip(columns, columns)), *table]:
        print("  ".join(cells[c].rjust(widths[c]) if c in RIGHT else cells[c].ljust(widths[c])
                        for c in columns).rstrip(), file=file)
    for i, reason in enumerate(notes, 1):
        print(textwrap.fill(reason, WIDTH, initial_indent=f"[{i}] ", subsequent_indent="    "), file=file)


def print_peaks(report: dict[str, Any], file: TextIO | None = None) -> None:
    for p in report["peaks"]:
        print(f"peak {p['device']} {p['dtype']}: {p['gflops']:.1f} GFLOP/s ({p['probe']})", file=file or sys.stdout)


def summary(report: dict[str, Any], json_path: str | None = None) -> dict[str, Any]:
    """The compact last-line summary: the fastest ranked row per batch size."""
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for r in report["results"]:
        key = (r.get("mode", "latency"), r["batch"])
        if r["ranked"] and (key not in best or r["samples_per_s"] > best[key]["samples_per_s"]):
            best[key] = r
    out = {"device": report["environment"]["device"], "device_name": report["environment"]["device_name"],
           "best": [{"batch": b, "mode": m, "backend": r["backend"], "dtype": r["precision"],
                     "samples_per_s": round(r["samples_per_s"], 1), "median_ms": round(r["median_ms"], 5)}
                    for (m, b), r in sorted(best.items(), key=lambda kv: (kv[0][1], kv[0][0]))],
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


# One colour per backend in every panel of every bench plot (issue 36.4): the colour follows the backend,
# the line style the precision, the marker the mode. Fixed, so a backend keeps its colour between runs.
BACKEND_COLOURS = {
    "eager": "#1f77b4", "compile": "#ff7f0e", "compile-reduce-overhead": "#bcbd22", "torchscript": "#2ca02c",
    "aoti": "#d62728", "ort": "#9467bd", "openvino": "#8c564b", "ort-cuda": "#e377c2", "ort-cuda-graph": "#7f7f7f",
    "ort-trt": "#17becf", "web": "#393b79", "triton": "#637939",
}
_SPARE = ("#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1")
PRECISION_STYLES = {"fp32": "-", "tf32": (0, (1, 1)), "bf16": "--", "fp16": "-.", "int8": ":"}
MODE_MARKERS = {"latency": "o", "throughput": "s", "load": "^"}


def backend_colour(backend: str) -> str:
    """The colour `backend` has in every bench plot."""
    if backend in BACKEND_COLOURS:
        return BACKEND_COLOURS[backend]
    return _SPARE[sum(map(ord, backend)) % len(_SPARE)]  # stable across runs (unlike hash())


def plot(report: dict[str, Any], path: str | Path) -> str | None:
    """samples/s against batch size, one line per (backend, dtype, mode), log-log. Returns a note
    instead of writing when matplotlib is missing or nothing was measured."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"matplotlib is not installed: no plot written to {path}"
    fig = figure(report, plt)
    if fig is None:
        return f"no ranked rows: no plot written to {path}"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return None


def figure(report: dict[str, Any], plt: Any):
    """The bench plot's matplotlib Figure (None when no row is ranked); `plot` writes it."""
    series: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for r in report["results"]:
        if r["ranked"]:
            series.setdefault((r["backend"], r["precision"], r.get("mode", "latency") if r.get("mode") != "load"
                               else f"load c{r.get('concurrency')}"), []).append((r["batch"], r["samples_per_s"]))
    if not series:
        return None

    def style(backend: str, precision: str, mode: str = "latency") -> dict[str, Any]:
        return {"color": backend_colour(backend), "linestyle": PRECISION_STYLES.get(precision, "-"),
                "marker": MODE_MARKERS.get(mode.split(" ")[0], "o")}

    def mode_label(mode: str) -> str:
        if mode.startswith("load"):
            return f" (served, {mode.split('c')[-1]} in flight)"
        return "" if mode == "latency" else f" ({mode})"

    # paired ratios over eager fp32 (interleaved rounds) get a panel of their own, with their 95 % CI
    paired: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    for r in report["results"]:
        if r["ranked"] and r.get("ratio") and r["ratio"].get("ci_low") is not None:
            paired.setdefault((r["backend"], r["precision"]), []).append((r["batch"], r["ratio"]))
    fig, axes = plt.subplots(1, 2 if paired else 1, figsize=(14 if paired else 8, 5), squeeze=False)
    ax = axes[0][0]
    if paired:
        rx = axes[0][1]
        for (backend, precision), pts in sorted(paired.items()):
            pts.sort(key=lambda t: t[0])
            med = [q["median"] for _, q in pts]
            err = [[m - q["ci_low"] for m, (_, q) in zip(med, pts)], [q["ci_high"] - m for m, (_, q) in zip(med, pts)]]
            rx.errorbar([b for b, _ in pts], med, yerr=err, capsize=3, label=f"{backend} {precision}",
                        **style(backend, precision))
        rx.axhline(1.0, color="grey", lw=0.8)
        rx.set_xscale("log", base=2)
        rx.set_xlabel("batch size")
        rx.set_ylabel("speed over eager fp32 (median of paired rounds, 95% CI)")
        rx.set_title("paired ratios, interleaved rounds", fontsize=10)
        rx.grid(True, which="both", alpha=0.3)
        rx.legend(fontsize=8)
    for (backend, precision, mode), pts in sorted(series.items()):
        pts.sort()
        ax.plot([b for b, _ in pts], [s for _, s in pts], label=f"{backend} {precision}{mode_label(mode)}",
                **style(backend, precision, mode))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("samples/s (median)")
    env = report["environment"]
    ax.set_title(f"generator inference on {env['device']} ({env['device_name']})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
