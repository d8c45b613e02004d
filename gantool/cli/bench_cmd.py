"""`gantool bench`: time the generator across backends, precisions, modes and batch sizes."""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from gantool import backends as backend_table
from gantool.cli.app import app
from gantool.cli.common import (ClassesOpt, GeneratorOpt, ImgShapeOpt, LatentDimOpt, LatentShapeOpt, ValueRangeOpt,
                                WeightsOpt, check_writable, parse_choice_list, parse_int_list, precheck_device,
                                replaced_note, source_from_options, user_errors)
from gantool.errors import GantoolError, clip


class BenchDevice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class GraphOptLevel(str, Enum):
    disable = "disable"
    basic = "basic"
    extended = "extended"
    layout = "layout"
    all = "all"


class BenchFailed(GantoolError):
    """Requested rows errored or failed parity, or the ratio gate failed."""

    exit_code = 1


def _progress():
    """(callback, close): a rich status line on a terminal's stderr, else plain stderr lines."""
    try:
        if not sys.stderr.isatty():
            raise ImportError  # a log file gets one line a step, not spinner frames
        from rich.console import Console

        status = Console(stderr=True).status("bench: starting")
        status.start()
        return (lambda msg: status.update(f"bench: {msg}")), status.stop
    except ImportError:
        return (lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True)), (lambda: None)


REMEASURE_FACTOR = 4  # an undecided ratio is timed again with this many times the rounds' time


def _remeasure_undecided(gate: dict, report: dict, baseline: dict, band: float, cfg) -> dict:
    """The gate's undecided ratios (a fall past the band inside intervals too wide to rule it in or
    out) timed again, once, with REMEASURE_FACTOR x --min-time/--max-time (more interleaved rounds,
    so narrower intervals), then judged again; what stays undecided fails the gate."""
    import dataclasses

    from gantool.bench import gate as gate_mod
    from gantool.bench.suite import run_bench

    keys, cannot = gate_mod.remeasure_plan(gate, report)
    notes = [f"undecided: {label}: bench cannot re-measure it here (it re-times inference rows only)" for label in cannot]
    if keys:
        again_cfg = dataclasses.replace(
            cfg, backends=sorted({"eager", *(k[0] for k in keys)}), precisions=sorted({"fp32", *(k[1] for k in keys)}),
            modes=sorted({k[2] for k in keys}), batch_sizes=sorted({k[3] for k in keys}), concurrency=[],
            min_time=max(cfg.min_time, 0.5) * REMEASURE_FACTOR, max_time=max(cfg.max_time, 1.0) * REMEASURE_FACTOR,
            repeats=cfg.repeats * REMEASURE_FACTOR if cfg.repeats else None, peak_probe=False)
        update, close = _progress()
        update(f"gate: {len(keys)} undecided ratio(s); timing them again with {REMEASURE_FACTOR}x the time")
        try:
            again = run_bench(again_cfg, progress=update)
        finally:
            close()
        n = gate_mod.merge_remeasured(report, again, keys)
        notes.append(f"re-measured {n} undecided ratio(s) with {REMEASURE_FACTOR}x the rounds' time")
        gate = gate_mod.compare(report, baseline, band)
    gate["remeasured"] = {"rows": [" ".join(map(str, k)) for k in keys], "cannot": cannot, "notes": notes}
    return gate


def _percentiles(text: str) -> list[float]:
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise GantoolError(f"--percentiles: {part!r} is not a number") from None
        if not 0 < v < 100:
            raise GantoolError(f"--percentiles: {part} must be between 0 and 100")
        out.append(v)
    if not out:
        raise GantoolError("--percentiles: give at least one value")
    return out


@app.command()
@user_errors
def bench(
    exported: Annotated[Optional[Path], typer.Option(help="Directory of exported artifacts (with manifest.json). Default: ./exported when it exists.")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="Run dir or checkpoint.pt: eager/compile backends and the parity reference. Default: the generator the manifest records.")] = None,
    generator: GeneratorOpt = None,
    weights: WeightsOpt = None,
    latent_dim: LatentDimOpt = None,
    img_shape: ImgShapeOpt = None,
    latent_shape: LatentShapeOpt = None,
    classes: ClassesOpt = None,
    value_range: ValueRangeOpt = None,
    backends: Annotated[Optional[str], typer.Option(help=backend_table.help_text())] = None,
    precisions: Annotated[Optional[str], typer.Option(help="Comma list of fp32 (IEEE everywhere), tf32 (CUDA TF32 tensor cores), bf16, fp16, int8 (ort/openvino on an int8 ONNX file). Default: what the device runs natively (fp32; bf16 where the CPU has avx512_bf16/AMX; tf32, fp16 and bf16 on CUDA sm_80+), plus int8 where an int8 file is exported.")] = None,
    batch_sizes: Annotated[str, typer.Option(help="Comma list of batch sizes (> 0).")] = "1,64,1024,4096",
    modes: Annotated[str, typer.Option(help="Comma list: latency (each timing one call of batch z, waited for, on an idle device), throughput (back-to-back calls; several streams on CUDA).")] = "latency",
    device: Annotated[BenchDevice, typer.Option(help="auto picks CUDA when present. ORT CUDA/TensorRT backends always run on CUDA.")] = BenchDevice.auto,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed calls per row after the first call (CUDA graphs are captured before these, whatever this says).")] = 5,
    min_time: Annotated[float, typer.Option(min=0.0, help="Seconds of timed samples per row, at least.")] = 0.5,
    max_time: Annotated[float, typer.Option(min=0.0, help="Seconds per row at most: the cap when the median's CI is still wider than --ci-target.")] = 10.0,
    min_repeats: Annotated[int, typer.Option(min=1, help="Timed samples per row, at least.")] = 10,
    repeats: Annotated[Optional[int], typer.Option(min=1, help="Exactly this many timed samples per row (turns the CI rule off).")] = None,
    ci_target: Annotated[float, typer.Option(min=0.0, max=100.0, help="Keep sampling until the median's 95% CI is within ± this many percent.")] = 2.0,
    percentiles: Annotated[str, typer.Option(help="Latency percentiles for the JSON; each is null (with why) until n is large enough (p99 needs 100).")] = "50,90,99",
    raw_times: Annotated[bool, typer.Option("--raw-times", help="Also write every sample's time into the JSON.")] = False,
    streams: Annotated[int, typer.Option(min=1, help="Throughput mode on CUDA: streams the calls are spread over.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the z inputs and of the interleaved rounds' order.")] = 0,
    interleave: Annotated[bool, typer.Option("--interleave/--no-interleave", help="Time the rows of a batch size in rounds of short slices, in a fresh seeded random order each round, so a drifting machine slows all alike (the default); --no-interleave: each row's samples at once, row after row (a single-row profile).")] = True,
    slice_s: Annotated[float, typer.Option("--slice", min=0.001, help="Interleaved order: seconds a row is timed per round.")] = 0.1,
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch intra-op threads, and ONNX Runtime's for ort (default: torch's).")] = None,
    inter_op_threads: Annotated[Optional[int], typer.Option(min=1, help="ONNX Runtime inter-op threads (runs the session in parallel mode).")] = None,
    graph_opt_level: Annotated[Optional[GraphOptLevel], typer.Option(help="ONNX Runtime graph optimisation level (default: ORT's, all).")] = None,
    ort_option: Annotated[Optional[list[str]], typer.Option("--ort-option", help="KEY=VALUE for an ONNX Runtime CUDA/TensorRT provider option or session entry; repeatable; recorded per row.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="TensorRT engine and timing caches (default: $GANTOOL_CACHE/tensorrt or ~/.cache/gantool/tensorrt).")] = None,
    profile: Annotated[Optional[Path], typer.Option(help="Write ORT's profile JSON / a torch profiler trace of one untimed call per row here.")] = None,
    profile_row: Annotated[Optional[list[str]], typer.Option(help="With --profile: only rows matching BACKEND:PRECISION:BATCH (* for any); repeatable.")] = None,
    allow_failures: Annotated[bool, typer.Option("--allow-failures", help="Exit 0 even when a row errors or fails parity.")] = False,
    wide: Annotated[bool, typer.Option("--wide", help="Show every column (IQR, p90/p99, first call, capture, GFLOP/s, memory, parity).")] = False,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the full JSON report here (schema: docs/bench.md).")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG of samples/s against batch size per backend.")] = None,
    train: Annotated[bool, typer.Option("--train", help="Also compare training samples/s: gantool's loop vs the seed's loop.")] = False,
    train_dataset: Annotated[str, typer.Option(help="Dataset for --train.")] = "mnist-5k",
    url: Annotated[Optional[str], typer.Option(help="Triton server's gRPC HOST:PORT (default port 8001) for backend triton.")] = None,
    triton_model: Annotated[Optional[str], typer.Option(help="Model the Triton server serves (`gantool serve` names it generator; `gantool export --format triton` generator_onnx, generator_torchscript, generator_python). Default: the server's one ready model; with several, bench lists them.")] = None,
    concurrency: Annotated[Optional[str], typer.Option(help="triton: load-test rows instead of one-call timing: keep this many requests in flight (comma list, e.g. 1,4,16), each request --batch-sizes rows.")] = None,
    duration: Annotated[float, typer.Option(min=0.1, help="triton --concurrency: seconds of load per row.")] = 5.0,
    compare: Annotated[Optional[Path], typer.Option(help="Baseline bench JSON: gate on samples/s ratios (vs eager fp32 at the same batch; train vs seed loop).")] = None,
    max_regression: Annotated[str, typer.Option(help="With --compare: fail when a ratio falls by more than this (0% up to, not including, 100%).")] = "30%",
) -> None:
    """Measure samples/s and latency (median with its 95% CI) of every backend, checked against eager fp32.

    Exits 1 when a row errors or fails parity (unless --allow-failures) or the --compare gate fails.
    The last stdout line is a compact JSON summary (best backend per batch size).
    Under torchrun each rank benches its own device (cuda:LOCAL_RANK, or one CPU thread) and
    rank 0 prints one report with the aggregate samples/s and the scaling efficiency.
    """
    if exported is None and Path("exported/manifest.json").exists():
        exported = Path("exported")
    if exported is not None and not exported.exists():
        raise GantoolError(f"--exported {exported} does not exist (run `gantool export --checkpoint RUN --out {exported}`)")
    check_writable((json_path, "--json"), (plot, "--plot"))  # before the timing, not after it
    precheck_device(device)  # these before the heavy imports below (issue 36.5)
    batch_list = parse_int_list(batch_sizes, "--batch-sizes")
    concurrency_list = parse_int_list(concurrency, "--concurrency") if concurrency else []
    percentile_list = _percentiles(percentiles)

    backend_list = parse_choice_list(backends, backend_table.names(), "backend") if backends else []  # torch-free
    from gantool.bench import gate as gate_mod  # torch-free

    baseline = band = None
    if compare is not None:  # bad gate input fails before anything is timed
        band = gate_mod.parse_band(max_regression)
        baseline = gate_mod.read_baseline(compare)
    source = source_from_options(checkpoint, generator, weights, latent_dim, img_shape, value_range,
                                 latent_shape, classes)

    from gantool.bench import report as rep
    from gantool.bench.suite import BenchConfig, failures, run_bench
    from gantool.bench.timing import MODES
    from gantool.device import PRECISIONS
    from gantool.distributed import Dist
    from gantool.runners.ort_options import parse_ort_options

    cfg = BenchConfig(
        checkpoint=source, exported=exported,
        backends=backend_list,
        precisions=parse_choice_list(precisions, list(PRECISIONS), "precision") if precisions else [],
        batch_sizes=batch_list, modes=parse_choice_list(modes, list(MODES), "mode"),
        device=device.value, warmup=warmup, min_time=min_time, max_time=max_time, min_repeats=min_repeats,
        repeats=repeats, ci_target=ci_target / 100, percentiles=percentile_list, raw_times=raw_times,
        streams=streams, seed=seed, threads=threads, inter_op_threads=inter_op_threads,
        graph_opt_level=graph_opt_level.value if graph_opt_level else None, ort_options=parse_ort_options(ort_option),
        cache_dir=cache_dir, profile_dir=profile, profile_rows=list(profile_row or []),
        url=url, triton_model=triton_model,
        concurrency=concurrency_list, duration=duration,
        interleave=interleave, slice_s=slice_s,
    )
    if url and not cfg.backends:
        cfg.backends = ["triton"]
    if cfg.concurrency and "triton" not in cfg.backends:
        raise GantoolError("--concurrency load-tests a Triton server: add --backends triton --url HOST:PORT")
    dist = Dist.from_env()
    if dist.enabled:
        if train:
            raise GantoolError("--train is not distributed; run it without torchrun (or use `gantool train --nproc N`)")
        from gantool.bench.gather import format_aggregate, run_distributed

        update, close = _progress() if dist.is_main else ((lambda msg: None), (lambda: None))
        try:
            report = run_distributed(cfg, dist, progress=update)
        finally:
            close()
            dist.close()
        if report is None:  # ranks other than 0 have handed their rows to rank 0
            return
        _print_report(report, json_path, plot, wide)
        for line in format_aggregate(report):
            typer.echo(line)
        typer.echo(json.dumps(rep.summary(report, json_path), separators=(",", ":")))
        return
    train_kw = None
    if train:
        train_kw = {"dataset": train_dataset, "device": device.value}
        if cfg.precisions:
            train_kw["precisions"] = tuple(p for p in cfg.precisions if p not in ("int8", "tf32")) or ("fp32",)
    update, close = _progress()
    try:
        report = run_bench(cfg, progress=update, train=train_kw)
    finally:
        close()
    gate = None
    if baseline is not None:
        gate = gate_mod.compare(report, baseline, band)  # type: ignore[arg-type]
        if gate["undecided"]:
            gate = _remeasure_undecided(gate, report, baseline, band, cfg)
        report["gate"] = dict(gate, baseline=str(compare))
    _print_report(report, json_path, plot, wide)
    if gate is not None:
        gate_mod.print_gate(gate, str(compare), sys.stdout)
    typer.echo(json.dumps(rep.summary(report, json_path), separators=(",", ":")))
    if not any(r["samples_per_s"] is not None for r in report["results"]):
        reasons = sorted({f"{r['backend']}: {r['reason']}" for r in report["results"]})
        raise GantoolError(f"nothing could be measured ({clip('; '.join(reasons), 400)})")
    problems = []
    bad = failures(report)
    if bad and not allow_failures:
        shown = "; ".join(f"{r['backend']} {r['precision']} b{r['batch']} {r['status']}: {r['reason']}" for r in bad[:3])
        problems.append(f"{len(bad)} row(s) failed ({clip(shown)}); --allow-failures to exit 0")
    if gate is not None and not gate["passed"]:
        undecided = f", {gate['undecided']} of them undecided (intervals too wide to tell)" if gate["undecided"] else ""
        problems.append(f"ratio gate failed: {gate['failed']} of {len(gate['rows'])} ratios regressed more than "
                        f"{band:.0%}, were not measured or could not be told apart from noise vs {compare}{undecided}")
    if problems:
        raise BenchFailed("; ".join(problems))


def _print_report(report, json_path: Optional[Path], plot: Optional[Path], wide: bool = False) -> None:
    from gantool.bench import report as rep

    from gantool.bench.watch import warning_line

    rep.print_table(report, wide=wide)
    rep.print_peaks(report)
    if (warning := warning_line(report.get("conditions"))):
        typer.echo(warning, err=True)  # a slowed or busy machine, said once (the JSON keeps the probes)
    if any(r.get("mode") == "load" for r in report["results"]):
        from gantool.bench.load_rows import summary_lines

        for line in summary_lines(report):
            typer.echo(line)
    if "train" in report:
        from gantool.bench.train_speed import format_report

        typer.echo(format_report(report["train"]))
    if json_path:
        again = replaced_note(json_path)
        rep.write_json(report, json_path)
        typer.echo(f"wrote {json_path}{again}")
    if plot:
        again = replaced_note(plot)
        note = rep.plot(report, plot)
        typer.echo(f"note: {note}" if note else f"wrote {plot}{again}")
