"""Typed user-facing errors: the CLI prints str(err) as one line on stderr and exits non-zero."""
from __future__ import annotations

import os


class GantoolError(Exception):
    """Base for every error caused by user input or environment, not by a gantool bug."""

    exit_code = 2


class ConfigError(GantoolError):
    """An option value that makes no sense (epochs <= 0, unknown dataset, ...)."""


class DataError(GantoolError):
    """A dataset that cannot be found, read or used."""


class DeviceError(GantoolError):
    """A device (or execution provider) that was asked for but is not available."""


class CheckpointError(GantoolError):
    """A checkpoint that is missing, truncated, unsafe, or of another architecture."""


class ExportError(GantoolError):
    """An export that could not be produced or written."""


class ArtifactError(GantoolError):
    """An exported artifact that is missing, unreadable, or breaks the I/O contract."""


class OutputError(GantoolError):
    """An output location that cannot be written."""


class TrainingDiverged(GantoolError):
    """A loss became NaN/Inf; the last good checkpoint is kept."""

    exit_code = 3


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when empty), for one-line reports,
    within `limit` characters (clip: a cut keeps the tail, where the fix is)."""
    text = str(e).strip()
    return clip(text.splitlines()[0] if text else type(e).__name__, limit)


def clip(text: str, limit: int = 300) -> str:
    """`text` within `limit` characters. Messages end with their fix ("(run scripts/web_deps.sh)",
    "--allow-failures to exit 0"), so a cut, when one is unavoidable, drops the middle: the first
    third (what failed) and the rest from the tail, joined by " ... "."""
    if len(text) <= limit:
        return text
    head = max(0, limit // 3)
    tail = max(0, limit - head - 5)
    return f"{text[:head]} ... {text[len(text) - tail:]}" if tail else text[:limit]


def short_path(path: "str | os.PathLike[str]") -> str:
    """A path as a message shows it: relative to the working directory when it lies below it
    (".cache/web" for a clone at any depth), else with ~ for the home directory, else as given.
    Keeps one-line errors short enough that their advice is never cut off."""
    p = os.path.abspath(os.fspath(path))
    for base, shown in ((os.getcwd(), ""), (os.path.expanduser("~"), "~")):
        if base and base != os.sep and (p == base or p.startswith(base.rstrip(os.sep) + os.sep)):
            rel = os.path.relpath(p, base)
            return (rel if not shown else f"{shown}/{rel}") if rel != "." else (shown or ".")
    return os.fspath(path)


class GeneratorError(GantoolError):
    """A user generator (--generator) that cannot be imported, built, loaded or that breaks its contract."""
