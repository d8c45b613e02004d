"""Save / load checkpoints (weights + config + provenance) atomically and safely."""
from __future__ import annotations

import hashlib
import os
import pickle
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from gantool.config import ModelConfig
from gantool.errors import CheckpointError, OutputError, first_line
# torch-free, so the CLI checks paths before it imports torch; re-exported here where they always were
from gantool.paths import CHECKPOINT_NAME, check_writable, resolve_checkpoint_path  # noqa: F401

FORMAT = "gantool.checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "version", "model_config", "generator")


def _new_file_mode(path: Path) -> int:
    """The mode a plain open(path, "w") leaves: an existing file keeps its own, a new one gets 0o666 & ~umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        pass
    mask = os.umask(0)  # the only portable way to read the umask: set it, then put it back at once
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) on a temp file beside `path`, fsync, then rename over `path`.

    A crash or error mid-write leaves any previous file untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"cannot write to {path.parent}: {e.strerror or e}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        mode = _new_file_mode(path)
        write(tmp_path)
        os.chmod(tmp_path, mode)  # mkstemp made it 0600; a plain open() would honour the umask
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def strip_compile_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch.compile wraps modules in `_orig_mod.`; checkpoints never carry that prefix."""
    return {k.replace("_orig_mod.", ""): v for k, v in state.items()}


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    payload = {"format": FORMAT, "version": FORMAT_VERSION, **payload}
    return atomic_write(path, lambda p: torch.save(payload, p))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True: a pickle that would run code is refused, and nothing runs."""
    p = resolve_checkpoint_path(path)
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only names the blocked callable as an "unsupported GLOBAL"; anything else
        # (e.g. "Unsupported operand" for a text file) is simply not pickle data.
        if "GLOBAL" in str(e):
            raise CheckpointError(
                f"refusing to load {p}: it contains pickled objects that would run code (weights_only=True)"
            ) from None
        raise CheckpointError(f"{p} is not a checkpoint (unreadable pickle data)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        msg = first_line(e)
        raise CheckpointError(f"{p} is truncated or not a checkpoint ({msg})") from None
    except Exception as e:  # any other unpickling failure is still a bad file, not a gantool bug
        raise CheckpointError(f"{p} is not a gantool checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a gantool checkpoint (no '{FORMAT}' marker)")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{p} is missing {', '.join(missing)}")
    if payload["version"] > FORMAT_VERSION:
        raise CheckpointError(f"{p} has checkpoint version {payload['version']}; this gantool reads <= {FORMAT_VERSION}")
    return payload


def model_config_of(payload: dict[str, Any]) -> ModelConfig:
    try:
        return ModelConfig.from_dict(payload["model_config"])
    except Exception as e:
        raise CheckpointError(f"checkpoint has an unreadable model config: {e}") from None


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """load_state_dict with shape/key mismatches turned into one-line CheckpointErrors."""
    try:
        module.load_state_dict(strip_compile_prefix(state))
    except RuntimeError as e:
        line = str(e).strip().splitlines()
        detail = line[1].strip() if len(line) > 1 else line[0]
        raise CheckpointError(f"{what} weights do not fit this architecture: {detail}") from None


def load_generator(
    path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, ModelConfig, dict[str, Any]]:
    """Rebuild G from a checkpoint with no flags. Uses the EMA weights when the run kept them."""
    from gantool.model import build_generator, g_arch_problem

    payload = load_checkpoint(path)
    cfg = model_config_of(payload)
    if (why := g_arch_problem(cfg)):
        raise CheckpointError(f"{path}: {why}")
    g = build_generator(cfg)
    state = payload["generator_ema"] if ema and payload.get("generator_ema") else payload["generator"]
    load_state(g, state, "generator")
    return g.to(device).eval(), cfg, payload


def save_untrained_checkpoint(path: str | Path, seed: int = 0, note: str = "untrained",
                              **model_overrides: Any) -> Path:
    """Write a checkpoint of a randomly initialised G and D (seed architecture unless overridden).

    Inference speed and export/parity plumbing do not depend on the weights, so benchmarks and
    tests use this instead of training.
    """
    from gantool.config import TrainConfig
    from gantool.model import Discriminator, build_generator

    torch.manual_seed(seed)
    cfg = ModelConfig(**model_overrides)
    save_checkpoint(path, {
        "model_config": cfg.to_dict(),
        "train_config": TrainConfig().to_dict(),
        "generator": build_generator(cfg).state_dict(),
        "discriminator": Discriminator(cfg).state_dict(),
        "step": 0,
        "epoch": 0,
        "data": {"dataset": "none", "note": note},
        "versions": {"torch": str(torch.__version__)},  # TorchVersion would pickle as a class
    })
    return Path(path)
