"""exported/manifest.json, the contract between export and every later stage: one Manifest, entries keyed
by (format, dtype, device), loaded and saved in one place, written atomically.

    m = Manifest.load("exported")
    onnx = m.find(format="onnx", dtype="fp32")          # -> [entry, ...]
    m.signature, m.source, m.flops_per_sample
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gantool.checkpoint import atomic_write
from gantool.errors import ArtifactError
from gantool.paths import MANIFEST_NAME, require_exported
from gantool.signature import Signature

MANIFEST_FORMAT = "gantool.manifest"
MANIFEST_VERSION = 1
REQUIRED = ("format", "file", "sha256", "dtype", "device")


def manifest_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / MANIFEST_NAME


def entry_key(entry: dict[str, Any]) -> tuple[str, str, str]:
    """An artifact is identified by what it is, not by its file name."""
    return (entry["format"], entry["dtype"], entry["device"])


@dataclass
class Manifest:
    """The manifest document: the generator it describes and one entry an artifact (dicts as in the JSON)."""

    doc: dict[str, Any] = field(default_factory=lambda: {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
                                                         "artifacts": []})

    # --- reading ------------------------------------------------------------------------------
    @classmethod
    def load(cls, out_dir: str | Path) -> "Manifest":
        """Load and sanity-check; ArtifactError in one line when it is absent or corrupt."""
        p = require_exported(out_dir) / MANIFEST_NAME
        try:
            doc = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArtifactError(f"{p} is not a readable manifest: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not isinstance(doc.get("artifacts"), list):
            raise ArtifactError(f"{p} is not a gantool manifest (no '{MANIFEST_FORMAT}' marker or no artifact list)")
        if doc.get("version", 0) > MANIFEST_VERSION:
            raise ArtifactError(f"{p} has manifest version {doc['version']}; this gantool reads <= {MANIFEST_VERSION}")
        for i, e in enumerate(doc["artifacts"]):
            missing = [k for k in REQUIRED if not isinstance(e, dict) or k not in e]
            if missing:
                raise ArtifactError(f"{p}: artifact #{i} lacks {', '.join(missing)}")
        return cls(doc)

    @classmethod
    def load_or_empty(cls, out_dir: str | Path) -> "Manifest":
        """The manifest to update during export: a fresh one when none exists yet."""
        return cls.load(out_dir) if manifest_path(out_dir).exists() else cls()

    @property
    def entries(self) -> list[dict[str, Any]]:
        return self.doc["artifacts"]

    def find(self, format: str | None = None, dtype: str | None = None, device: str | None = None,
             file: str | None = None) -> list[dict[str, Any]]:
        """The entries that match every criterion given (device "cpu" also matches device-neutral "any")."""
        return [e for e in self.entries
                if (format is None or e["format"] == format) and (dtype is None or e["dtype"] == dtype)
                and (device is None or e["device"] in (device, "any")) and (file is None or Path(e["file"]).name == file)]

    def get(self, key: str, default: Any = None) -> Any:
        return self.doc.get(key, default)

    @property
    def source(self) -> dict[str, Any] | None:
        rec = self.doc.get("source")
        return rec if isinstance(rec, dict) else None

    @property
    def source_sha256(self) -> str | None:
        return self.doc.get("source_sha256")

    @property
    def flops_per_sample(self) -> int | None:
        return self.doc.get("flops_per_sample")

    @property
    def signature(self) -> Signature | None:
        """The generator's signature (manifests written before it was recorded: from their flat fields)."""
        if isinstance(self.doc.get("signature"), dict):
            return Signature.from_dict(self.doc["signature"])
        if self.doc.get("latent_dim") and self.doc.get("img_shape"):
            ins = (self.entries[0].get("inputs") or [{}]) if self.entries else [{}]
            outs = (self.entries[0].get("outputs") or [{}]) if self.entries else [{}]
            names = {k: v for k, v in (("input_name", ins[0].get("name")), ("output_name", outs[0].get("name"))) if v}
            return Signature.latent_to_image(int(self.doc["latent_dim"]), tuple(self.doc["img_shape"]),
                                             tuple(self.doc.get("value_range") or (-1.0, 1.0)), **names)
        return None

    # --- writing ------------------------------------------------------------------------------
    def upsert(self, entry: dict[str, Any]) -> None:
        """Replace the entry with the same (format, dtype, device), or append it."""
        key = entry_key(entry)
        self.doc["artifacts"] = [e for e in self.entries if entry_key(e) != key] + [entry]

    def save(self, out_dir: str | Path) -> Path:
        self.doc["artifacts"] = sorted(self.entries, key=entry_key)
        text = json.dumps(self.doc, indent=2) + "\n"
        return atomic_write(manifest_path(out_dir), lambda tmp: tmp.write_text(text))
