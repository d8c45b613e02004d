"""`gantool eval`: score a checkpoint or an exported artifact (FID vs floor, recognisability, coverage)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from gantool.cli.app import app
from gantool.cli.common import (ClassesOpt, GeneratorOpt, ImgShapeOpt, LatentDimOpt, LatentShapeOpt, ValueRangeOpt,
                                WeightsOpt, check_writable, precheck_device, replaced_note, source_from_options,
                                user_errors)
from gantool.errors import ArtifactError, ConfigError
from gantool.paths import require_file, resolve_checkpoint_path


ROWS = (("FID", "fid", "{:.2f}"), ("precision", "precision", "{:.3f}"), ("recall", "recall", "{:.3f}"),
        ("density", "density", "{:.3f}"), ("coverage", "coverage", "{:.3f}"), ("KID", "kid", "{:.4g}"))


def kid_cell(mean: float, std: float) -> str:
    """KID as `mean ± std` (over subsets, in the space's own units: unnormalised features)."""
    return f"{mean:.3g} ± {std:.2g}"


def _metric_table(spaces: dict, untrained: bool = False) -> list[str]:
    """One row a metric, a (sample, real-vs-real) column pair a feature space; columns as wide as their
    widest cell plus two spaces, so no two values run together (issue 36.4: KID's mean+-std did)."""
    titles = [f"{n} features ({s['features']}-d, untrained)" if untrained else
              "{} features ({}-d, acc {:.1%})".format(n, s["features"], s["classifier_accuracy"]) for n, s in spaces.items()]
    rows = []
    for label, key, fmt in ROWS:
        cells = []
        for s in spaces.values():
            real = s["real_vs_real"]
            if key == "kid":
                cells += [kid_cell(s["kid"], s["kid_std"]), kid_cell(real["kid"], real["kid_std"])]
            else:
                cells += [fmt.format(s[key]), fmt.format(s["fid_floor"] if key == "fid" else real[key])]
        rows.append((label, cells))
    width = max([16] + [len(c) + 2 for _, cells in rows for c in cells] + [(len(t) + 3) // 2 for t in titles])
    lines = ["  " + " " * 18 + "".join(f"{t:>{2 * width}}" for t in titles),
             "  " + " " * 18 + f"{'sample':>{width}}{'real':>{width}}" * len(spaces)]
    lines += [f"  {label:<18}" + "".join(f"{c:>{width}}" for c in cells) for label, cells in rows]
    return lines


def _bar_lines(s: dict) -> list[str]:
    """One line a quality bar (gantool.quality.targets): met, or what falls short."""
    return [f"  {b['line']}" for b in s["bars"].values()]


def format_image_scores(s: dict) -> str:
    """Scores of a generator of any shape: the random-conv space only (gantool.quality.metrics.evaluate_images)."""
    sp = next(iter(s["feature_spaces"].values()))
    shape = "x".join(map(str, s["img_shape"]))
    return "\n".join([
        f"{s['source']} ({s['backend']}, {s['dtype']}): {s['n']} samples of {shape}, seed {s['seed']}, real images {s['dataset']}",
        f"  not scored       {s['not_applicable']}",
        *_metric_table(s["feature_spaces"], untrained=True),
        f"  FID / floor      {sp['fid_over_floor']:.1f}x",
        f"  recall / real    {sp['recall'] / sp['real_vs_real']['recall'] if sp['real_vs_real']['recall'] else 0:.2f}x",
        *_bar_lines(s),
        f"  (random-conv: features of a seeded, untrained 3-layer conv network, comparable only with the real "
        f"column; real = your real images vs a held-out {s['n_reference']} of them)",
    ])


def _conditional(s: dict) -> list[str]:
    """A conditional G: the share of G(z, k) read as k, overall and per class."""
    c = s.get("conditional_accuracy")
    if not c:
        return []
    if "not_applicable" in c:
        return [f"  conditional acc  not scored: {c['not_applicable']}"]
    per = " ".join(f"{k}:{a:.0%}" for k, a in enumerate(c["per_class"]))
    return [f"  conditional acc  {c['overall']:.1%}   (G(z, k) read as k, {c['n']} samples, class-balanced; "
            f"worst class {c['worst_class']})", f"  per class        {per}"]


def format_scores(s: dict) -> str:
    from gantool.quality.metrics import SPACES_DISAGREE

    hist = " ".join(f"{i}:{h:.1%}" for i, h in enumerate(s["class_histogram"]))
    spaces = s["feature_spaces"]
    ratios = ", ".join(f"{r:.1f}x in {n}" for n, r in ((n, v["fid_over_floor"]) for n, v in spaces.items()))
    first = next(iter(spaces.values()))
    lines = [
        f"{s['source']} ({s['backend']}, {s['dtype']}): {s['n']} samples, seed {s['seed']}, dataset {s['dataset']}",
        f"  recognisability  {s['recognisability']:.1%}   (share with p > 0.9)",
        f"  class entropy    {s['class_entropy']:.3f}   (1 = all ten digits equally); smallest class share "
        f"{s['min_class_share']:.1%}",
        f"  classes          {hist}",
        *_conditional(s),
        *_metric_table(spaces),
        f"  FID / floor      {ratios}",
        f"  recall / real    {s['recall'] / s['real_vs_real']['recall'] if s['real_vs_real']['recall'] else 0:.2f}x",
        *_bar_lines(s),
        f"  (real = real training digits vs the held-out ones, same protocol; precision/recall/density/coverage "
        f"on {first['prdc_n']} samples a side, k={first['prdc_k']}; KID: mean ± std over 100 subsets of {first['kid_subset']})",
    ]
    if s.get("spaces_disagree"):
        lines.append(f"feature spaces disagree: FID/floor is {ratios} ({s['fid_ratio_spread']:.1f}x apart, "
                     f"more than {SPACES_DISAGREE}x), so neither space's FID alone says how far this is from real digits")
    return "\n".join(lines)


@app.command("eval")
@user_errors
def eval_(
    checkpoint: Annotated[Optional[Path], typer.Option(help="Run dir or checkpoint.pt to score (eager PyTorch).")] = None,
    artifact: Annotated[Optional[Path], typer.Option(help="An exported artifact (.onnx, .ts, .pt2) to score.")] = None,
    generator: GeneratorOpt = None,
    weights: WeightsOpt = None,
    latent_dim: LatentDimOpt = None,
    img_shape: ImgShapeOpt = None,
    latent_shape: LatentShapeOpt = None,
    classes: ClassesOpt = None,
    value_range: ValueRangeOpt = None,
    real: Annotated[Optional[Path], typer.Option(help="Real images to score against (.npy/.npz/.pt, (N, C, H, W) or (N, H, W, C); uint8 pixels or floats in the generator's value range), in a seeded random-conv feature space: the way to score a generator that does not make 1x28x28 digits.")] = None,
    n: Annotated[int, typer.Option("--n", help="Samples to draw (the recipe targets use 10,000).")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the latent vectors z.")] = 0,
    dataset: Annotated[Optional[str], typer.Option(help="Dataset whose classifier and held-out images to use. "
                                                   "Default: the checkpoint's, else mnist-5k.")] = None,
    data_dir: Annotated[Path, typer.Option(help="Where the dataset lives (as for train).")] = Path("data"),
    device: Annotated[str, typer.Option(help="auto (CUDA when present) | cpu | cuda: device of the runner.")] = "auto",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the scores as JSON here.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="Runner backend for --artifact (e.g. ort, openvino); default: from the file type.")] = None,
) -> None:
    """Score samples in two feature spaces: FID, precision/recall, density/coverage, KID, each beside real's.

    The first eval of a dataset trains its two classifiers (mnist-5k: about 10 s on 2 idle CPU cores, minutes on busy ones; progress and time left on stderr) and caches them in $GANTOOL_CACHE (default ~/.cache/gantool). The last stdout line is the scores as compact JSON.
    """
    check_writable((json_path, "--json"))
    source = source_from_options(checkpoint, generator, weights, latent_dim, img_shape, value_range,
                                 latent_shape, classes)
    if sum(x is not None for x in (source, artifact)) != 1:
        raise ConfigError("give exactly one of --checkpoint RUN, --generator MODULE:CALLABLE or --artifact FILE")
    if n <= 0:
        raise ConfigError(f"--n must be > 0, got {n}")
    precheck_device(device)
    if real is not None and dataset is not None:
        raise ConfigError("give --dataset (MNIST-shaped, scored by its classifiers) or --real FILE, not both")
    # before torch is imported: a wrong path is answered at once, a folder named as one
    if checkpoint is not None and generator is None:
        resolve_checkpoint_path(checkpoint)
    if artifact is not None:
        require_file(artifact, "--artifact", ArtifactError)
    if real is not None:
        require_file(real, "--real")

    from gantool.checkpoint import atomic_write_text
    from gantool.quality.metrics import NOT_APPLICABLE, dataset_of, evaluate_images, evaluate_runner
    from gantool.runners import load_runner

    if source is not None:
        runner = load_runner(source, "eager", device=device)
        dataset = dataset or (dataset_of(checkpoint) if checkpoint is not None else None)
    else:
        runner = load_runner(artifact, backend, device=device, dtype="auto")  # an artifact runs in its own dtype
    from gantool.quality.classifier import DIGIT_SHAPE

    shape = tuple(runner.info.img_shape)
    if real is None and shape != DIGIT_SHAPE:
        raise ConfigError(f"this generator makes {'x'.join(map(str, shape))} images, so {NOT_APPLICABLE}; "
                          "give --real FILE (real images of that shape) to score FID/KID/precision/recall in a "
                          "seeded random-conv feature space")
    if real is not None:
        from gantool.quality.random_features import load_real_images

        images = load_real_images(real, shape, tuple(runner.info.value_range))
        scores = evaluate_images(runner, images, real.name, n=n, seed=seed)
        text = format_image_scores(scores)
    else:
        scores = evaluate_runner(runner, dataset or "mnist-5k", data_dir, n=n, seed=seed,
                                 progress=lambda msg: typer.echo(msg, err=True))
        text = format_scores(scores)
    from gantool.bench.machine import environment

    scores["environment"] = env = environment(runner.device)
    typer.echo(text)
    isa = ",".join(k for k, v in env["cpu_isa"].items() if v) or "none of avx2/avx512/amx"
    typer.echo(f"  machine          {env['device_name']} ({isa}), {env['threads']} threads, torch {env['versions']['torch']}")
    if json_path:
        again = replaced_note(json_path)
        atomic_write_text(json_path, json.dumps(scores, indent=2) + "\n")
        typer.echo(f"wrote {json_path}{again}")
    typer.echo(json.dumps({k: v for k, v in scores.items() if k not in ("targets", "bars", "environment", "feature_spaces")},
                          separators=(",", ":")))
