"""Verify an export folder: walk its manifest, check each entry (file and checksum, I/O names, shapes,
then values), record the results, and compare whole output distributions (verify --distribution)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from gantool.errors import ArtifactError, GantoolError
from gantool.signature import Signature

if TYPE_CHECKING:
    from gantool.source import GeneratorSource
from gantool.runners import Runner, load_runner
from gantool.verify.compare import (BATCH_SIZES, REL_FLOOR, TOLERANCES, ChecksumError, LoadError, MetadataError,
                                    ParityError, ParityResult, ShapeError, verify_runner)

# onnx.TensorProto FLOAT / FLOAT16 / BFLOAT16 of z; an int8 file takes float32 z
_ONNX_ELEM = {"fp32": 1, "fp16": 10, "bf16": 16, "int8": 1}
# An int8 file holds its weights as int8 initializers feeding one of these (QDQ or dynamic).
_INT8_OPS = {"DequantizeLinear", "MatMulInteger", "QLinearMatMul", "QGemm", "ConvInteger", "QLinearConv"}


def check_entry(out: Path, entry: dict[str, Any], reference: Runner, ckpt_sha: str,
                batch_sizes: tuple[int, ...], seed: int) -> ParityResult:
    from gantool.checkpoint import sha256_file

    dtype = entry["dtype"]
    result = ParityResult(entry["file"], dtype, TOLERANCES.get(dtype, TOLERANCES["fp32"]),
                          meta={"format": entry["format"], "device": entry["device"], "backend": entry.get("backend")})
    fail = result.failures.append
    path = out / entry["file"]
    # 1. the file is there and is the one that was exported and verified
    if not path.is_file():
        fail(ChecksumError(f"{entry['file']} is missing from {out}"))
        return result
    sha = sha256_file(path)
    if sha != entry["sha256"]:
        fail(ChecksumError(f"{entry['file']}: SHA-256 {sha[:12]}... does not match the manifest's "
                           f"{entry['sha256'][:12]}... (the file changed after export)"))
    if entry.get("source_sha256") != ckpt_sha:
        fail(MetadataError(f"{entry['file']} was exported from generator {str(entry.get('source_sha256'))[:12]}..., "
                           f"not from the one given ({ckpt_sha[:12]}...)"))
    # 2-3. names, then shapes: what the manifest declares and what the artifact itself declares
    sig = reference.info.signature
    for f in _declared(entry, sig):
        fail(f)
    if entry["device"] == "cuda" and not torch.cuda.is_available():
        # checksum, provenance and the declared contract were checked above, on every machine; only
        # loading and the numbers need the device (a failure found so far still fails the report)
        result.skipped = "compiled for cuda; this machine has no CUDA device"
        return result
    if entry["format"] == "onnx":
        graph_failures = _onnx_graph(path, dtype, sig)
        result.failures.extend(graph_failures)
        if any(isinstance(f, LoadError) for f in graph_failures):
            return result
    try:
        runner = load_runner(path, entry.get("backend"), device=_device(entry), dtype=dtype)
    except GantoolError as e:
        fail(LoadError(f"{entry['file']}: {e}"))
        return result
    meta = runner.info.extra.get("metadata") or {}
    if meta.get("gantool.source_sha256") not in (None, entry.get("source_sha256")):
        fail(MetadataError(f"{entry['file']}: embedded source checkpoint {meta['gantool.source_sha256'][:12]}... "
                           "differs from the manifest's"))
    # 4. values, at each batch size
    values = verify_runner(reference, runner, batch_sizes, seed, name=entry["file"])
    result.batches, result.pooled = values.batches, values.pooled  # the pooled figures are the judged ones
    result.failures.extend(values.failures)
    return result


def _device(entry: dict[str, Any]) -> str:
    if entry.get("format") == "onnx":
        return "cpu"  # the CPU EP is the portable reference runtime; GPU EPs are checked by bench
    return entry["device"] if entry.get("device") not in (None, "any") else "cpu"


def _declared(entry: dict[str, Any], sig: Signature) -> list[ParityError]:
    """The manifest's I/O declaration must be the generator's signature (names, then shapes)."""
    out: list[ParityError] = []
    ins, outs = entry.get("inputs") or [{}], entry.get("outputs") or [{}]
    want_in, want_out = sig.io("any")
    names = ([i.get("name") for i in ins], [o.get("name") for o in outs])
    want_names = ([i["name"] for i in want_in], [o["name"] for o in want_out])
    if names != want_names:
        out.append(MetadataError(f"{entry['file']}: manifest I/O names {names[0]} -> {names[1]}, "
                                 f"the generator's signature says {want_names[0]} -> {want_names[1]}"))
    shapes = ([i.get("shape") for i in ins], [o.get("shape") for o in outs])
    want_shapes = ([i["shape"] for i in want_in], [o["shape"] for o in want_out])
    if shapes != want_shapes:
        out.append(ShapeError(f"{entry['file']}: manifest shapes {shapes[0]} -> {shapes[1]}, "
                              f"the generator's signature says {want_shapes[0]} -> {want_shapes[1]}"))
    return out


def _dims(value_info) -> list[Any]:
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
            for d in value_info.type.tensor_type.shape.dim]


def _onnx_graph(path: Path, dtype: str, sig: Signature) -> list[ParityError]:
    """Names, element types and shapes as the .onnx graph declares them (symbolic N required)."""
    import onnx
    from google.protobuf.message import DecodeError

    name = path.name
    try:
        model = onnx.load(str(path), load_external_data=False)
        if not model.graph.node:
            raise DecodeError("the graph has no nodes")
    except (DecodeError, OSError, ValueError, RuntimeError) as e:
        return [LoadError(f"{name} is not a readable ONNX model ({type(e).__name__}: {str(e)[:120]})")]
    failures: list[ParityError] = []
    g = model.graph
    ins, outs = [i.name for i in g.input], [o.name for o in g.output]
    want = ([i.name for i in sig.inputs], [sig.output_name])
    if (ins, outs) != want:
        failures.append(MetadataError(f"{name}: graph I/O {ins} -> {outs}, the signature says {want[0]} -> {want[1]}"))
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in g.initializer):
        failures.append(MetadataError(f"{name}: weights live in an external .data file; the artifact must be one file"))
    props = {p.key: p.value for p in model.metadata_props}
    if props.get("gantool.latent_dim") not in (None, str(sig.latent_dim)):
        failures.append(MetadataError(f"{name}: metadata latent_dim {props['gantool.latent_dim']} != {sig.latent_dim}"))
    if not g.input or not g.output:
        return failures
    in_dims, out_dims = _dims(g.input[0]), _dims(g.output[0])
    for what, dims, want in ((f"input {sig.input_name}", in_dims, list(sig.latent_shape)),
                             (f"output {sig.output_name}", out_dims, list(sig.img_shape))):
        if len(dims) != 1 + len(want) or not isinstance(dims[0], str) or dims[1:] != want:
            failures.append(ShapeError(
                f"{name}: {what} has shape {dims}; the contract says [N, {', '.join(map(str, want))}] with N dynamic"))
    if dtype == "int8" and not _holds_int8_weights(g):
        failures.append(MetadataError(f"{name}: the manifest says int8, but the graph holds no int8 weights "
                                      f"feeding {'/'.join(sorted(_INT8_OPS))}"))
    elem = g.input[0].type.tensor_type.elem_type
    if elem != _ONNX_ELEM.get(dtype):
        failures.append(MetadataError(f"{name}: input element type {onnx.TensorProto.DataType.Name(elem)} "
                                      f"does not match the manifest dtype {dtype}"))
    return failures


def _holds_int8_weights(g: Any) -> bool:
    import onnx

    int8 = {t.name for t in g.initializer if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and len(t.dims) in (2, 4)}  # Linear / Gemm weights, (transposed) conv filters
    return any(n.op_type in _INT8_OPS and set(n.input) & int8 for n in g.node)


@dataclass
class ParityReport:
    """Every artifact of an export directory checked against eager fp32 of its source checkpoint."""

    exported: str
    checkpoint: str
    results: list[ParityResult]
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    source: Any = field(default=None, repr=False)  # the gantool.source.GeneratorSource compared against

    @property
    def passed(self) -> bool:
        return all(r.acceptable for r in self.results) and any(r.passed for r in self.results)

    def lines(self) -> list[str]:
        return [r.summary() for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        return {"exported": self.exported, "checkpoint": self.checkpoint, "created": self.created,
                "passed": self.passed, "batch_sizes": list(BATCH_SIZES),
                "tolerances": {k: asdict(v) for k, v in TOLERANCES.items()}, "rel_floor": REL_FLOOR,
                "results": [r.to_dict() for r in self.results]}

    def raise_if_failed(self) -> None:
        failed = [r for r in self.results if not r.acceptable]
        if failed:
            first = failed[0].failures[0] if failed[0].failures else ParityError("no batch was checked")
            detail = "; ".join(f"{r.name}: {r.failures[0] if r.failures else 'not checked'}" for r in failed)
            raise type(first)(f"parity failed for {len(failed)} of {len(self.results)} artifact(s): {detail}",
                              first.max_abs, first.max_rel)
        if not self.results or not any(r.passed for r in self.results):
            raise ParityError(f"no artifact in {self.exported} could be checked here "
                              f"({'; '.join(self.lines()) or 'the manifest lists none'})")


def reference_source(out: Path, doc: dict[str, Any], given: "str | Path | GeneratorSource | None") -> "GeneratorSource":
    """The generator to compare against: the one given, else the one the manifest records (a checkpoint,
    or a user generator re-imported from its recorded path and checked against its recorded sha256)."""
    from gantool.errors import CheckpointError
    from gantool.source import GeneratorSource, generator_source, source_of_manifest

    if isinstance(given, GeneratorSource):
        return given
    try:
        src = generator_source(given) if given is not None else source_of_manifest(doc)
    except CheckpointError as e:
        if "not found" not in str(e):
            raise
        raise ArtifactError(f"source checkpoint {given or doc.get('source_checkpoint')} not found; "
                            "pass --checkpoint RUN") from None
    if src is None:
        raise ArtifactError(f"{out}/manifest.json names no source generator; pass --checkpoint or --generator")
    return src


def verify_exported(out_dir: str | Path, checkpoint: "str | Path | GeneratorSource | None" = None, only: set | None = None,
                    batch_sizes: tuple[int, ...] = BATCH_SIZES, seed: int = 0) -> ParityReport:
    """Check every artifact listed in out_dir/manifest.json; records each result back in the manifest."""
    from gantool.export import manifest as mf

    out = Path(out_dir)
    doc = mf.Manifest.load(out)
    source = reference_source(out, doc, checkpoint)
    reference = load_runner(source, "eager", device="cpu", dtype="fp32")
    ckpt_sha = source.identity
    results = []
    for entry in doc.entries:
        if only is not None and mf.entry_key(entry) not in only:
            continue
        results.append(check_entry(out, entry, reference, ckpt_sha, batch_sizes, seed))
    report = ParityReport(str(out), str(source.checkpoint or source.label), results, source=source)
    _record(out, report, only)
    return report


def check_written(out_dir: str | Path, checkpoint: "str | Path | GeneratorSource", entries: list[dict[str, Any]],
                  log: Callable[[str], None] | None = None) -> ParityReport:
    """The step after an export: check just the `entries` export_artifacts wrote, say one line each,
    and raise (ParityError and kin, after recording the results) when any fails."""
    from gantool.export import manifest as mf

    report = verify_exported(out_dir, checkpoint, only={mf.entry_key(e) for e in entries})
    for line in report.lines():
        (log or (lambda msg: None))(line)
    report.raise_if_failed()
    return report


def _record(out: Path, report: ParityReport, only: set | None) -> None:
    """Write each result into its manifest entry ("last parity result"); read-only dirs are left alone."""
    from gantool.errors import OutputError
    from gantool.export import manifest as mf

    by_name = {r.name: r for r in report.results}
    try:
        doc = mf.Manifest.load(out)
        for e in doc.entries:
            r = by_name.get(e["file"])
            if r is not None:
                e["parity"] = {"passed": r.passed, "skipped": r.skipped, "checked": report.created,
                               "max_abs": r.to_dict()["max_abs"], "max_rel": r.to_dict()["max_rel"],
                               "p999_abs": r.to_dict()["p999_abs"], "nonfinite": r.nonfinite,
                               "tolerance": asdict(r.tolerance), "failures": [str(f) for f in r.failures]}
        doc.save(out)
    except (OutputError, OSError, ArtifactError):
        pass


def verify_distribution(exported: str | Path, checkpoint: "str | Path | GeneratorSource", n: int = 2000, seed: int = 0,
                        dataset: str | None = None, data_dir: str | Path = "data",
                        progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """distribution_parity of eager fp32 against every artifact in an export directory's manifest.

    Artifacts compiled for a device this machine lacks are reported as skipped, never run elsewhere.
    """
    from gantool.export import manifest as mf
    from gantool.quality.classifier import PRIMARY
    from gantool.quality.metrics import QualityReference, dataset_of, distribution_parity, distribution_parity_images

    out = Path(exported)
    doc = mf.Manifest.load(out)
    from gantool.source import generator_source

    source = generator_source(checkpoint)
    reference = load_runner(source, "eager", device="cpu", dtype="fp32")
    from gantool.quality.classifier import DIGIT_SHAPE

    digits = tuple(reference.info.img_shape) == DIGIT_SHAPE
    if digits:  # digits and FID in the MNIST classifier's primary space (the second one is not needed)
        q = QualityReference(dataset or (dataset_of(source.checkpoint) if source.checkpoint else None) or "mnist-5k",
                             data_dir, spaces=(PRIMARY,), progress=progress)
    elif dataset is not None:
        raise ArtifactError(f"--dataset {dataset} is an MNIST-shaped dataset; this generator makes "
                            f"{'x'.join(map(str, reference.info.img_shape))} images (compared in the random-conv space)")
    results = []
    for entry in doc.entries:
        if entry.get("device") == "cuda" and not torch.cuda.is_available():
            results.append({"candidate": entry["file"], "skipped": "compiled for cuda; no CUDA device here"})
            continue
        runner = load_runner(out / entry["file"], entry.get("backend"), device=_device(entry), dtype=entry["dtype"])
        r = (distribution_parity(reference, runner, n, seed, quality=q) if digits
             else distribution_parity_images(reference, runner, n, seed))
        results.append({**r, "candidate": entry["file"]})
    return results


def format_distribution(r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"distribution {r['candidate']}: skipped ({r['skipped']})"
    verdict = "ok" if r["passed"] else "FAILED: " + "; ".join(r["failures"])
    if r.get("space") == "random-conv":
        return (f"distribution {r['candidate']}: random-conv FID to eager's samples {r['fid_candidate']:.3g} "
                f"(floor {r['fid_floor']:.3g}), nearest to eager's image of the same z for {r['nn_agreement']:.1%} "
                f"of z, on {r['n']} samples: {verdict}")
    return (f"distribution {r['candidate']}: FID {r['fid_candidate']:.3f} vs eager {r['fid_reference']:.3f} "
            f"(delta {r['fid_delta']:.2g}, floor {r['fid_floor']:.3f}), same digit for {r['label_agreement']:.1%} "
            f"of z, class-histogram TV {r['hist_tv']:.3f} on {r['n']} samples: {verdict}")
