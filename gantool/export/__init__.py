"""Export the generator of a checkpoint to TorchScript / ONNX / AOTInductor artifacts plus a manifest.

    entries = export_artifacts("runs/seed", ["onnx", "torchscript"], "exported/", dtypes=["fp32"])

Every artifact honours the generator's Signature (gantool.signature: input and output names,
per-sample shapes, value range; N dynamic) and carries it inside. Converting lives in one small
module a format; validating lives in gantool.verify.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from gantool.errors import ConfigError, OutputError, first_line
from gantool import formats as format_table
from gantool.export.spec import ExportSpec, Format

if TYPE_CHECKING:
    from gantool.signature import Signature
    from gantool.source import GeneratorSource

DTYPE_NAMES = format_table.DTYPES


def get_format(name: str) -> Format:
    return format_table.get(name)


def formats() -> list[Format]:
    return [format_table.get(n) for n in format_table.names()]


def format_of(path: str | Path) -> Format | None:
    """The format an artifact's file name says (generator.fp32.onnx -> onnx), None for anything else."""
    name = Path(path).name.lower()
    return next((f for f in formats() if name.endswith(f.suffix)), None)


def read_artifact(path: str | Path) -> tuple["Signature", str, dict[str, str]]:
    """(signature, dtype, metadata) of any exported artifact, from what the file carries inside: the one
    reader for every command that has a file and no runner (serve, Triton, web)."""
    from gantool.errors import ArtifactError
    from gantool.signature import Signature, artifact_dtype

    fmt = format_of(path)
    if fmt is None:
        raise ArtifactError(f"{path}: not an artifact gantool exports ({', '.join(f.suffix for f in formats())})")
    if not Path(path).is_file():
        raise ArtifactError(f"not found: {path}")
    meta = fmt.read_metadata(Path(path))
    return Signature.from_metadata(meta, path), artifact_dtype(meta, None, path), meta


def unsupported(fmt: Format, dtype: str, device: torch.device) -> str | None:
    """Why `fmt` cannot hold `dtype` on `device` (None when it can)."""
    if dtype == "int8" and fmt.name != "onnx":
        return "int8 is made by ONNX Runtime's quantizer from the ONNX export; only --format onnx holds it"
    return fmt.unsupported(dtype, device)


def artifact_name(fmt: Format, dtype: str, device: str) -> str:
    # generator.fp32.onnx, generator.bf16.ts, generator.fp32.cpu.pt2: the suffix picks the runner.
    dev = f".{device}" if fmt.device_specific else ""
    return f"generator.{dtype}{dev}{fmt.suffix}"


def _check_writable(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".gantool-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"cannot write to --out {out_dir}: {e.strerror or e}") from None


def plan(formats: list[str], dtypes: list[str], device: torch.device,
         opset: int | None) -> tuple[list[tuple[Format, str]], list[str]]:
    """Validate the request up front (nothing is written on a bad one); expand "all".

    Returns (jobs, skipped reasons): combinations a format cannot hold are skipped and named;
    only a request of which nothing can be exported is an error.
    """
    names = format_table.names() if "all" in formats else list(dict.fromkeys(formats))
    fmts = [get_format(n) for n in names]
    for d in dtypes:
        if d not in DTYPE_NAMES:
            raise ConfigError(f"unknown dtype {d!r}; choose one of: {', '.join(DTYPE_NAMES)}")
    if opset is not None and "onnx" in names:
        import onnx

        newest = onnx.defs.onnx_opset_version()
        if not 18 <= opset <= newest:
            raise ConfigError(f"--opset {opset}: the dynamo ONNX exporter supports opsets 18..{newest}")
    jobs, refused = [], []
    for f in fmts:
        for d in dict.fromkeys(dtypes):
            why = unsupported(f, d, device)
            if why:
                refused.append(f"{f.name} {d}: {why}")
            else:
                jobs.append((f, d))
    if not jobs:
        raise ConfigError("nothing requested can be exported: " + "; ".join(refused))
    return jobs, refused


def export_artifacts(
    checkpoint: "str | Path | GeneratorSource",
    formats: list[str],
    out_dir: str | Path,
    dtypes: list[str] = ["fp32"],  # noqa: B006 (read only)
    opset: int | None = None,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    force: bool = False,
    quantization: Any = None,
) -> list[dict[str, Any]]:
    """Write each (format, dtype) artifact atomically and record it in the manifest.

    `checkpoint`: a gantool checkpoint (path) or any gantool.source.GeneratorSource (a user's generator).
    `quantization` (gantool.export.quantize.Quantization) says how int8 is made; default static QDQ.
    Returns the manifest entries written (their "parity" is None). Checking them is the caller's
    next step (gantool.verify.artifacts.check_written): export knows nothing of verification, so
    gantool.export never imports gantool.verify. Artifacts of another checkpoint already in
    `out_dir` are refused (OutputError) unless `force`.
    """
    from gantool.checkpoint import sha256_file
    from gantool.device import parse_dtype, resolve_device
    from gantool.export import manifest as mf
    from gantool.model import flops_per_sample
    from gantool.source import generator_source

    say = log or (lambda msg: None)
    dev = resolve_device(device)
    jobs, skipped = plan(formats, dtypes, dev, opset)
    if quantization is not None and not any(d == "int8" for _, d in jobs):
        raise ConfigError("--quantization and --calibration-samples apply to --dtype int8 (ONNX) only")
    for why in skipped:
        say(f"skipping {why}")
    out = Path(out_dir)
    source = generator_source(checkpoint)
    loaded = source.load("cpu")  # refuses unsafe / truncated files, broken user modules first
    g, record = loaded.module, source.record()
    ckpt = source.checkpoint
    sig = loaded.signature
    spec = ExportSpec(sig, str(ckpt or source.label), source.identity, record)
    _check_writable(out)
    doc = mf.Manifest.load_or_empty(out)
    stale: list[str] = []
    if doc.entries and doc.source_sha256 != spec.source_sha256:
        # One manifest describes one generator: another checkpoint's artifacts leave the manifest
        # now and their files go once the new export has succeeded (a failure loses nothing).
        stale = [e["file"] for e in doc.entries]
        if not force:
            raise OutputError(
                f"{out} holds {len(stale)} artifact(s) exported from another generator "
                f"({doc.get('source_checkpoint') or (doc.source or {}).get('generator', '?')}): "
                f"{', '.join(stale)}; exporting {ckpt or source.label} here would "
                f"delete them; use --force to replace them, or another --out")
        doc.doc["artifacts"] = []
    listed = {e["file"] for e in doc.entries} | set(stale)
    names = [artifact_name(fmt, dtype, dev.type if fmt.device_specific else "any") for fmt, dtype in jobs]
    foreign = [n for n in names if (out / n).exists() and n not in listed]
    if foreign:  # README, "Writing over earlier output": files gantool did not write are never replaced
        raise OutputError(f"{out} holds {', '.join(foreign)}, which its {mf.MANIFEST_NAME} does not list (gantool did "
                          "not write them) and gantool never replaces those, --force or not: move them or choose "
                          "another --out")
    rewritten = [n for n in names if n in listed and n not in stale]
    doc.doc.update(source_checkpoint=str(ckpt) if ckpt else None, source_sha256=spec.source_sha256, source=record,
                   latent_dim=sig.latent_dim, img_shape=list(sig.img_shape), value_range=list(sig.value_range),
                   signature=sig.to_dict(), flops_per_sample=flops_per_sample(g, sig))

    written: list[dict[str, Any]] = []
    for fmt, dtype in jobs:
        where = dev if fmt.device_specific else torch.device("cpu")
        entry_device = where.type if fmt.device_specific else "any"
        module = _copy_to(g, where, parse_dtype("fp32" if dtype == "int8" else dtype))  # int8: quantized from fp32
        path = out / artifact_name(fmt, dtype, entry_device)
        say(f"exporting {fmt.name} {dtype} -> {path}")
        t0 = time.perf_counter()
        extra = _write_atomically(fmt, module, spec, path, dtype, where, opset,
                                  {"quantization": quantization} if dtype == "int8" else {})
        io_dtype = "fp32" if dtype == "int8" else dtype  # an int8 file takes and returns float32
        seconds = time.perf_counter() - t0
        entry = {
            "format": fmt.name, "file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "dtype": dtype, "device": entry_device, "backend": fmt.backend, "opset": extra.pop("opset", None),
            "inputs": sig.io(io_dtype)[0], "outputs": sig.io(io_dtype)[1],
            "latent_dim": sig.latent_dim, "value_range": list(sig.value_range),
            "source_checkpoint": str(ckpt) if ckpt else None, "source_sha256": spec.source_sha256,
            "export_seconds": round(seconds, 3),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": {"torch": torch.__version__, **extra.pop("versions", {})},
            "parity": None, **extra,
        }
        doc.upsert(entry)
        doc.save(out)  # after each artifact: the manifest never lists a stale checksum
        written.append(entry)
        say(f"  {fmt.name} {dtype}: {entry['bytes'] / 1e6:.1f} MB in {seconds:.1f} s")

    replaced = [f for f in stale if f not in {e["file"] for e in written}]
    for f in replaced:
        (out / f).unlink(missing_ok=True)
    if rewritten:
        say(f"replaced {', '.join(rewritten)} in {out}/ (an earlier export of the same generator; the manifest's "
            "other artifacts are kept)")
    if stale:
        say(f"--force: replaced {len(stale)} artifact(s) exported from another generator"
            + (f" (deleted {', '.join(replaced)})" if replaced else ""))

    return written


def _copy_to(g: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    import copy

    return copy.deepcopy(g).to(device, dtype).eval()


def _write_atomically(fmt: Format, module: torch.nn.Module, spec: ExportSpec, path: Path, dtype: str,
                      device: torch.device, opset: int | None, options: dict[str, Any]) -> dict[str, Any]:
    from gantool.checkpoint import atomic_write
    from gantool.errors import ExportError, GantoolError

    extra: dict[str, Any] = {}

    def write(tmp: Path) -> None:
        extra.update(fmt.export(module, spec, tmp, dtype=dtype, device=device, opset=opset, **options))

    try:
        with torch.no_grad():
            atomic_write(path, write)
    except GantoolError:
        raise
    except Exception as e:  # an exporter failure is reported in one line; the old artifact stays
        first = first_line(e)
        raise ExportError(f"{fmt.name} {dtype} export failed: {type(e).__name__}: {first}") from None
    return extra
