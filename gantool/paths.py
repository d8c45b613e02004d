"""Path checks that need no torch: the CLI runs them before its heavy imports, so a wrong path is
answered in a fraction of a second (issue 26), and the library calls the same functions."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gantool.errors import ArtifactError, CheckpointError, ConfigError, GantoolError, OutputError

CHECKPOINT_NAME = "checkpoint.pt"
MANIFEST_NAME = "manifest.json"


def check_writable(path: str | Path, what: str, directory: bool = False) -> Path:
    """Fail before any work when `path` cannot be written: an existing directory where a file is
    meant (or a file where a directory is), a parent that is a file, or a folder we may not write.

    Probes the nearest existing folder with a temp file and creates nothing else.
    """
    p = Path(path)
    if directory and p.exists() and not p.is_dir():
        raise OutputError(f"{what} {p} exists and is not a directory")
    if not directory and p.is_dir():
        raise OutputError(f"{what} {p} is a directory; give a file path (e.g. {p / 'NAME'})")
    folder = p if directory else p.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write to {what} {p}: {folder} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".gantool-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"cannot write to {what} {p}: {folder}: {e.strerror or e}") from None
    return p


def require_file(path: str | Path, flag: str, error: type[GantoolError] = ConfigError) -> Path:
    """`path` is an existing file: a folder is named as one ("is a folder; expected a file"), a missing
    path as missing. The one wording for every option that takes a file (issue 36.3)."""
    p = Path(path)
    if p.is_dir():
        raise error(f"{flag} {p} is a folder; expected a file")
    if not p.exists():
        raise error(f"{flag} {p}: not found")
    if not p.is_file():
        raise error(f"{flag} {p} is not a regular file; expected a file")
    return p


def check_generator_paths(target: str, weights: str | Path | None) -> None:
    """--generator path/to/file.py:CALLABLE and --weights FILE name files that exist (MODULE:CALLABLE is
    found on import, later). gantool.source.UserSource calls this; the CLI calls it before torch."""
    from gantool.errors import GeneratorError

    module, sep, _ = target.rpartition(":")
    if sep and module and (module.endswith(".py") or "/" in module or "\\" in module):
        if Path(module).is_dir():
            raise GeneratorError(f"--generator {module} is a folder; expected a file (path/to/file.py:CALLABLE)")
        if not Path(module).is_file():
            raise GeneratorError(f"generator file not found: {module}")
    if weights is not None:
        require_file(weights, "--weights", GeneratorError)


def require_path(path: str | Path, flag: str, error: type[GantoolError] = ArtifactError) -> Path:
    """`path` exists (an option that takes a file or a folder, e.g. --from)."""
    p = Path(path)
    if not p.exists():
        raise error(f"{flag} {p}: not found")
    return p


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A run directory means its checkpoint.pt; a file means itself."""
    p = Path(path)
    if p.is_dir():
        if not (p / CHECKPOINT_NAME).exists():
            raise CheckpointError(f"{p} is a folder without {CHECKPOINT_NAME}; expected a run directory or a "
                                  "checkpoint file")
        p = p / CHECKPOINT_NAME
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    return p


def require_exported(out_dir: str | Path) -> Path:
    """`out_dir` is a folder with a manifest (its contents are read by gantool.export.manifest)."""
    p = Path(out_dir)
    if not p.is_dir():
        raise ArtifactError(f"{out_dir} is not a directory of exported artifacts (run `gantool export` first)")
    if not (p / MANIFEST_NAME).exists():
        raise ArtifactError(f"{out_dir} has no {MANIFEST_NAME} (run `gantool export --checkpoint RUN` first)")
    return p
