"""Typed user-facing errors: the CLI prints str(err) as one line on stderr and exits non-zero."""


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
    """The first line of an exception's message (its type name when empty), for one-line reports."""
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:limit]


class GeneratorError(GantoolError):
    """A user generator (--generator) that cannot be imported, built, loaded or that breaks its contract."""
