"""`gantool demo` (what `make demo` runs): every stage on one run, then runs/demo/REPORT.md and REPORT.json."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gantool.cli.app import app
from gantool.cli.common import parse_choice_list, user_errors
from gantool.errors import GantoolError


class DemoFailed(GantoolError):
    """A stage exited non-zero; its own error line is already above."""


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option(help="Run directory; everything the demo writes goes here.")] = Path("runs/demo"),
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over: rename the previous run to OUT.prev-<time> (nothing is deleted) and train anew.")] = False,
    stages: Annotated[str, typer.Option(help="Comma list of stages to run: train, export, verify, eval, bench; and serve (not by default: needs the serve extra, ~25 s): gantool serve on free loopback ports, a load test at concurrency 1,4,16, stop.")] = "train,export,verify,eval,bench",
    epochs: Annotated[Optional[str], typer.Option(metavar="<int>", hidden=True, help="Epochs of a new run (tests).")] = None,
    limit: Annotated[Optional[str], typer.Option(metavar="<int>", hidden=True, help="Images of a new run (tests).")] = None,
    formats: Annotated[str, typer.Option(hidden=True, help="Export formats.")] = "all",
    n: Annotated[int, typer.Option("--n", hidden=True, help="Eval samples.")] = 10_000,
    batch_sizes: Annotated[str, typer.Option(hidden=True, help="Bench batch sizes.")] = "1,64,4096",
    quick: Annotated[bool, typer.Option("--quick", hidden=True, help="Bench eager, TorchScript and ORT with minimal timing (tests).")] = False,
) -> None:
    """Train (or reuse a finished run, or resume a half-finished one), export, verify, eval and bench.

    Safe to run again: a finished run is reused and the later stages are redone. Each stage is the
    same `gantool` command you would type; REPORT.md in the run directory sums them up with the
    machine, versions and the wall time of each stage.
    """
    from gantool.demo import ALL_STAGES, DemoOptions, run_demo

    train_args = [a for flag, v in (("--epochs", epochs), ("--limit", limit)) if v is not None for a in (flag, v)]
    bench_args = ["--backends", "eager,torchscript,ort", "--warmup", "0", "--min-time", "0", "--min-repeats", "1"] if quick else []
    opt = DemoOptions(out=out, fresh=fresh, stages=tuple(parse_choice_list(stages, list(ALL_STAGES), "stage")),
                      train_args=tuple(train_args), formats=formats, n=n, batch_sizes=batch_sizes,
                      bench_args=tuple(bench_args))
    report = run_demo(opt, log=typer.echo)
    typer.echo(f"demo: report written to {out / 'REPORT.md'} (and REPORT.json)")
    if report.get("failed"):
        raise DemoFailed(f"demo stopped at {report['failed']}; see its error above and {out / 'REPORT.md'}")
