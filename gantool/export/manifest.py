"""exported/manifest.json: one entry an artifact, keyed by (format, dtype, device), written atomically."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gantool.checkpoint import atomic_write
from gantool.errors import ArtifactError
from gantool.paths import MANIFEST_NAME, require_exported

MANIFEST_FORMAT = "gantool.manifest"
MANIFEST_VERSION = 1


def manifest_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / MANIFEST_NAME


def entry_key(entry: dict[str, Any]) -> tuple[str, str, str]:
    """An artifact is identified by what it is, not by its file name."""
    return (entry["format"], entry["dtype"], entry["device"])


def empty_manifest() -> dict[str, Any]:
    return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "artifacts": []}


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """Load and sanity-check the manifest; ArtifactError when it is absent or corrupt."""
    p = require_exported(out_dir) / MANIFEST_NAME
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{p} is not a readable manifest: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not isinstance(doc.get("artifacts"), list):
        raise ArtifactError(f"{p} is not a gantool manifest (no '{MANIFEST_FORMAT}' marker or no artifact list)")
    if doc.get("version", 0) > MANIFEST_VERSION:
        raise ArtifactError(f"{p} has manifest version {doc['version']}; this gantool reads <= {MANIFEST_VERSION}")
    required = ("format", "file", "sha256", "dtype", "device")
    for i, e in enumerate(doc["artifacts"]):
        missing = [k for k in required if not isinstance(e, dict) or k not in e]
        if missing:
            raise ArtifactError(f"{p}: artifact #{i} lacks {', '.join(missing)}")
    return doc


def read_or_empty(out_dir: str | Path) -> dict[str, Any]:
    """The manifest to update during export: a fresh one when none exists yet."""
    return read_manifest(out_dir) if manifest_path(out_dir).exists() else empty_manifest()


def write_manifest(out_dir: str | Path, doc: dict[str, Any]) -> Path:
    doc["artifacts"] = sorted(doc["artifacts"], key=entry_key)
    text = json.dumps(doc, indent=2) + "\n"

    return atomic_write(manifest_path(out_dir), lambda tmp: tmp.write_text(text))


def upsert(doc: dict[str, Any], entry: dict[str, Any]) -> None:
    """Replace the entry with the same (format, dtype, device), or append it."""
    key = entry_key(entry)
    doc["artifacts"] = [e for e in doc["artifacts"] if entry_key(e) != key] + [entry]
