"""Path checks that need no torch: the CLI runs them before its heavy imports, so a wrong path is
answered in a fraction of a second (issue 26), and the library calls the same functions."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gantool.errors import ArtifactError, CheckpointError, OutputError

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


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A run directory means its checkpoint.pt; a file means itself."""
    p = Path(path)
    if p.is_dir():
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
