"""`gantool train`: parse options, call gantool.train.train, print where the run went."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from gantool.cli.app import app
from gantool.cli.common import check_writable, precheck_device, user_errors
from gantool.config import DATASETS, DIGITS_AFTER_STEPS, G_ARCH_NAMES, RECIPES, Recipe, TrainConfig
from gantool.errors import ConfigError
from gantool.paths import CHECKPOINT_NAME, resolve_checkpoint_path

_T, _S = RECIPES["tuned"], RECIPES["seed"]  # for the help's defaults


def _opt(recipe: Recipe, key: str) -> str:
    """A recipe's value of a train option (its override, else TrainConfig's default), for --help."""
    v = recipe.train.get(key, getattr(TrainConfig, key))
    return f"{v:.0e}".replace("e-0", "e-") if isinstance(v, float) else str(v)


def without_option(argv: list[str], flag: str) -> list[str]:
    """argv without `flag VALUE` / `flag=VALUE`: the command the launched ranks run."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


def _num(text: Optional[str], kind: type, flag: str):
    """Numbers arrive as text so a bad value is one `error:` line, not a usage box."""
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not {'an integer' if kind is int else 'a number'}") from None


@app.command()
@user_errors
def train(
    dataset: Annotated[Optional[str], typer.Option(help="mnist | mnist-5k (bundled, offline) | fashion-mnist. Default: mnist-5k.")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="Where full MNIST / Fashion-MNIST live or are downloaded. Default: data.")] = None,
    epochs: Annotated[Optional[str], typer.Option(metavar="<int>", help=f"Epochs to train (a resumed run continues up to this total). Default: the recipe's (tuned {_T.epochs}, seed {_S.epochs}).")] = None,
    batch_size: Annotated[Optional[str], typer.Option(metavar="<int>", help=f"Batch size. Default: the recipe's (tuned {_opt(_T, 'batch_size')}, seed {_opt(_S, 'batch_size')}).")] = None,
    lr: Annotated[Optional[str], typer.Option(metavar="<float>", help=f"Adam learning rate of G (and of D unless the recipe sets d_lr). Default: the recipe's (tuned {_opt(_T, 'lr')}, seed {_opt(_S, 'lr')}).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto (cuda, then mps, then cpu) | cpu | cuda. Default: auto.")] = None,
    seed: Annotated[Optional[str], typer.Option(metavar="<int>", help="Seed for init, noise, dropout and data order (runs are reproducible on CPU). Default: 0.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory. Default: runs/<dataset>-<recipe>-<time>, or the resumed run's.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue a run exactly: its directory or a checkpoint file.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32 | bf16 | fp16 autocast (fp16 uses a GradScaler) | auto (bf16 where the device multiplies it natively: CUDA sm_80+, avx512_bf16/AMX CPUs; else fp32). Default: fp32.")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile G and D (first steps are slow while it compiles).")] = False,
    recipe: Annotated[Optional[str], typer.Option(help=f"Training recipe from gantool.config.RECIPES: tuned (the default: conv D, {_T.epochs} epochs, about 4.5 minutes on 2 CPU cores), seed (the original article, {_S.epochs} epochs), dcgan (the conv G, drawing the digit z's signs name, with the tuned conv D, {RECIPES['dcgan'].epochs} epochs, about 7 minutes), fast (the same run as tuned).")] = None,
    eval_every: Annotated[Optional[str], typer.Option(metavar="<int>", help="Score samples (FID, recognisability, coverage) every this many epochs; 0 = off.")] = None,
    log_every: Annotated[Optional[str], typer.Option(metavar="<int>", help="Steps between metrics lines (the only host syncs). Default: 100.")] = None,
    sample_every: Annotated[Optional[str], typer.Option(metavar="<int>", help="Steps between sample grids; 0 = one per epoch. Default: 0.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a live progress bar (only on a terminal).")] = True,
    limit: Annotated[Optional[str], typer.Option(metavar="<int>", hidden=True, help="Use only the first N images (tests).")] = None,
    max_steps: Annotated[Optional[str], typer.Option(metavar="<int>", hidden=True, help="Stop after N total steps with a resumable checkpoint.")] = None,
    arch: Annotated[Optional[str], typer.Option(help="Generator: mlp (the seed's) | dcgan (transposed convolutions with BatchNorm). Alone, dcgan trains the dcgan recipe; with --recipe, that recipe's D and settings. Default: the recipe's (mlp).")] = None,
    nproc: Annotated[Optional[str], typer.Option(metavar="<int>", help="Train on this many local processes with DDP: launches torchrun's launcher (= `torchrun --standalone --nproc-per-node <int> -m gantool train ...`). --batch-size stays the global batch.")] = None,
) -> None:
    """Train the GAN; writes checkpoint.pt, metrics.jsonl, samples/*.png and loss.png into the run directory.

    Under torchrun (`torchrun --nproc-per-node 2 -m gantool train ...`) every rank trains its share of
    each global batch with DistributedDataParallel; rank 0 alone logs and writes.
    """
    # Checks that need no torch first: a wrong name or path is answered at once (issue 26).
    if dataset is not None and dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    if arch is not None and arch not in G_ARCH_NAMES:
        raise ConfigError(f"unknown --arch {arch!r}; choose one of: {', '.join(G_ARCH_NAMES)}")
    if recipe is not None and recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    if resume is not None:
        resolve_checkpoint_path(resume)
    precheck_device(device)
    check_writable((out, "--out"), directory=True)

    from gantool.distributed import Dist, launch
    from gantool.train import resolve_configs, resume_configs, train as run_train

    n = _num(nproc, int, "--nproc")
    if n is not None:
        if n < 1:
            raise ConfigError(f"--nproc must be >= 1 (got {n})")
        if n > 1:
            raise typer.Exit(launch(n, without_option(sys.argv[1:], "--nproc")))
    dist = Dist.from_env()
    if resume is None and dist.restart and out is not None and (out / CHECKPOINT_NAME).is_file():
        # torchrun --max-restarts started the job again after a rank died: continue from the last
        # checkpoint (written atomically, so it is whole) instead of refusing the used --out.
        resume = out
        if dist.is_main:
            typer.echo(f"torchrun restart {dist.restart}: resuming from {out / CHECKPOINT_NAME}")

    overrides = dict(
        dataset=dataset, data_dir=data_dir, device=device, precision=precision,
        compile=True if compile else None,
        epochs=_num(epochs, int, "--epochs"), batch_size=_num(batch_size, int, "--batch-size"),
        lr=_num(lr, float, "--lr"), seed=_num(seed, int, "--seed"),
        eval_every=_num(eval_every, int, "--eval-every"), log_every=_num(log_every, int, "--log-every"),
        sample_every=_num(sample_every, int, "--sample-every"),
        limit=_num(limit, int, "--limit"), max_steps=_num(max_steps, int, "--max-steps"),
    )
    if resume is not None:
        model_cfg, cfg = resume_configs(resume, recipe=recipe, **overrides)
        if arch is not None and arch != model_cfg.g_arch:
            raise ConfigError(f"--arch cannot change on --resume (checkpoint has {model_cfg.g_arch!r})")
    else:
        if arch == "dcgan" and recipe is None:
            recipe = "dcgan"
        model_cfg, cfg = resolve_configs(recipe, model={"g_arch": arch} if arch else None, **overrides)
    result = run_train(cfg, model_cfg, out=out, resume=resume, log=typer.echo, progress=progress)
    if not dist.is_main:
        return
    if result.last:
        typer.echo(f"step {result.step}, epoch {result.epoch}: d_loss {result.last['d_loss']:.4f} g_loss {result.last['g_loss']:.4f}")
    typer.echo(f"run written to {result.out}  (checkpoint {result.checkpoint}, samples {result.out / 'samples' / 'final.png'})")
    if result.interrupted:
        raise typer.Exit(130)
    if result.step < DIGITS_AFTER_STEPS:
        typer.echo(f"hint: this run ended at step {result.step:,}; digits usually form after about "
                   f"{DIGITS_AFTER_STEPS:,} steps (docs/training.md), so its samples are probably still blobs")
