"""`gantool export`, `gantool verify` and `gantool sample`: parse options, call the library, print."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from gantool.cli.app import app
from gantool.cli.common import parse_choice_list, user_errors

FORMATS = ["onnx", "torchscript", "aoti", "all"]
DTYPES = ["fp32", "fp16", "bf16"]


@app.command()
@user_errors
def export(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Run directory or checkpoint file to export.")],
    format: Annotated[str, typer.Option("--format", help="onnx, torchscript, aoti or all (comma-separated list).")] = "all",
    out: Annotated[Path, typer.Option("--out", help="Directory for the artifacts and manifest.json.")] = Path("exported"),
    dtype: Annotated[str, typer.Option("--dtype", help="fp32, fp16 or bf16 (comma-separated list).")] = "fp32",
    opset: Annotated[Optional[int], typer.Option("--opset", help="ONNX opset (18 or newer); default: the exporter's.")] = None,
    device: Annotated[str, typer.Option("--device", help="Device AOTInductor compiles for: cpu or cuda.")] = "cpu",
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Check parity against eager fp32 after exporting.")] = True,
) -> None:
    """Export the generator to TorchScript / ONNX / AOTInductor, write manifest.json, check parity."""
    from gantool.export import export_artifacts
    from gantool.export.torchscript import deprecation_notice

    formats = parse_choice_list(format, FORMATS, "format")
    dtypes = parse_choice_list(dtype, DTYPES, "dtype")
    entries = export_artifacts(checkpoint, formats, out, dtypes=dtypes, opset=opset, device=device,
                               verify=verify, log=typer.echo)
    if any(e["format"] == "torchscript" for e in entries):
        typer.echo(deprecation_notice())
    total = sum(e["export_seconds"] for e in entries)
    typer.echo(f"wrote {len(entries)} artifact(s) to {out}/ in {total:.1f} s (export time; see {out}/manifest.json)"
               + ("" if verify else "; parity not checked (--no-verify)"))


@app.command()
@user_errors
def verify(
    exported: Annotated[Path, typer.Option("--exported", help="Directory holding manifest.json and the artifacts.")] = Path("exported"),
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Reference checkpoint; default: the manifest's source.")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the parity report as JSON here.")] = None,
    image: Annotated[Optional[Path], typer.Option("--image", help="Write a PNG: each artifact beside eager, with |difference|.")] = None,
    distribution: Annotated[int, typer.Option("--distribution", metavar="N", help="Also compare the digits each artifact draws on N fixed z against eager (classifier FID delta, class histogram); 0 = off.")] = 0,
) -> None:
    """Check every exported artifact against PyTorch eager fp32; exit 1 when any fails."""
    from gantool.checkpoint import atomic_write_text
    from gantool.verify.artifacts import verify_exported

    report = verify_exported(exported, checkpoint)
    for line in report.lines():
        typer.echo(line)
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(report.to_dict(), indent=2) + "\n")
        typer.echo(f"report: {json_path}")
    if image is not None:
        from gantool.sample import exported_comparison

        exported_comparison(exported, report.checkpoint, image)
        typer.echo(f"image: {image}")
    # Further checks (e.g. distribution parity through gantool.quality.metrics) go here, before the verdict.
    if distribution > 0:
        from gantool.verify.artifacts import format_distribution, verify_distribution

        dist = verify_distribution(exported, report.checkpoint, n=distribution,
                                   progress=lambda msg: typer.echo(msg, err=True))
        for r in dist:
            typer.echo(format_distribution(r))
        if json_path is not None:
            atomic_write_text(json_path, json.dumps({**report.to_dict(), "distribution": dist}, indent=2) + "\n")
        bad = [r["candidate"] for r in dist if r.get("passed") is False]
        if bad:
            from gantool.verify.compare import ParityError

            raise ParityError(f"distribution parity failed for {', '.join(bad)} (they draw other digits than eager)")
    report.raise_if_failed()
    typer.echo(f"parity: all {sum(r.passed for r in report.results)} checked artifact(s) pass")


@app.command()
@user_errors
def sample(
    source: Annotated[Path, typer.Option("--from", help="Checkpoint, run directory or exported artifact.")],
    out: Annotated[Path, typer.Option("--out", help="PNG file for the grid.")] = Path("grid.png"),
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the latent vectors.")] = 0,
    backend: Annotated[Optional[str], typer.Option("--backend", help="Runner backend; default: from the file type.")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
) -> None:
    """Draw a grid of n samples through the same loading code as verify and bench."""
    from gantool.sample import sample_grid

    path = sample_grid(source, out, n=n, seed=seed, backend=backend, device=device)
    typer.echo(f"wrote {n} samples from {source} to {path}")
