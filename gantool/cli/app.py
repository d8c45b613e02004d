"""The Typer app and its one-line usage errors; the command modules register themselves on `app`."""
from __future__ import annotations

from typing import Annotated, Optional

import sys

import typer
from typer import _click
from typer.core import TyperGroup

from gantool import __version__
from gantool.cli.common import quiet_no_cuda_runtime_notice

quiet_no_cuda_runtime_notice()
HELP_NAMES = ["-h", "--help"]


def metavar_of(param) -> str | None:
    """One `-h` placeholder convention, Typer's own: <int>, <float>, <path>, <str>, <a|b|c>; flags show none."""
    if getattr(param, "is_flag", False):
        return ""
    if param.metavar is None and (getattr(param, "min", None) is not None or getattr(param, "max", None) is not None):
        return f"<{param.bare_type()}>"  # the range itself follows, as [x>=1]
    return param.metavar  # None: Typer's <type>; declared ones use the same form (tests/test_cli.py checks)


class OneLineErrors(TyperGroup):
    """Usage errors (bad option values, unknown commands) as one `error: ...` line, not a box."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for cmd in [self, *self.commands.values()]:
            help_opt = cmd.get_help_option(_click.Context(cmd, help_option_names=HELP_NAMES))
            for param in [*cmd.params, *([help_opt] if help_opt else [])]:
                param.metavar = metavar_of(param)

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except _click.exceptions.NoArgsIsHelpError as e:
            e.show()
            sys.exit(e.exit_code)
        except _click.exceptions.ClickException as e:
            from gantool.ranks import quiet_rank_exit

            if not quiet_rank_exit():  # under torchrun, rank 0 says it for every rank
                typer.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    name="gantool",
    help="Train a GAN, export its generator (TorchScript, ONNX, AOTInductor), verify parity, benchmark.",
    context_settings={"help_option_names": HELP_NAMES},
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
