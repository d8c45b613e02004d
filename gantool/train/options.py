"""Recipe + command-line overrides -> validated (ModelConfig, TrainConfig); resume's configs; the run folder."""
from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

from gantool.checkpoint import CHECKPOINT_NAME, load_checkpoint, model_config_of
from gantool.config import DEFAULT_RECIPE, ModelConfig, TrainConfig, get_recipe
from gantool.device import DTYPES
from gantool.errors import CheckpointError, ConfigError, OutputError
from gantool.model import D_BODIES, g_arch_problem

# Train options that may change when resuming: they do not change the objective or the data order.
RESUMABLE_OVERRIDES = {"epochs", "device", "precision", "compile", "log_every", "sample_every", "eval_every",
                       "max_steps", "data_dir"}


def resolve_configs(recipe: str | None = None, model: dict[str, Any] | None = None,
                    **overrides: Any) -> tuple[ModelConfig, TrainConfig]:
    """Recipe defaults, then explicit overrides (None = not given). Validates the result.

    `model` overrides the recipe's architecture options (e.g. {"d_pack": 2}).
    """
    name = recipe or DEFAULT_RECIPE
    r = get_recipe(name)
    cfg = TrainConfig(recipe=name, epochs=r.epochs)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for source in (r.train, overrides):
        for k, v in source.items():
            if v is None:
                continue
            if k not in known:
                raise ConfigError(f"unknown train option {k!r}")
            setattr(cfg, k, tuple(v) if k == "betas" else v)
    try:
        model_cfg = ModelConfig(**{**r.model, **(model or {})})
    except TypeError as e:
        raise ConfigError(f"bad model option: {e}") from None
    validate(model_cfg, cfg)
    return model_cfg, cfg


def validate(model: ModelConfig, cfg: TrainConfig, world: int = 1) -> None:
    """One ConfigError line for the first option that makes no sense; `world`: torchrun's ranks,
    which share the global batch in equal runs of whole PacGAN packs."""
    checks = [
        (cfg.epochs > 0, f"--epochs must be > 0 (got {cfg.epochs})"),
        (cfg.batch_size > 0, f"--batch-size must be > 0 (got {cfg.batch_size})"),
        (cfg.lr > 0, f"--lr must be > 0 (got {cfg.lr})"),
        (cfg.d_lr is None or cfg.d_lr > 0, f"d_lr must be > 0 (got {cfg.d_lr})"),
        (all(0 <= b < 1 for b in cfg.betas) and len(cfg.betas) == 2, f"betas must be two values in [0, 1) (got {cfg.betas})"),
        (0 <= cfg.label_smoothing < 1, f"label_smoothing must be in [0, 1) (got {cfg.label_smoothing})"),
        (0 <= cfg.ema_decay < 1, f"ema_decay must be in [0, 1) (got {cfg.ema_decay})"),
        (0 < cfg.top_k <= 1 and 0 < cfg.top_k_gamma <= 1, f"top_k and top_k_gamma must be in (0, 1] (got {cfg.top_k}, {cfg.top_k_gamma})"),
        (cfg.r1_gamma >= 0, f"r1_gamma must be >= 0 (got {cfg.r1_gamma})"),
        (0 <= cfg.lr_decay <= 1, f"lr_decay must be in [0, 1] (got {cfg.lr_decay})"),
        (cfg.precision in (*DTYPES, "auto"), f"unknown precision {cfg.precision!r}; choose one of: {', '.join(DTYPES)}, auto"),
        (cfg.log_every > 0, f"--log-every must be > 0 (got {cfg.log_every})"),
        (min(cfg.sample_every, cfg.eval_every, cfg.limit, cfg.max_steps) >= 0, "sample_every, eval_every, limit and max_steps must be >= 0"),
        (model.d_pack >= 1, f"d_pack must be >= 1 (got {model.d_pack})"),
        (model.d_arch in D_BODIES, f"unknown d_arch {model.d_arch!r}; choose one of: {', '.join(D_BODIES)}"),
        (model.d_arch != "conv" or (len(model.d_channels) >= 1 and min(model.d_channels) > 0
                                    and model.img_size % 2 ** len(model.d_channels) == 0),
         f"d_channels {model.d_channels} must be positive and halve the {model.img_size}px side evenly"),
        (model.d_classes >= 0 and cfg.class_weight >= 0, "d_classes and class_weight must be >= 0"),
        ((model.d_classes > 0) == (cfg.class_weight > 0),
         "class_weight > 0 needs a discriminator class head (d_classes > 0) and vice versa"),
        (not model.g_classes or model.g_classes == model.d_classes,
         f"g_classes {model.g_classes}: G is trained to draw the class D's head names, so d_classes must "
         f"equal it (got {model.d_classes})"),
        (cfg.batch_size % model.d_pack == 0, f"--batch-size {cfg.batch_size} is not divisible by the PacGAN pack size {model.d_pack}"),
        (cfg.batch_size % (world * model.d_pack) == 0,
         f"--batch-size {cfg.batch_size} is not divisible by {world} ranks x PacGAN pack {model.d_pack} "
         f"(= {world * model.d_pack}): it is the global batch, shared equally by the ranks"),
    ]
    if (why := g_arch_problem(model)):
        checks.insert(0, (False, why))
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)


def default_out(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.dataset}-{cfg.recipe}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def prepare_out(out: Path, resuming: bool) -> Path:
    """Create `out` (and samples/); refuse to overwrite another run's checkpoint unless resuming."""
    try:
        (out / "samples").mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"cannot write to --out {out}: {e.strerror or e}") from None
    if not resuming and (out / CHECKPOINT_NAME).exists():
        raise OutputError(f"{out} already holds a run ({CHECKPOINT_NAME}); use --resume {out} or another --out")
    return out


def load_resume(resume: str | Path) -> dict[str, Any]:
    payload = load_checkpoint(resume)
    model_config_of(payload)  # a one-line error for an unreadable architecture
    for key in ("train_config", "discriminator", "opt_g", "opt_d", "rng"):
        if payload.get(key) is None:
            raise CheckpointError(f"cannot resume from {resume}: it has no {key!r} (not a training checkpoint)")
    return payload


def resume_configs(resume: str | Path, recipe: str | None = None, **overrides: Any) -> tuple[ModelConfig, TrainConfig]:
    """The checkpoint's own configs, plus overrides that keep the continuation exact.

    A named recipe must describe the same architecture; changing e.g. the lr or the batch size
    mid-run is refused rather than silently making "resume" mean something else.
    """
    payload = load_resume(resume)
    model = model_config_of(payload)
    try:
        cfg = TrainConfig.from_dict(payload["train_config"])
    except TypeError as e:
        raise CheckpointError(f"cannot resume from {resume}: unreadable train config ({e})") from None
    if recipe is not None:
        wanted = ModelConfig(**get_recipe(recipe).model)
        if wanted != model:
            raise CheckpointError(f"cannot resume from {resume}: it holds another architecture than recipe "
                                  f"{recipe!r} ({model} vs {wanted})")
    cfg.max_steps = 0  # a step cap belongs to the run that set it
    for k, v in overrides.items():
        if v is None:
            continue
        if k in RESUMABLE_OVERRIDES:
            setattr(cfg, k, v)
        elif getattr(cfg, k, v) != v:
            raise ConfigError(f"--{k.replace('_', '-')} cannot change on --resume (checkpoint has {getattr(cfg, k)!r})")
    validate(model, cfg)
    return model, cfg
