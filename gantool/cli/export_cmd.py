"""`gantool export`, `gantool verify` and `gantool sample`: parse options, call the library, print."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from gantool import formats as format_table
from gantool.cli.app import app
from gantool.cli.common import (ClassesOpt, GeneratorOpt, ImgShapeOpt, LatentDimOpt, LatentShapeOpt, ValueRangeOpt,
                                WeightsOpt, check_positive, check_writable, parse_choice_list, precheck_device,
                                replaced_note, source_from_options, user_errors)
from gantool.errors import ConfigError
from gantool.paths import require_exported, require_path, resolve_checkpoint_path


@app.command()
@user_errors
def export(
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Run directory or checkpoint file to export (for web: optional, exports its ONNX first).")] = None,
    format: Annotated[str, typer.Option("--format", help=", ".join(format_table.names()) + " or all (comma-separated list); web: a static page that runs the ONNX in a browser; triton: a Triton Inference Server model repository.")] = "all",
    out: Annotated[Optional[Path], typer.Option("--out", help="Directory for the artifacts and manifest.json (default: exported; for web: site; for triton: the model repository).")] = None,
    dtype: Annotated[str, typer.Option("--dtype", "--precision", help="fp32, fp16, bf16 or int8 (comma-separated list; int8: ONNX only, quantized by ONNX Runtime). --precision is the same option.")] = "fp32",
    opset: Annotated[Optional[int], typer.Option("--opset", help="ONNX opset (18 or newer); default: the exporter's.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when present) | cpu | cuda: the device AOTInductor compiles for.")] = "auto",
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Check parity against eager fp32 after exporting.")] = True,
    exported: Annotated[Optional[Path], typer.Option("--exported", help="web: the export folder to take generator.fp32.onnx (and fp16) from; default: exported.")] = None,
    ort_web: Annotated[Optional[Path], typer.Option("--ort-web", help="web: copy ONNX Runtime Web into the site from this `npm install onnxruntime-web` folder (the package folder or its dist/), so the page works offline; `cdn`: the page loads it from jsDelivr (needs the network). Default: the copy scripts/web_deps.sh installed in .cache/web when there is one, else the CDN; the export says which.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="web: seed of the page's fixed noise (gantool.noise.latent).")] = 0,
    max_batch_size: Annotated[Optional[int], typer.Option("--max-batch-size", help="triton: the largest batch Triton forms (max_batch_size). Default: 1024.")] = None,
    instances: Annotated[Optional[int], typer.Option("--instances", help="triton: model instances per device (instance_group count). Default: 1.")] = None,
    kind: Annotated[Optional[str], typer.Option("--kind", help="triton: where instances run: auto (GPU when the server has one), gpu or cpu; add python (e.g. python, cpu,python) for a Python-backend model running the ONNX with onnxruntime, which a plain tritonserver loads. Default: auto.")] = None,
    optimize: Annotated[bool, typer.Option("--optimize", help="triton: TensorRT and CUDA-graph settings for the ONNX model's GPU instances.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Delete what gantool wrote into --out and this export does not rewrite: artifacts another generator exported. Without it, an earlier export of the same generator, an earlier site (web) or gantool's models (triton) are replaced and named in one line; files gantool did not write are never replaced.")] = False,
    quantization: Annotated[Optional[str], typer.Option("--quantization", help="int8 only: static (QDQ, activation ranges calibrated on seeded z; the default) or dynamic (ranges measured at run time).")] = None,
    calibration_samples: Annotated[Optional[int], typer.Option("--calibration-samples", metavar="<int>", help="int8 static only: calibration z to set activation ranges (default 1024).")] = None,
    generator: GeneratorOpt = None,
    weights: WeightsOpt = None,
    latent_dim: LatentDimOpt = None,
    img_shape: ImgShapeOpt = None,
    latent_shape: LatentShapeOpt = None,
    classes: ClassesOpt = None,
    value_range: ValueRangeOpt = None,
) -> None:
    """Export the generator to TorchScript / ONNX / AOTInductor, write manifest.json, check parity.

    `--format web` builds a static browser page; `--format triton` writes a Triton model repository
    (generator_onnx and generator_torchscript, each with config.pbtxt and 1/model.*).
    """
    check_writable((out, "--out"), directory=True)
    precheck_device(device)
    source = source_from_options(checkpoint, generator, weights, latent_dim, img_shape, value_range,
                                 latent_shape, classes)
    formats = parse_choice_list(format, [*format_table.names(), "all", "web", "triton"], "format")
    dtypes = parse_choice_list(dtype, list(format_table.DTYPES), "dtype")
    if "web" in formats or "triton" in formats:
        if len(formats) > 1:
            raise ConfigError(f"--format {formats[0] if formats[0] in ('web', 'triton') else formats[-1]} is exported on "
                              "its own: export the other formats in a separate run")
    triton_opts = {"--max-batch-size": max_batch_size, "--instances": instances, "--kind": kind,
                   "--optimize": optimize or None}
    web_opts = {"--exported": exported, "--ort-web": ort_web}
    for fmt, opts in (("web", web_opts), ("triton", triton_opts)):
        given = [k for k, v in opts.items() if v is not None]
        if given and fmt not in formats:
            raise ConfigError(f"{', '.join(given)} only apply to --format {fmt}")
    # After the options' own checks (a wrong combination is the first thing to say), before torch
    # is imported: a wrong path is answered at once.
    if generator is None and checkpoint is not None:
        resolve_checkpoint_path(checkpoint)
    if "web" in formats:
        _export_web(out or Path("site"), source, exported, ort_web, force, seed, dtypes, verify)
        return
    if source is None:
        raise ConfigError("--checkpoint RUN (a run directory or checkpoint file) or --generator MODULE:CALLABLE "
                          "is required: the generator to export")
    if "triton" in formats:
        from gantool.export.triton import TritonSpec, export_triton, parse_kind

        if len(dtypes) > 1:
            raise ConfigError("--format triton writes one model repository: give it one --dtype")
        out = out or Path("model_repository")
        instance_kind, python_model = parse_kind(kind or "auto")
        spec = TritonSpec(max_batch_size=1024 if max_batch_size is None else max_batch_size,
                          instances=1 if instances is None else instances, kind=instance_kind,
                          optimize=optimize, dtype=dtypes[0], python=python_model)
        models = export_triton(source, out, spec, force=force, opset=opset, check=_checker(source, verify),
                               log=typer.echo)
        typer.echo(f"wrote Triton model repository {out}/ ({', '.join(m['triton_model'] for m in models)}); "
                   f"serve it with: tritonserver --model-repository {Path(out).resolve()}")
        return
    from gantool.export import export_artifacts
    from gantool.export.torchscript import deprecation_notice

    out = out or Path("exported")
    quant = None
    if quantization is not None or calibration_samples is not None:
        from gantool.export.quantize import Quantization

        quant = Quantization(quantization or "static", calibration_samples)
    entries = export_artifacts(source, formats, out, dtypes=dtypes, opset=opset, device=device,
                               force=force, log=typer.echo, quantization=quant)
    if verify:
        from gantool.verify.artifacts import check_written

        check_written(out, source, entries, log=typer.echo)
    if any(e["format"] == "torchscript" for e in entries):
        typer.echo(deprecation_notice())
    total = sum(e["export_seconds"] for e in entries)
    typer.echo(f"wrote {len(entries)} artifact(s) to {out}/ in {total:.1f} s (export time; see {out}/manifest.json)"
               + ("" if verify else "; parity not checked (--no-verify)"))


def _checker(source: object, verify: bool):
    """What web and triton call on the artifacts they export into a staging folder, before those move
    into place (a failure leaves --out as it was); None with --no-verify."""
    if not verify:
        return None
    from gantool.verify.artifacts import check_written

    return lambda folder, entries: check_written(folder, source, entries, log=typer.echo)


def _export_web(out: Path, checkpoint: object, exported: Optional[Path], ort_web: Optional[Path],
                force: bool, seed: int, dtypes: list[str], verify: bool) -> None:
    from gantool.export.web import build_site

    meta = build_site(out, exported=exported, checkpoint=checkpoint, ort_web=ort_web, force=force, seed=seed,
                      dtypes=tuple(dtypes), check=_checker(checkpoint, verify), log=typer.echo)
    models = ", ".join(f"{m['file']} ({m['dtype']})" for m in meta["models"])
    typer.echo(f"wrote the web page to {out}/: {models}; serve it, e.g. "
               f"`python3 -m http.server 8000 --bind 127.0.0.1 --directory {out}`, and open http://127.0.0.1:8000/")


@app.command()
@user_errors
def verify(
    exported: Annotated[Path, typer.Option("--exported", help="Directory holding manifest.json and the artifacts.")] = Path("exported"),
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Reference checkpoint; default: the manifest's source.")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the parity report as JSON here.")] = None,
    image: Annotated[Optional[Path], typer.Option("--image", help="Write a PNG: each artifact beside eager, with |difference|.")] = None,
    distribution: Annotated[int, typer.Option("--distribution", help="Also compare what each artifact draws on this many fixed z against eager: 1x28x28 generators by the MNIST classifier (FID delta, class histogram, same digit per z), any other shape in a seeded random-conv feature space (FID to eager's samples vs the sampling floor, same nearest image per z); 0 = off.")] = 0,
    generator: GeneratorOpt = None,
    weights: WeightsOpt = None,
    latent_dim: LatentDimOpt = None,
    img_shape: ImgShapeOpt = None,
    latent_shape: LatentShapeOpt = None,
    classes: ClassesOpt = None,
    value_range: ValueRangeOpt = None,
) -> None:
    """Check every exported artifact against PyTorch eager fp32; exit 1 when any fails."""
    check_writable((json_path, "--json"), (image, "--image"))  # before minutes of parity work, not after
    source = source_from_options(checkpoint, generator, weights, latent_dim, img_shape, value_range,
                                 latent_shape, classes)
    require_exported(exported)  # these two before torch is imported: a wrong path is answered at once
    if generator is None and checkpoint is not None:
        resolve_checkpoint_path(checkpoint)

    from gantool.checkpoint import atomic_write_text
    from gantool.verify.artifacts import verify_exported

    again = {p: replaced_note(p) for p in (json_path, image)}
    report = verify_exported(exported, source)
    for line in report.lines():
        typer.echo(line)
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(report.to_dict(), indent=2) + "\n")
        typer.echo(f"report: {json_path}{again[json_path]}")
    if image is not None:
        from gantool.sample import exported_comparison

        exported_comparison(exported, report.source, image)
        typer.echo(f"image: {image}{again[image]}")
    # Further checks (e.g. distribution parity through gantool.quality.metrics) go here, before the verdict.
    if distribution > 0:
        from gantool.verify.artifacts import format_distribution, verify_distribution

        dist = verify_distribution(exported, report.source, n=distribution,
                                   progress=lambda msg: typer.echo(msg, err=True))
        for r in dist:
            typer.echo(format_distribution(r))
        if json_path is not None:
            atomic_write_text(json_path, json.dumps({**report.to_dict(), "distribution": dist}, indent=2) + "\n")
        bad = [r["candidate"] for r in dist if r.get("passed") is False]
        if bad:
            from gantool.verify.compare import ParityError

            raise ParityError(f"distribution parity failed for {', '.join(bad)} (they draw other images than eager)")
    report.raise_if_failed()
    typer.echo(f"parity: all {sum(r.passed for r in report.results)} checked artifact(s) pass")


@app.command()
@user_errors
def sample(
    source: Annotated[Optional[Path], typer.Option("--from", help="Checkpoint, run directory or exported artifact.")] = None,
    out: Annotated[Path, typer.Option("--out", help="PNG file for the grid.")] = Path("grid.png"),
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the latent vectors.")] = 0,
    backend: Annotated[Optional[str], typer.Option("--backend", help="Runner backend; default: from the file type.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when present) | cpu | cuda: device of the runner.")] = "auto",
    generator: GeneratorOpt = None,
    weights: WeightsOpt = None,
    latent_dim: LatentDimOpt = None,
    img_shape: ImgShapeOpt = None,
    latent_shape: LatentShapeOpt = None,
    classes: ClassesOpt = None,
    value_range: ValueRangeOpt = None,
    class_: Annotated[Optional[str], typer.Option("--class", help="A conditional generator's class K, or a comma "
                      "list: n images of K, or one labelled row per listed class. Default: one row per class.")] = None,
) -> None:
    """Draw a grid of n samples through the same loading code as verify and bench."""
    wanted = None
    if class_ is not None:
        try:
            wanted = [int(v) for v in class_.split(",")]
        except ValueError:
            wanted = []
        if not wanted or min(wanted) < 0:
            raise ConfigError(f"--class {class_}: give a class number (0, 1, ...) or a comma list of them")
    check_writable((out, "--out"))
    check_positive(n, "--n")  # these three before torch is imported (issue 36.5)
    precheck_device(device)
    # refuses a stray --weights
    user = source_from_options(None, generator, weights, latent_dim, img_shape, value_range, latent_shape, classes)
    if user is not None and source is not None:
        raise ConfigError("give --from PATH or --generator MODULE:CALLABLE, not both")
    src = user or source
    if src is None:
        raise ConfigError("give --from PATH (checkpoint, run directory or exported artifact) or --generator MODULE:CALLABLE")
    if user is None:
        require_path(src, "--from")  # before torch is imported

    from gantool.sample import sample_grid

    again = replaced_note(out)
    path, count = sample_grid(src, out, n=n, seed=seed, backend=backend, device=device, classes=wanted)
    typer.echo(f"wrote {count} samples from {generator or source} to {path}{again}")
