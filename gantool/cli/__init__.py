"""The Typer app. Each command lives in its own small module and registers itself on `app`."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from gantool import __version__

app = typer.Typer(
    name="gantool",
    help="Train a GAN, export its generator (TorchScript, ONNX, AOTInductor), verify parity, benchmark.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gantool {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = None,
) -> None:
    """gantool: train, export, verify and benchmark a GAN generator."""


# Command modules: importing each one registers its command(s) on `app`.

from gantool.cli import bench_cmd  # noqa: E402,F401
from gantool.cli import export_cmd  # noqa: E402,F401
from gantool.cli import train_cmd  # noqa: E402,F401
from gantool.cli import eval_cmd  # noqa: E402,F401
