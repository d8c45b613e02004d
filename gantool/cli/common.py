"""Helpers shared by the command modules: user errors become one stderr line and an exit code."""
from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Callable, TypeVar

import typer

from gantool.errors import GantoolError

F = TypeVar("F", bound=Callable[..., object])


def fail(message: str, code: int = 2) -> "typer.Exit":
    """`error: message` on stderr and exit `code`. Under torchrun only rank 0 prints: every rank
    checks the same input, so its line speaks for all of them."""
    from gantool.distributed import quiet_rank_exit

    if not quiet_rank_exit():
        typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def user_errors(fn: F) -> F:
    """Turn GantoolError (and Ctrl-C) into `error: ...` on stderr plus a non-zero exit; no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GantoolError as e:
            raise fail(str(e), e.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except MemoryError:
            raise fail("out of memory", 2) from None

    return wrapper  # type: ignore[return-value]


def check_writable(*paths: tuple[Path | None, str], directory: bool = False) -> None:
    """Each (path, flag) given must be writable (gantool.checkpoint.check_writable); call before any work."""
    from gantool.checkpoint import check_writable as check

    for path, flag in paths:
        if path is not None:
            check(path, flag, directory=directory)


def parse_int_list(text: str, what: str) -> list[int]:
    """'1,64,4096' -> [1, 64, 4096]; anything non-numeric or <= 0 is a one-line error."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = int(part)
        except ValueError:
            raise GantoolError(f"{what}: {part!r} is not an integer") from None
        if v <= 0:
            raise GantoolError(f"{what}: {v} must be > 0")
        out.append(v)
    if not out:
        raise GantoolError(f"{what}: give at least one value")
    return out


def parse_choice_list(text: str, choices: list[str], what: str) -> list[str]:
    out = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in out if p not in choices]
    if bad:
        raise GantoolError(f"unknown {what} {', '.join(bad)}; choose from: {', '.join(choices)}")
    if not out:
        raise GantoolError(f"{what}: give at least one value")
    return out


class _NoCudaRuntimeNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


def quiet_no_cuda_runtime_notice() -> None:
    """torch's CUDA wheels log "No CUDA runtime is found, using CUDA_HOME=..." whenever torch.compile,
    Inductor or AOTI load their C++ helpers on a machine without a GPU: noise on every CPU run (the
    device gantool uses is reported elsewhere). Drops that one message, nothing else."""
    log = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _NoCudaRuntimeNotice) for f in log.filters):
        log.addFilter(_NoCudaRuntimeNotice())
