"""Helpers shared by the command modules: user errors become one stderr line and an exit code."""
from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Annotated, Callable, Optional, TypeVar

import typer

from gantool.errors import GantoolError

F = TypeVar("F", bound=Callable[..., object])


def fail(message: str, code: int = 2) -> "typer.Exit":
    """`error: message` on stderr and exit `code`. Under torchrun only rank 0 prints: every rank
    checks the same input, so its line speaks for all of them."""
    from gantool.ranks import quiet_rank_exit

    if not quiet_rank_exit():
        typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def user_errors(fn: F) -> F:
    """Turn GantoolError (and Ctrl-C) into `error: ...` on stderr plus a non-zero exit; no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GantoolError as e:
            raise fail(str(e), e.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except MemoryError:
            raise fail("out of memory", 2) from None

    return wrapper  # type: ignore[return-value]


def replaced_note(path: Path | None) -> str:
    """" (replaced the earlier file)" when `path` exists now, before a command writes it: the one line that
    names a written file also says it replaced one (README, "Writing over earlier output")."""
    return " (replaced the earlier file)" if path is not None and Path(path).is_file() else ""


def check_writable(*paths: tuple[Path | None, str], directory: bool = False) -> None:
    """Each (path, flag) given must be writable (gantool.checkpoint.check_writable); call before any work."""
    from gantool.paths import check_writable as check

    for path, flag in paths:
        if path is not None:
            check(path, flag, directory=directory)


# Where an NVIDIA driver shows itself without torch: the device nodes and the kernel module's /proc entry.
NVIDIA_SIGNS = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/dxg")  # /dev/dxg: WSL's GPU


def no_cuda_driver() -> bool:
    """True when this machine plainly has no NVIDIA driver (none of NVIDIA_SIGNS), told without importing
    torch; False says only "maybe": torch's own check still runs later."""
    import glob
    import os

    return not any(os.path.exists(p) for p in NVIDIA_SIGNS) and not glob.glob("/dev/nvidia*")


def precheck_device(name: str | None, flag: str = "--device") -> None:
    """Answer a wrong --device before the heavy imports (issue 36.5): an unknown name, or cuda on a
    machine with no NVIDIA driver at all. What passes here is checked again by gantool.device."""
    if name is None:
        return
    low = str(getattr(name, "value", name)).lower()
    base, _, index = low.partition(":")
    if base not in ("auto", "cpu", "cuda", "mps") or (index and (base != "cuda" or not index.isdigit())):
        raise GantoolError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")
    if base == "cuda" and no_cuda_driver():
        from gantool.errors import DeviceError

        raise DeviceError(f"{flag} {low}: CUDA is not available on this machine (no NVIDIA driver: "
                          "no /dev/nvidia* or /proc/driver/nvidia)")


def check_positive(value: int | None, flag: str) -> None:
    """A count that must be > 0, said before any heavy import."""
    if value is not None and value <= 0:
        raise GantoolError(f"{flag} {value}: must be > 0")


def parse_int_list(text: str, what: str) -> list[int]:
    """'1,64,4096' -> [1, 64, 4096]; anything non-numeric or <= 0 is a one-line error."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = int(part)
        except ValueError:
            raise GantoolError(f"{what}: {part!r} is not an integer") from None
        if v <= 0:
            raise GantoolError(f"{what}: {v} must be > 0")
        out.append(v)
    if not out:
        raise GantoolError(f"{what}: give at least one value")
    return out


def parse_choice_list(text: str, choices: list[str], what: str) -> list[str]:
    out = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in out if p not in choices]
    if bad:
        raise GantoolError(f"unknown {what} {', '.join(bad)}; choose from: {', '.join(choices)}")
    if not out:
        raise GantoolError(f"{what}: give at least one value")
    return out


class _NoCudaRuntimeNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


def quiet_no_cuda_runtime_notice() -> None:
    """torch's CUDA wheels log "No CUDA runtime is found, using CUDA_HOME=..." whenever torch.compile,
    Inductor or AOTI load their C++ helpers on a machine without a GPU: noise on every CPU run (the
    device gantool uses is reported elsewhere). Drops that one message, nothing else."""
    log = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _NoCudaRuntimeNotice) for f in log.filters):
        log.addFilter(_NoCudaRuntimeNotice())


# --- the user's own generator: the same five options on export, verify, bench, sample and eval -------
_PANEL = "Your own generator (instead of --checkpoint)"
GeneratorOpt = Annotated[Optional[str], typer.Option(
    "--generator", rich_help_panel=_PANEL,
    help="Your generator: MODULE:CALLABLE (importable) or path/to/file.py:CALLABLE; CALLABLE() returns an "
         "nn.Module mapping z (N, *latent_shape), and for a conditional G int64 labels (N,), to images (N, C, H, W).")]
WeightsOpt = Annotated[Optional[Path], typer.Option(
    "--weights", rich_help_panel=_PANEL,
    help="Weights for --generator: a state_dict file, or a checkpoint holding one under 'state_dict' or 'generator'.")]
LatentDimOpt = Annotated[Optional[int], typer.Option(
    "--latent-dim", rich_help_panel=_PANEL, help="--generator's z size, when the module has no latent_dim attribute.")]
ClassesOpt = Annotated[Optional[int], typer.Option(
    "--classes", rich_help_panel=_PANEL,
    help="--generator's number of classes when forward(z, labels) takes a class label and the module has no "
         "n_classes attribute; labels are int64 in [0, N).")]
LatentShapeOpt = Annotated[Optional[str], typer.Option(
    "--latent-shape", rich_help_panel=_PANEL,
    help="--generator's z shape without the batch, e.g. 100,1,1 for a transposed-conv G, when the module has no "
         "latent_shape attribute (default: (N, latent-dim), else (N, latent-dim, 1, 1) if a convolution wants 4-D).")]
ImgShapeOpt = Annotated[Optional[str], typer.Option(
    "--img-shape", rich_help_panel=_PANEL,
    help="--generator's image shape, when the module has no img_shape attribute (default: what it returns).")]
ValueRangeOpt = Annotated[Optional[str], typer.Option(
    "--value-range", rich_help_panel=_PANEL,
    help="--generator's output range, when the module has no value_range attribute. Default: -1,1.")]


def source_from_options(checkpoint: Optional[Path], generator: Optional[str], weights: Optional[Path] = None,
                     latent_dim: Optional[int] = None, img_shape: Optional[str] = None,
                     value_range: Optional[str] = None, latent_shape: Optional[str] = None,
                     classes: Optional[int] = None):
    """--checkpoint as given (a path, or None), or a gantool.source.UserSource for --generator."""
    from gantool.errors import ConfigError

    extra = [flag for flag, v in (("--weights", weights), ("--latent-dim", latent_dim), ("--img-shape", img_shape),
                                  ("--value-range", value_range), ("--latent-shape", latent_shape),
                                  ("--classes", classes)) if v is not None]
    if generator is None:
        if extra:
            raise ConfigError(f"{', '.join(extra)} describe a --generator; give --generator MODULE:CALLABLE too")
        return checkpoint
    if checkpoint is not None:
        raise ConfigError("give --checkpoint RUN or --generator MODULE:CALLABLE, not both")
    from gantool.paths import check_generator_paths

    check_generator_paths(generator, weights)  # before torch is imported (gantool.source imports it)
    from gantool.source import UserSource

    if latent_dim is not None and latent_dim <= 0:
        raise ConfigError(f"--latent-dim must be > 0 (got {latent_dim})")
    shape = tuple(parse_int_list(img_shape, "--img-shape")) if img_shape is not None else None
    if shape is not None and len(shape) != 3:
        raise ConfigError(f"--img-shape {img_shape}: give C,H,W (three integers)")
    rng = None
    if value_range is not None:
        try:
            rng = tuple(float(v) for v in value_range.split(","))
        except ValueError:
            rng = ()
        if len(rng) != 2 or not rng[0] < rng[1]:
            raise ConfigError(f"--value-range {value_range}: give LO,HI with LO < HI (e.g. -1,1 or 0,1)")
    zshape = tuple(parse_int_list(latent_shape, "--latent-shape")) if latent_shape is not None else None
    if zshape is not None and (not zshape or min(zshape) <= 0):
        raise ConfigError(f"--latent-shape {latent_shape}: give the sizes of z's dims after the batch, e.g. 100,1,1")
    if zshape is not None and latent_dim is not None and math.prod(zshape) != latent_dim:
        raise ConfigError(f"--latent-shape {latent_shape} holds {math.prod(zshape)} numbers, but --latent-dim is "
                          f"{latent_dim}; make them agree (or give one of them)")
    if classes is not None and classes < 1:
        raise ConfigError(f"--classes must be >= 1 (got {classes})")
    return UserSource(generator, weights, latent_dim, shape, rng, latent_shape=zshape, n_classes=classes)
