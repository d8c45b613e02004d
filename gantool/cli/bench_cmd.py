"""`gantool bench`: time the generator across backends, precisions and batch sizes."""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from gantool.cli.app import app
from gantool.cli.common import check_writable, parse_choice_list, parse_int_list, user_errors
from gantool.errors import GantoolError


class BenchDevice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


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


@app.command()
@user_errors
def bench(
    exported: Annotated[Optional[Path], typer.Option(help="Directory of exported artifacts (with manifest.json). Default: ./exported when it exists.")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="Run dir or checkpoint.pt: eager/compile backends and the parity reference. Default: the manifest's source checkpoint.")] = None,
    backends: Annotated[Optional[str], typer.Option(help="Comma list: eager, compile, compile-reduce-overhead, torchscript, aoti, ort, openvino, ort-cuda, ort-cuda-graph, ort-trt, web (ONNX Runtime Web in headless Chromium; needs scripts/web_deps.sh), triton (needs --url). Default: all that make sense on the device (web and triton only when named).")] = None,
    precisions: Annotated[Optional[str], typer.Option(help="Comma list of fp32, bf16, fp16, int8 (int8: ort/openvino on an int8 ONNX file). Default: what the device runs natively (fp32; bf16 where the CPU has avx512_bf16/AMX; fp16 and bf16 on CUDA sm_80+), plus int8 where an int8 file is exported.")] = None,
    batch_sizes: Annotated[str, typer.Option(help="Comma list of batch sizes (> 0).")] = "1,64,1024,4096",
    device: Annotated[BenchDevice, typer.Option(help="auto picks CUDA when present. ORT CUDA/TensorRT backends always run on CUDA.")] = BenchDevice.auto,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed calls after the first call, per row.")] = 5,
    min_time: Annotated[float, typer.Option(min=0.0, help="Seconds of timed calls per row, at least.")] = 1.0,
    min_repeats: Annotated[int, typer.Option(min=1, help="Timed calls per row, at least.")] = 10,
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch intra-op threads (default: torch's).")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the full JSON report here (schema: docs/bench.md).")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG of samples/s against batch size per backend.")] = None,
    train: Annotated[bool, typer.Option("--train", help="Also compare training samples/s: gantool's loop vs the seed's loop.")] = False,
    train_dataset: Annotated[str, typer.Option(help="Dataset for --train.")] = "mnist-5k",
    url: Annotated[Optional[str], typer.Option(help="Triton server's gRPC HOST:PORT (default port 8001) for backend triton.")] = None,
    triton_model: Annotated[str, typer.Option(help="Model the Triton server serves (from `gantool export --format triton`).")] = "generator_onnx",
) -> None:
    """Measure samples/s and latency (median, p90, p99) of every backend, checked against eager fp32.

    The last stdout line is a compact JSON summary (best backend per batch size).
    Under torchrun each rank benches its own device (cuda:LOCAL_RANK, or one CPU thread) and
    rank 0 prints one report with the aggregate samples/s and the scaling efficiency.
    """
    from gantool.bench import report as rep
    from gantool.bench.suite import BenchConfig, run_bench
    from gantool.bench.backends import BACKENDS
    from gantool.device import PRECISIONS
    from gantool.distributed import Dist

    if exported is None and Path("exported/manifest.json").exists():
        exported = Path("exported")
    if exported is not None and not exported.exists():
        raise GantoolError(f"--exported {exported} does not exist (run `gantool export --checkpoint RUN --out {exported}`)")
    check_writable((json_path, "--json"), (plot, "--plot"))  # before the timing, not after it
    cfg = BenchConfig(
        checkpoint=checkpoint, exported=exported,
        backends=parse_choice_list(backends, list(BACKENDS), "backend") if backends else [],
        precisions=parse_choice_list(precisions, list(PRECISIONS), "precision") if precisions else [],
        batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"),
        device=device.value, warmup=warmup, min_time=min_time, min_repeats=min_repeats, threads=threads,
        url=url, triton_model=triton_model,
    )
    if url and not cfg.backends:
        cfg.backends = ["triton"]
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
        _print_report(report, json_path, plot)
        for line in format_aggregate(report):
            typer.echo(line)
        typer.echo(json.dumps(rep.summary(report, json_path), separators=(",", ":")))
        return
    train_kw = None
    if train:
        train_kw = {"dataset": train_dataset, "device": device.value}
        if cfg.precisions:
            train_kw["precisions"] = tuple(p for p in cfg.precisions if p != "int8") or ("fp32",)
    update, close = _progress()
    try:
        report = run_bench(cfg, progress=update, train=train_kw)
    finally:
        close()
    _print_report(report, json_path, plot)
    typer.echo(json.dumps(rep.summary(report, json_path), separators=(",", ":")))
    if not any(r["samples_per_s"] is not None for r in report["results"]):
        reasons = sorted({f"{r['backend']}: {r['reason']}" for r in report["results"]})
        raise GantoolError(f"nothing could be measured ({'; '.join(reasons)[:400]})")


def _print_report(report, json_path: Optional[Path], plot: Optional[Path]) -> None:
    from gantool.bench import report as rep

    rep.print_table(report)
    rep.print_peaks(report)
    if "train" in report:
        from gantool.bench.train_speed import format_report

        typer.echo(format_report(report["train"]))
    if json_path:
        rep.write_json(report, json_path)
        typer.echo(f"wrote {json_path}")
    if plot:
        note = rep.plot(report, plot)
        typer.echo(f"note: {note}" if note else f"wrote {plot}")
