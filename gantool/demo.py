"""`gantool demo`: train (new, resumed or reused), export, verify, eval and bench one run; write REPORT.md/.json."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gantool.config import DIGITS_AFTER_STEPS
from gantool.demo_report import duration, previous_stages, to_markdown, write_report  # noqa: F401 (to_markdown: API)
from gantool.errors import GantoolError, OutputError

STAGES = ("train", "export", "verify", "eval", "bench")
# Only when asked for (--stages ...,serve): needs the serve extra and adds ~25 s (server start/stop, 3 loads).
OPTIONAL_STAGES = ("serve",)
ALL_STAGES = STAGES + OPTIONAL_STAGES
SERVE_CONCURRENCY = "1,4,16"
SERVE_DURATION_S = 2.0
REPORT_SCHEMA = "gantool.demo/1"


@dataclass
class Stage:
    """One step of the demo: the command it ran, how it ended, how long it took, what it produced."""

    name: str
    status: str = "not run"  # ok | reused | failed | skipped | not run
    seconds: float | None = None
    command: str = ""
    summary: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    finished: str | None = None  # UTC time this stage last ran (ISO); kept when a later demo runs other stages


@dataclass
class DemoOptions:
    out: Path = Path("runs/demo")
    fresh: bool = False
    stages: tuple[str, ...] = STAGES
    train_args: tuple[str, ...] = ()  # extra train flags for a new run (tests: --epochs 1 --limit 200)
    formats: str = "all"
    n: int = 10_000
    batch_sizes: str = "1,64,4096"
    bench_args: tuple[str, ...] = ()


def train_state(out: Path) -> tuple[str, dict[str, Any]]:
    """("new" | "resume" | "finished", facts) for the run directory `out`."""
    from gantool.checkpoint import CHECKPOINT_NAME, load_checkpoint

    ckpt = out / CHECKPOINT_NAME
    if not ckpt.exists():
        return "new", {}
    try:
        payload = load_checkpoint(ckpt)
    except GantoolError as e:
        raise GantoolError(f"{e}; start over with `make demo FRESH=1` (keeps the old run aside)") from None
    tc = payload.get("train_config") or {}
    facts = {"step": int(payload.get("step", 0)), "epoch": int(payload.get("epoch", 0)),
             "epochs": int(tc.get("epochs", 0)), "recipe": tc.get("recipe"), "dataset": tc.get("dataset")}
    return ("finished" if facts["epochs"] and facts["epoch"] >= facts["epochs"] else "resume"), facts


def move_aside(out: Path) -> Path | None:
    """--fresh: rename the previous run (and everything a user put in it) to out.prev-<time>; delete nothing."""
    if not out.exists():
        return None
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = out.with_name(f"{out.name}.prev-{stamp}")
    try:
        out.rename(dest)
    except OSError as e:
        raise OutputError(f"cannot move the previous run {out} aside: {e.strerror or e}") from None
    return dest


def _carry(stage: Stage, old: dict[str, Any]) -> None:
    """Fill `stage` with an earlier demo's row of it (status, time, summary, result, when it ran)."""
    for k in ("status", "seconds", "command", "summary", "result", "finished"):
        if k in old:
            setattr(stage, k, old[k])


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _previous_train(out: Path) -> dict[str, Any]:
    """The train stage of an earlier REPORT.json in `out`, carried forward when its run is reused."""
    try:
        old = json.loads((out / "REPORT.json").read_text())
        st = next(s for s in old["stages"] if s["name"] == "train")
        if st["status"] == "reused":
            return {"seconds": st.get("result", {}).get("trained_seconds")}
        return {"seconds": st.get("seconds")} if st["status"] == "ok" else {}
    except (OSError, ValueError, KeyError, StopIteration, TypeError, AttributeError):
        return {}


def _gantool(*args: str) -> list[str]:
    """The same interpreter and gantool as this process (a clone's tree, not another install)."""
    return [sys.executable, "-m", "gantool", *args]


def plan_stages(opt: DemoOptions, state: str) -> list[tuple[Stage, list[str] | None]]:
    """Each stage with the gantool command it runs (None = nothing to run)."""
    out, ex = opt.out, opt.out / "exported"
    train = {"new": ["train", "--out", str(out), *opt.train_args],
             "resume": ["train", "--resume", str(out)], "finished": None}[state]
    cmds = {
        "train": train,
        # The demo's own folder: --force replaces artifacts of an earlier checkpoint of this run.
        "export": ["export", "--checkpoint", str(out), "--format", opt.formats, "--out", str(ex), "--force"],
        "verify": ["verify", "--exported", str(ex), "--json", str(out / "verify.json"),
                   "--image", str(out / "verify.png")],
        "eval": ["eval", "--checkpoint", str(out), "--n", str(opt.n), "--json", str(out / "eval.json")],
        "bench": ["bench", "--exported", str(ex), "--checkpoint", str(out), "--batch-sizes", opt.batch_sizes,
                  "--json", str(out / "bench.json"), "--plot", str(out / "bench.png"), *opt.bench_args],
    }
    if "serve" in opt.stages:  # run by serve_stage: `gantool serve` on free ports, this bench against it, stop
        cmds["serve"] = ["bench", "--exported", str(ex), "--checkpoint", str(out), "--backends", "triton",
                         "--precisions", "fp32", "--triton-model", "generator", "--concurrency", SERVE_CONCURRENCY,
                         "--batch-sizes", "1", "--duration", str(SERVE_DURATION_S), "--json", str(out / "bench_serve.json")]
    return [(Stage(name), cmds[name]) for name in ALL_STAGES if name in cmds]


def serve_stage(opt: DemoOptions, cmd: list[str], log: Callable[[str], None]) -> int:
    """Start `gantool serve` on free loopback ports, run the load-test bench `cmd` against it, stop it
    (SIGTERM); the bench's exit code, or 1 when the server does not start or stop cleanly."""
    from gantool.errors import first_line
    from gantool.serve.child import ServeChild

    try:
        server = ServeChild(opt.out / "exported")
    except GantoolError as e:
        log(f"error: {first_line(e)}")
        return 1
    log(f"demo: serve: gantool serve on 127.0.0.1 (gRPC {server.grpc}, HTTP {server.http})")
    try:
        rc = subprocess.call(_gantool(*cmd, "--url", server.url))
    finally:
        code, took = server.stop()
    log(f"demo: serve: server stopped in {took:.1f} s (exit {code})")
    return rc or (1 if code else 0)


def _fresh(path: Path, since: float) -> Path:
    """A stage's result file, refusing one left over from an earlier demo."""
    if not path.exists() or path.stat().st_mtime < since - 1:
        raise GantoolError(f"{path} was not written by this stage")
    return path


def _read_json(path: Path, since: float) -> dict[str, Any]:
    return json.loads(_fresh(path, since).read_text())


def read_train(out: Path, since: float) -> tuple[dict[str, Any], str]:
    from gantool.train.log import METRICS_NAME, MetricsLog

    _, facts = train_state(out)
    losses = [r for r in MetricsLog(out / METRICS_NAME).read() if "d_loss" in r]
    res = {**facts, "final_png": "samples/final.png"}
    text = f"{facts['recipe']} recipe on {facts['dataset']}: epoch {facts['epoch']}/{facts['epochs']}, step {facts['step']:,}"
    if losses:
        last, speeds = losses[-1], sorted(r["samples_per_s"] for r in losses)
        res.update(d_loss=last["d_loss"], g_loss=last["g_loss"], samples_per_s_median=speeds[len(speeds) // 2])
        text += f"; last d_loss {last['d_loss']:.3f}, g_loss {last['g_loss']:.3f}; {res['samples_per_s_median']:,.0f} samples/s (median)"
    if facts["step"] < DIGITS_AFTER_STEPS:
        text += f"; under {DIGITS_AFTER_STEPS:,} steps: probably no digits yet"
    return res, text


def read_export(out: Path, since: float) -> tuple[dict[str, Any], str]:
    doc = _read_json(out / "exported" / "manifest.json", since)
    arts = [{k: e.get(k) for k in ("file", "format", "dtype", "device", "bytes", "export_seconds")}
            for e in doc["artifacts"]]
    text = ", ".join(f"{a['format']} {a['dtype']} {a['bytes'] / 1e6:.1f} MB in {a['export_seconds']:.1f} s" for a in arts)
    return {"artifacts": arts}, text


def read_verify(out: Path, since: float) -> tuple[dict[str, Any], str]:
    doc = _read_json(out / "verify.json", since)
    rows = [{k: r.get(k) for k in ("name", "dtype", "passed", "skipped", "max_abs")} for r in doc["results"]]
    ok = [r for r in rows if r["passed"]]
    text = f"{len(ok)} of {len(rows)} artifact(s) match eager fp32: " + ", ".join(
        f"{r['name']} max |err| {r['max_abs']:.1e}" if r["passed"] else f"{r['name']} {'skipped' if r['skipped'] else 'FAILED'}"
        for r in rows)
    return {"passed": doc.get("passed"), "results": rows}, text


def read_eval(out: Path, since: float) -> tuple[dict[str, Any], str]:
    s = _read_json(out / "eval.json", since)
    keys = ("n", "fid", "fid_floor", "fid_over_floor", "recognisability", "class_entropy", "min_class_share", "bars")
    res = {k: s.get(k) for k in keys}
    # FID/floor in every feature space, each named, and which one the bars judge (the worse): REPORT.md
    # printed the primary space's figure while the bar judged the worse one (issue 36.10)
    spaces = {n: v["fid_over_floor"] for n, v in (s.get("feature_spaces") or {}).items()} or {"": s["fid_over_floor"]}
    res["fid_over_floor_by_space"] = spaces
    worst = max(spaces, key=spaces.get)
    ratios = ", ".join(f"{r:.1f}x in {n}" if n else f"{r:.1f}x" for n, r in spaces.items())
    judged = f"; the bars judge the worse, {spaces[worst]:.1f}x in {worst}" if len(spaces) > 1 else ""
    # the bars' lines are gantool eval's own (gantool.quality.targets), so REPORT.md says what eval says
    text = (f"{s['n']:,} samples: FID/floor {ratios} (FID {s['fid']:.1f}, real-vs-real floor {s['fid_floor']:.1f} in "
            f"{next(iter(spaces)) or 'its space'}){judged}; recognisability {s['recognisability']:.1%}, class entropy "
            f"{s['class_entropy']:.3f}; " + "; ".join(b["line"] for b in (s.get("bars") or {}).values()))
    return res, text


def read_serve(out: Path, since: float) -> tuple[dict[str, Any], str]:
    doc = _read_json(out / "bench_serve.json", since)
    rows = [{"concurrency": r.get("concurrency"), "batch": r["batch"], "samples_per_s": r.get("samples_per_s"),
             "status": r["status"], **{k: (r.get("load") or {}).get(k) for k in
                                       ("requests_per_s", "client_latency_ms", "errors", "checked", "wrong",
                                        "queue_ms", "compute_infer_ms", "mean_batch")}}
            for r in doc["results"]]
    text = "gantool serve (Triton via PyTriton, ort): " + ", ".join(
        f"c{r['concurrency']} {r['samples_per_s'] or 0:,.0f} samples/s p99 "
        f"{(r['client_latency_ms'] or {}).get('p99') or float('nan'):.1f} ms, {r['errors']} errors, "
        f"{r['checked']} answers checked ({r['wrong']} wrong)" for r in rows)
    return {"rows": rows}, text


def read_bench(out: Path, since: float) -> tuple[dict[str, Any], str]:
    doc = _read_json(out / "bench.json", since)
    rows = [{**{k: r.get(k) for k in ("backend", "precision", "batch", "samples_per_s", "median_ms", "ranked", "reason")},
             "mode": r.get("mode", "latency")} for r in doc["results"]]
    best: dict[int, dict[str, Any]] = {}
    for r in rows:
        if r["samples_per_s"] and (r["batch"] not in best or r["samples_per_s"] > best[r["batch"]]["samples_per_s"]):
            best[r["batch"]] = r
    env = doc.get("environment", {})
    text = f"{env.get('device', '?')}: best " + ", ".join(
        f"batch {b} {r['backend']} {r['precision']} {r['samples_per_s']:,.0f}/s" for b, r in sorted(best.items()))
    from gantool.bench.watch import warning_line

    if (warning := warning_line(doc.get("conditions"))):  # beside the numbers it affects
        text += f" ({warning})"
    return {"device": env.get("device"), "rows": rows, "conditions": doc.get("conditions")}, text


READERS: dict[str, Callable[[Path, float], tuple[dict[str, Any], str]]] = {
    "train": read_train, "export": read_export, "verify": read_verify, "eval": read_eval, "bench": read_bench,
    "serve": read_serve}


def machine() -> dict[str, Any]:
    """The machine the numbers come from: CPU model and ISA, threads, GPU, versions (bench's environment())."""
    import torch

    from gantool.bench.machine import environment
    from gantool.device import cpu_isa, resolve_device

    env = environment(resolve_device("auto"))
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"cpu": env["cpu"], "cpu_count": env.get("cpu_count"), "threads": env["threads"], "isa": cpu_isa(),
            "gpus": gpus, "platform": env.get("platform"), "versions": env["versions"],
            "onnxruntime_providers": env.get("onnxruntime_providers", [])}


def run_demo(opt: DemoOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the stages in order as `python -m gantool ...` subprocesses; the report is rewritten after each."""
    import shlex

    from gantool.checkpoint import check_writable

    if opt.fresh:
        moved = move_aside(opt.out)
        if moved:
            log(f"demo: FRESH: the previous run is kept, renamed to {moved} (delete it when you no longer need it)")
    check_writable(opt.out, "--out", directory=True)
    state, facts = train_state(opt.out)
    previous = _previous_train(opt.out) if state == "finished" else {}
    earlier = previous_stages(opt.out, REPORT_SCHEMA, ALL_STAGES)  # a stage not run keeps its earlier row
    report: dict[str, Any] = {"schema": REPORT_SCHEMA, "out": str(opt.out), "created": _now(),
                              "machine": machine(), "stages": []}
    plan = plan_stages(opt, state)
    if "serve" in earlier and not any(s.name == "serve" for s, _ in plan):  # optional: kept when run before
        plan.append((Stage("serve"), None))
    stages = [s for s, _ in plan]
    t_all, failed = time.perf_counter(), None
    asked = [name for name in ALL_STAGES if name in opt.stages]
    for stage, cmd in plan:
        carried = stage.name not in opt.stages and stage.name in earlier and not (stage.name == "train" and state == "new")
        if carried:  # its row as the earlier demo left it, with when that was
            _carry(stage, earlier[stage.name])
            cmd = None
        elif stage.name not in opt.stages:
            stage.status, cmd = "skipped", None
            stage.summary = "not asked for (--stages)"
            if stage.name == "train" and state == "new":
                continue  # otherwise a skipped stage still shows what the run directory holds
        elif failed is not None:
            stage.summary = f"not run: {failed.name} failed"
        elif cmd is None:
            stage.status = "reused"
            stage.summary = "finished run reused (`make demo FRESH=1` trains a new one)"
            if previous.get("seconds"):
                stage.result["trained_seconds"] = previous["seconds"]
                stage.summary += f", trained in {duration(previous['seconds'])} by an earlier demo"
            # the numbering stays whole on a second run: [1/5] is said even when nothing runs
            step = f" (step {facts['step']:,})" if facts.get("step") is not None else ""
            log(f"demo: [{asked.index(stage.name) + 1}/{len(asked)}] {stage.name}: reused {opt.out}{step}; "
                "`make demo FRESH=1` trains a new one")
        else:
            stage.command = "gantool " + " ".join(shlex.quote(a) for a in cmd)
            log(f"demo: [{asked.index(stage.name) + 1}/{len(asked)}] {stage.name}: {stage.command}")
            since, t0 = time.time(), time.perf_counter()
            rc = serve_stage(opt, cmd, log) if stage.name == "serve" else subprocess.call(_gantool(*cmd))
            stage.seconds = round(time.perf_counter() - t0, 1)
            stage.status = "ok" if rc == 0 else "failed"
            stage.finished = _now()
            if rc:
                stage.summary, failed = f"exit {rc} (its error is above, in the demo's output)", stage
            if stage.name == "train" and state == "resume":
                stage.summary = f"resumed from step {facts['step']:,}"
        if stage.status == "reused" and not carried:
            stage.finished = _now()
        if stage.status in ("ok", "reused", "skipped") and not carried:
            try:
                res, text = READERS[stage.name](opt.out, since if cmd else 0.0)
                stage.result = {**stage.result, **res}
                if stage.status == "skipped" and stage.name != "train":
                    text = f"left by an earlier run: {text}"
                stage.summary = f"{stage.summary}; {text}" if stage.summary else text
            except Exception as e:  # noqa: BLE001 - a missing result is reported, the demo goes on
                from gantool.errors import first_line

                stage.summary = f"{stage.summary} (no result: {first_line(e)})".strip()
        report["stages"] = [s.__dict__ for s in stages]
        report["run_seconds"] = round(time.perf_counter() - t_all, 1)  # this demo's own wall time
        # the report's total is the sum of the stage times it shows (kept rows included), said as such
        report["total_seconds"] = round(sum(s.seconds or 0 for s in stages), 1)
        write_report(opt.out, report)
    report["failed"] = failed.name if failed else None
    write_report(opt.out, report)
    return report
