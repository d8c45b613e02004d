"""`gantool eval`: score a checkpoint or an exported artifact (FID vs floor, recognisability, coverage)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from gantool.cli.app import app
from gantool.cli.common import check_writable, user_errors
from gantool.errors import ConfigError


def format_scores(s: dict) -> str:
    met = s["targets_met"]
    tick = {True: "ok", False: "below target"}
    hist = " ".join(f"{i}:{h:.1%}" for i, h in enumerate(s["class_histogram"]))
    return "\n".join([
        f"{s['source']} ({s['backend']}, {s['dtype']}): {s['n']} samples, seed {s['seed']}, "
        f"dataset {s['dataset']} (classifier held-out accuracy {s['classifier_accuracy']:.2%})",
        f"  FID              {s['fid']:.3f}   (real-vs-real floor {s['fid_floor']:.3f}; "
        f"ratio {s['fid_over_floor']:.1f}x, target <= {s['targets']['fid_over_floor']:.0f}x: {tick[met['fid_over_floor']]})",
        f"  recognisability  {s['recognisability']:.1%}   (p > 0.9; target >= {s['targets']['recognisability']:.0%}: "
        f"{tick[met['recognisability']]})",
        f"  class entropy    {s['class_entropy']:.3f}   (target >= {s['targets']['class_entropy']}: "
        f"{tick[met['class_entropy']]}); smallest class share {s['min_class_share']:.1%}",
        f"  classes          {hist}",
    ])


@app.command("eval")
@user_errors
def eval_(
    checkpoint: Annotated[Optional[Path], typer.Option(help="Run dir or checkpoint.pt to score (eager PyTorch).")] = None,
    artifact: Annotated[Optional[Path], typer.Option(help="An exported artifact (.onnx, .ts, .pt2) to score.")] = None,
    n: Annotated[int, typer.Option("--n", help="Samples to draw (the recipe targets use 10,000).")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the latent vectors z.")] = 0,
    dataset: Annotated[Optional[str], typer.Option(help="Dataset whose classifier and held-out images to use. "
                                                   "Default: the checkpoint's, else mnist-5k.")] = None,
    data_dir: Annotated[Path, typer.Option(help="Where the dataset lives (as for train).")] = Path("data"),
    device: Annotated[str, typer.Option(help="auto (CUDA when present) | cpu | cuda: device of the runner.")] = "auto",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the scores as JSON here.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="Runner backend for --artifact (e.g. ort, openvino); default: from the file type.")] = None,
) -> None:
    """Score samples with a classifier trained on the dataset: FID on its features, recognisability, coverage.

    The classifier is trained once per dataset (under a minute on mnist-5k) and cached in
    $GANTOOL_CACHE (default ~/.cache/gantool). The last stdout line is the scores as compact JSON.
    """
    from gantool.checkpoint import atomic_write_text
    from gantool.quality.metrics import dataset_of, evaluate_runner
    from gantool.runners import load_runner

    check_writable((json_path, "--json"))
    if (checkpoint is None) == (artifact is None):
        raise ConfigError("give exactly one of --checkpoint RUN or --artifact FILE")
    if n <= 0:
        raise ConfigError(f"--n must be > 0, got {n}")
    if checkpoint is not None:
        runner = load_runner(checkpoint, "eager", device=device)
        dataset = dataset or dataset_of(checkpoint)
    else:
        runner = load_runner(artifact, backend, device=device, dtype="auto")  # an artifact runs in its own dtype
    scores = evaluate_runner(runner, dataset or "mnist-5k", data_dir, n=n, seed=seed)
    from gantool.bench.suite import environment

    scores["environment"] = env = environment(runner.device)
    typer.echo(format_scores(scores))
    isa = ",".join(k for k, v in env["cpu_isa"].items() if v) or "none of avx2/avx512/amx"
    typer.echo(f"  machine          {env['device_name']} ({isa}), {env['threads']} threads, torch {env['versions']['torch']}")
    if json_path:
        atomic_write_text(json_path, json.dumps(scores, indent=2) + "\n")
        typer.echo(f"wrote {json_path}")
    typer.echo(json.dumps({k: v for k, v in scores.items() if k not in ("targets", "environment")}, separators=(",", ":")))
