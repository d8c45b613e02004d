"""The CI gate: samples/s ratios (vs eager fp32 at the same batch and mode; train loop vs seed loop) against a baseline report."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from gantool.errors import ConfigError

REFERENCE = ("eager", "fp32")  # every inference ratio is over this row at the same batch and mode


def parse_band(text: str) -> float:
    """'30%' or '30' -> 0.30; negative, or 100% and over (a gate no ratio can fail), is a one-line error."""
    raw = text.strip()
    try:
        value = float(raw.removesuffix("%").strip())
    except ValueError:
        raise ConfigError(f"--max-regression {text!r}: give a percentage such as 30%") from None
    if not 0 <= value < 100 or value != value:
        # a ratio falls by 100% only at 0 samples/s, so a band of 100% or more could never fail
        raise ConfigError(f"--max-regression {text!r}: must be at least 0% and below 100% (a ratio cannot fall by 100%)")
    return value / 100


def read_baseline(path: Path) -> dict[str, Any]:
    """A gantool bench --json report; a missing, unreadable or non-report file is a one-line error."""
    from gantool.paths import require_file

    p = Path(path)
    if p.is_dir():
        require_file(p, "--compare")  # "is a folder; expected a file"
    if not p.is_file():
        raise ConfigError(f"--compare {p}: no such file (write one with `gantool bench --json {p}`)")
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"--compare {p}: not a JSON bench report ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise ConfigError(f"--compare {p}: not a gantool bench report (no 'results' list)")
    return doc


def ratios(report: dict[str, Any]) -> dict[str, float]:
    """{label: ratio}: the values of paired_ratios."""
    return {k: v["value"] for k, v in paired_ratios(report).items()}


def paired_ratios(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{label: {"value", "ci_low", "ci_high", "paired"}}: each measured row's speed over eager fp32 at its
    batch and mode, and gantool's train loop over the seed loop per precision. Ratios cancel the
    machine's speed; paired ones (interleaved rounds, issue 24) also cancel its drift and carry a 95 %
    interval. Rows of a sequential run (or an older report) give samples/s over samples/s, no interval."""
    rows = [r for r in report.get("results", []) if r.get("status") == "ok" and r.get("samples_per_s")]
    ref = {(r["batch"], r.get("mode", "latency")): r["samples_per_s"] for r in rows
           if (r["backend"], r["precision"]) == REFERENCE}
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        mode = r.get("mode", "latency")
        base = ref.get((r["batch"], mode))
        if (r["backend"], r["precision"]) == REFERENCE or not base:
            continue
        label = f"{r['backend']} {r['precision']} {mode} b{r['batch']}"
        paired = r.get("ratio")
        out[label] = (_ratio(paired["median"], paired.get("ci_low"), paired.get("ci_high"), True) if paired
                      else _ratio(r["samples_per_s"] / base))
    for p, v in (report.get("train") or {}).get("gantool", {}).items():
        if isinstance(v, dict) and v.get("ratio"):
            ci = v.get("ratio_ci") or {}
            out[f"train {p} (gantool loop / seed loop)"] = _ratio(v["ratio"], ci.get("ci_low"), ci.get("ci_high"),
                                                                  bool(ci))
    return out


def _ratio(value: float, lo: float | None = None, hi: float | None = None, paired: bool = False) -> dict[str, Any]:
    return {"value": value, "ci_low": lo, "ci_high": hi, "paired": paired}


def verdict(base: dict[str, Any], cur: dict[str, Any], band: float) -> tuple[str, str]:
    """(verdict, why) for one ratio. Within the band: "ok". A fall past the band is "fail" when the
    intervals say it is real (the current one lies wholly below the baseline's) or when there is no
    interval to weigh it; when they overlap, the intervals are too wide to tell a fall past the band
    from noise: "undecided" (bench re-measures those; still undecided is a failure, not a pass)."""
    change = cur["value"] / base["value"] - 1
    if change >= -band:
        return "ok", ""
    said = f"{cur['value']:.3f} now vs {base['value']:.3f} in the baseline ({change:+.0%}, band -{band:.0%})"
    known = None not in (base["ci_low"], base["ci_high"], cur["ci_low"], cur["ci_high"])
    if known and cur["ci_high"] >= base["ci_low"]:
        wider = ("the current interval" if cur["ci_high"] - cur["ci_low"] >= base["ci_high"] - base["ci_low"]
                 else "the baseline's interval")
        return "undecided", (f"{said}, and the intervals overlap (now [{cur['ci_low']:.3f}, {cur['ci_high']:.3f}], "
                             f"baseline [{base['ci_low']:.3f}, {base['ci_high']:.3f}]): {wider} is too wide to rule "
                             "the fall in or out")
    why = "the intervals do not overlap" if known else "no interval to weigh it (sequential or older report)"
    return "fail", f"{said}; {why}"


FAILING = ("fail", "undecided", "not measured")  # verdicts that fail the gate


def compare(current: dict[str, Any], baseline: dict[str, Any], band: float) -> dict[str, Any]:
    """Each baseline ratio against the current one (gantool.bench.gate.verdict)."""
    cur, base = paired_ratios(current), paired_ratios(baseline)
    if not base:
        raise ConfigError("--compare: the baseline has no ratio to compare (it needs ok eager fp32 rows "
                          "beside other rows at the same batch, or a --train section)")
    rows = []
    for label in sorted(base):
        b, c = base[label], cur.get(label)
        if c is None:
            rows.append({"ratio": label, "baseline": b["value"], "current": None, "change": None,
                         "verdict": "not measured", "why": "no ok row for it in this run"})
            continue
        v, why = verdict(b, c, band)
        rows.append({"ratio": label, "baseline": b["value"], "current": c["value"], "change": c["value"] / b["value"] - 1,
                     "baseline_ci": [b["ci_low"], b["ci_high"]], "current_ci": [c["ci_low"], c["ci_high"]],
                     "verdict": v, "why": why})
    for label in sorted(set(cur) - set(base)):
        rows.append({"ratio": label, "baseline": None, "current": cur[label]["value"], "change": None, "verdict": "new"})
    compared = [r for r in rows if r["change"] is not None]
    failed = [r for r in rows if r["verdict"] in FAILING]
    return {"max_regression": band, "rows": rows, "compared": len(compared), "failed": len(failed),
            "undecided": sum(r["verdict"] == "undecided" for r in rows),
            "passed": bool(compared) and not failed}


def remeasure_plan(gate: dict[str, Any], current: dict[str, Any]) -> tuple[list[tuple[str, str, str, int]], list[str]]:
    """The undecided ratios bench can measure again: ([(backend, precision, mode, batch)], [labels it
    cannot, e.g. the train loop's, which bench does not re-run])."""
    undecided = {r["ratio"] for r in gate["rows"] if r["verdict"] == "undecided"}
    rows = {f"{r['backend']} {r['precision']} {r.get('mode', 'latency')} b{r['batch']}":
            (r["backend"], r["precision"], r.get("mode", "latency"), r["batch"])
            for r in current.get("results", []) if r.get("ratio")}
    can = [rows[label] for label in sorted(undecided) if label in rows]
    return can, sorted(undecided - set(rows))


def merge_remeasured(current: dict[str, Any], again: dict[str, Any], keys: list[tuple[str, str, str, int]]) -> int:
    """Put the re-measured rows (ok, with a paired ratio) in place of the undecided ones; how many."""
    fresh = {(r["backend"], r["precision"], r.get("mode", "latency"), r["batch"]): r for r in again.get("results", [])
             if r.get("status") == "ok" and r.get("ratio")}
    n = 0
    for i, r in enumerate(current["results"]):
        k = (r["backend"], r["precision"], r.get("mode", "latency"), r["batch"])
        if k in keys and k in fresh:
            current["results"][i] = dict(fresh[k], rank=r.get("rank"), remeasured=True)
            n += 1
    return n


def print_gate(gate: dict[str, Any], baseline: str, file: TextIO) -> None:
    """The ratio table (within 100 columns) and a one-line verdict."""
    print(f"ratio gate vs {baseline} (max regression {gate['max_regression']:.0%})", file=file)
    w = max([len("ratio")] + [len(r["ratio"]) for r in gate["rows"]])
    print(f"  {'ratio':<{w}}  {'baseline':>8}  {'current':>8}  {'change':>7}  verdict", file=file)
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for r in gate["rows"]:
        ch = "-" if r["change"] is None else f"{r['change']:+.0%}"
        print(f"  {r['ratio']:<{w}}  {f(r['baseline']):>8}  {f(r['current']):>8}  {ch:>7}  {r['verdict']}", file=file)
    for r in gate["rows"]:  # one line a ratio that fell past the band: both ratios, and why it counts
        if r["verdict"] in FAILING:
            print(f"  {r['verdict']}: {r['ratio']}: {r['why']}", file=file)
    for note in gate.get("remeasured", {}).get("notes", []):
        print(f"  {note}", file=file)
