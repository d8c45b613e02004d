"""Where a generator comes from: a gantool checkpoint, or the user's own nn.Module.

    src = generator_source("runs/tuned")                              # a run dir / checkpoint.pt
    src = UserSource("my_gens.py:make", weights="g.pt")                # file.py:CALLABLE
    src = UserSource("mypkg.models:make", latent_dim=64)               # MODULE:CALLABLE on sys.path
    g = src.load("cpu")            # -> Loaded(module in eval mode, contract)

Every command that needs the PyTorch generator (export, eager/compile bench rows, the parity
reference, sample, eval) opens it through one GeneratorSource. A source is recorded in an export's
manifest (`record()`); `from_record()` re-imports it from there and refuses, in one line, a file
that is gone or whose sha256 changed since the export.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gantool.config import VALUE_RANGE
from gantool.errors import ArtifactError, GeneratorError, first_line
from gantool.paths import check_generator_paths
from gantool.signature import DEFAULT_INPUT, Signature

CHECK_BATCH = 4  # the seeded forward check: rows 0..3 of latent(seed 0)
RANGE_SLACK = 1e-3  # outputs may pass the declared bounds by this much (float rounding of a Tanh)


def _gone(what: str, path: object) -> ArtifactError:
    return ArtifactError(f"the {what} {path} recorded at export is gone; pass --generator/--weights to name where it is now")


@dataclass
class Loaded:
    module: nn.Module  # eval mode, on the device asked for, float32
    signature: Signature


class GeneratorSource:
    """A generator that can be (re)built: `load()`, an `identity` hash, a `label`, a manifest `record()`."""

    label: str

    def load(self, device: str | torch.device = "cpu", ema: bool = True) -> Loaded:
        raise NotImplementedError

    @property
    def identity(self) -> str:
        """sha256 that names these weights and code: a manifest of one generator holds one identity."""
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def checkpoint(self) -> Path | None:
        return None


class CheckpointSource(GeneratorSource):
    """A gantool checkpoint (run dir or checkpoint.pt): its ModelConfig rebuilds the generator."""

    def __init__(self, path: str | Path):
        from gantool.checkpoint import resolve_checkpoint_path

        self.path = resolve_checkpoint_path(path).resolve()
        self.label = str(path)
        self._sha: str | None = None

    @property
    def checkpoint(self) -> Path:
        return self.path

    @property
    def identity(self) -> str:
        from gantool.checkpoint import sha256_file

        if self._sha is None:
            self._sha = sha256_file(self.path)
        return self._sha

    def load(self, device: str | torch.device = "cpu", ema: bool = True) -> Loaded:
        from gantool.checkpoint import load_generator

        g, cfg, _ = load_generator(self.path, ema=ema, device=device)
        return Loaded(g, Signature.latent_to_image(cfg.latent_dim, tuple(cfg.img_shape)))

    def record(self) -> dict[str, Any]:
        return {"kind": "checkpoint", "checkpoint": str(self.path), "sha256": self.identity}


class UserSource(GeneratorSource):
    """The user's generator: `target` is MODULE:CALLABLE or path/to/file.py:CALLABLE; CALLABLE() returns
    an nn.Module mapping z (N, *latent_shape) to (N, C, H, W). The signature is read from the module's
    `latent_dim` / `latent_shape`, `img_shape`, `value_range` attributes, else from the arguments given
    here; a latent shape declared nowhere is found by the seeded check ((N, d), else (N, d, 1, 1) when a
    convolution refuses 2-D input), an image shape given nowhere is read off its output. `weights`: a
    state_dict file or a checkpoint holding one under `state_dict` / `generator`."""

    def __init__(self, target: str, weights: str | Path | None = None, latent_dim: int | None = None,
                 img_shape: tuple[int, ...] | None = None, value_range: tuple[float, float] | None = None,
                 expect: dict[str, Any] | None = None, latent_shape: tuple[int, ...] | None = None,
                 n_classes: int | None = None):
        module, sep, attr = target.rpartition(":")
        if not sep or not module or not attr:
            raise GeneratorError(f"--generator {target!r}: give MODULE:CALLABLE or path/to/file.py:CALLABLE")
        self.target, self.module_name, self.attr = target, module, attr
        self.is_file = module.endswith(".py") or "/" in module or "\\" in module
        check_generator_paths(target, weights)  # a folder is named as one; a missing file as missing
        self.file: Path | None = Path(module).resolve() if self.is_file else None  # else: found on import
        self.weights = Path(weights).resolve() if weights is not None else None
        self.declared = {"latent_dim": latent_dim, "img_shape": tuple(img_shape) if img_shape else None,
                         "value_range": tuple(value_range) if value_range else None,
                         "latent_shape": tuple(latent_shape) if latent_shape else None, "n_classes": n_classes}
        self.expect = expect or {}  # hashes recorded at export: a changed file is refused
        self.label = target
        self._record: dict[str, Any] | None = None

    # --- building ---------------------------------------------------------------------------------
    def _import(self) -> Any:
        if self.is_file:
            assert self.file is not None
            name = "gantool_user_" + hashlib.sha256(str(self.file).encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(name, self.file)
            if spec is None or spec.loader is None:
                raise GeneratorError(f"cannot import {self.module_name}: not a Python source file")
            mod = importlib.util.module_from_spec(spec)
            sys.path.insert(0, str(self.file.parent))  # the file's own imports of its neighbours
            try:
                spec.loader.exec_module(mod)
            except Exception as e:
                raise GeneratorError(f"cannot import {self.module_name}: {type(e).__name__}: {first_line(e)}") from None
            finally:
                sys.path.remove(str(self.file.parent))
            return mod
        try:
            mod = importlib.import_module(self.module_name)
        except Exception as e:
            raise GeneratorError(f"cannot import module {self.module_name!r}: {type(e).__name__}: {first_line(e)}") from None
        self.file = Path(mod.__file__).resolve() if getattr(mod, "__file__", None) else None
        return mod

    def _build(self) -> nn.Module:
        from gantool.checkpoint import sha256_file

        if self.is_file:
            self._check_recorded("file", self.file, "generator source file")
        mod = self._import()
        if self.file is not None and not self.is_file:
            self._check_recorded("file", self.file, "generator source file")
        fn = getattr(mod, self.attr, None)
        if fn is None:
            raise GeneratorError(f"{self.module_name} has no {self.attr!r} (--generator {self.target})")
        if not callable(fn):
            raise GeneratorError(f"{self.module_name}:{self.attr} is not callable (it is a {type(fn).__name__})")
        try:
            # Seeded: without --weights, the module's own init is its weights, and every command that
            # rebuilds it (export, the parity reference, bench) must get the same ones.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                g = fn()
        except Exception as e:
            raise GeneratorError(f"{self.module_name}:{self.attr}() raised {type(e).__name__}: {first_line(e)}") from None
        if not isinstance(g, nn.Module):
            raise GeneratorError(f"{self.module_name}:{self.attr}() returned a {type(g).__name__}, not a torch.nn.Module")
        self._file_sha = sha256_file(self.file) if self.file is not None else None
        return g

    def _check_recorded(self, key: str, path: Path | None, what: str) -> None:
        """A source re-opened from a manifest must be the code / weights that were exported."""
        from gantool.checkpoint import sha256_file

        want = self.expect.get(f"{key}_sha256")
        if not want:
            return
        if path is None or not path.is_file():
            raise _gone(what, self.expect.get(key) or path)
        have = sha256_file(path)
        if have != want:
            raise ArtifactError(f"the {what} {path} changed since the export (sha256 {want[:12]}... then, "
                                f"{have[:12]}... now); re-export, or restore it")

    def _load_weights(self, g: nn.Module) -> str | None:
        from gantool.checkpoint import sha256_file

        if self.weights is None:
            return None
        self._check_recorded("weights", self.weights, "weights file")
        try:
            obj = torch.load(self.weights, map_location="cpu", weights_only=True)
        except Exception as e:
            raise GeneratorError(f"--weights {self.weights}: unreadable ({type(e).__name__}: {first_line(e)})") from None
        if isinstance(obj, dict):
            for key in ("state_dict", "generator"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise GeneratorError(f"--weights {self.weights}: not a state_dict (a dict of tensors), nor a "
                                 "checkpoint with a 'state_dict' or 'generator' key")
        from gantool.checkpoint import strip_compile_prefix

        state = strip_compile_prefix(obj)
        own = g.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing[:3])}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))
            if unexpected:
                parts.append(f"unexpected {', '.join(unexpected[:3])}" + (f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""))
            raise GeneratorError(f"--weights {self.weights} do not fit {self.target}: keys {'; '.join(parts)}")
        for k, v in state.items():
            if own[k].shape != v.shape:
                raise GeneratorError(f"--weights {self.weights} do not fit {self.target}: {k} has shape "
                                     f"{tuple(v.shape)}, the module's is {tuple(own[k].shape)}")
        g.load_state_dict(state)
        return sha256_file(self.weights)

    def _contract(self, g: nn.Module) -> tuple[tuple[int, ...] | None, int, tuple[int, ...] | None,
                                                tuple[float, float] | None]:
        """(declared latent shape or None, latent size, image shape or None, value range or None)."""
        out: dict[str, Any] = {}
        flags = {"latent_dim": "--latent-dim", "latent_shape": "--latent-shape", "img_shape": "--img-shape",
                 "value_range": "--value-range"}
        for key, flag in flags.items():
            attr, given = getattr(g, key, None), self.declared[key]
            if attr is not None:
                try:
                    attr = int(attr) if key == "latent_dim" else tuple(float(v) if key == "value_range" else int(v)
                                                                        for v in attr)
                except (TypeError, ValueError):
                    raise GeneratorError(f"{self.target}: the module's {key} attribute {attr!r} is not "
                                         f"{'an int' if key == 'latent_dim' else 'a sequence of numbers'}") from None
                if given is not None and given != attr:
                    shown = ",".join(map(str, given)) if isinstance(given, tuple) else given
                    raise GeneratorError(f"{flag} {shown} contradicts the module's {key} attribute {attr}")
            out[key] = attr if attr is not None else given
        shape, dim = out["latent_shape"], out["latent_dim"]
        if shape is not None and (not shape or any(d <= 0 for d in shape)):
            raise GeneratorError(f"{self.target}: latent shape {shape} must be positive sizes")
        if shape is not None and dim is not None and math.prod(shape) != dim:
            raise GeneratorError(f"{self.target}: latent shape {','.join(map(str, shape))} holds {math.prod(shape)} "
                                 f"numbers, but the latent size is {dim}; make them agree")
        if shape is None and dim is None:
            raise GeneratorError(f"{self.target}: the module has no latent_dim attribute; pass --latent-dim N "
                                 "(or --latent-shape 100,1,1 for a latent with several dims)")
        if out["img_shape"] is not None and len(out["img_shape"]) != 3:
            raise GeneratorError(f"{self.target}: img_shape {out['img_shape']} is not C,H,W")
        return shape, dim if dim is not None else math.prod(shape), out["img_shape"], out["value_range"]

    def _label(self, g: nn.Module) -> tuple[str, int] | None:
        """(name, n_classes) of forward()'s class-label input, or None; one line for what cannot be fed."""
        import inspect

        try:
            params = [p for p in inspect.signature(g.forward).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            params = []
        required = [p for p in params if p.default is p.empty]
        attr, given = getattr(g, "n_classes", None), self.declared["n_classes"]
        if attr is not None and given is not None and int(attr) != given:
            raise GeneratorError(f"--classes {given} contradicts the module's n_classes attribute {attr}")
        n = given if given is not None else (int(attr) if attr is not None else None)
        names = ", ".join(p.name for p in params)
        if len(required) > 2:
            raise GeneratorError(f"{self.target}: forward({names}) takes {len(required)} inputs; gantool feeds a latent "
                                 "and at most a class label")
        if len(required) == 2 and n is None:
            raise GeneratorError(f"{self.target}: forward({names}) takes a second input {required[1].name!r}; if it is a "
                                 "class label, set n_classes = N on the module or pass --classes N")
        if len(params) < 2:
            if given is not None:
                raise GeneratorError(f"--classes {given}: {self.target}'s forward({names}) takes no label input")
            return None
        if n is None:
            return None  # an optional second parameter and no classes declared: an unconditional G
        if n < 1:
            raise GeneratorError(f"{self.target}: n_classes must be >= 1, got {n}")
        return params[1].name, n

    def _forward(self, g: nn.Module, shape: tuple[int, ...], label: tuple[str, int] | None) -> tuple[Any, Exception | None]:
        from gantool.noise import latent

        z = latent(CHECK_BATCH, 0, math.prod(shape)).reshape(CHECK_BATCH, *shape)
        args = (z,) if label is None else (z, torch.arange(CHECK_BATCH) % label[1])
        try:
            with torch.no_grad():
                return g(*args), None
        except Exception as e:  # noqa: BLE001 - the user's forward may raise anything
            return None, e

    def _check(self, g: nn.Module, declared: tuple[int, ...] | None, latent_dim: int, img_shape: tuple[int, ...] | None,
               value_range: tuple[float, float], label: tuple[str, int] | None = None
               ) -> tuple[tuple[int, ...], tuple[int, int, int]]:
        """One forward pass on seeded z before any work: names what was expected and what came out.
        Returns (latent shape, image shape); an undeclared latent is tried as (N, d), then as (N, d, 1, 1)."""
        shapes = [declared] if declared else [(latent_dim,), (latent_dim, 1, 1)]
        errors: list[str] = []
        for shape in shapes:
            y, err = self._forward(g, shape, label)
            if err is None:
                break
            said = f"{type(err).__name__}: {first_line(err)}"
            errors += [f"forward on a seeded z of shape ({CHECK_BATCH}, {', '.join(map(str, shape))}) raised {said}"]
        if err is not None:
            more = "" if declared else "; declare the latent's shape with --latent-shape or a latent_shape attribute"
            raise GeneratorError(f"{self.target}: {'; '.join(errors)}{more}")
        z_shape = f"({CHECK_BATCH}, {', '.join(map(str, shape))})"
        if not isinstance(y, torch.Tensor):
            raise GeneratorError(f"{self.target}: forward returned a {type(y).__name__}, not a tensor of images")
        want = (CHECK_BATCH, *img_shape) if img_shape else None
        if y.dim() != 4 or (want and tuple(y.shape) != want):
            raise GeneratorError(f"{self.target}: forward on z {z_shape} returned shape "
                                 f"{tuple(y.shape)}; expected {want or f'({CHECK_BATCH}, C, H, W)'}")
        if y.dtype != torch.float32:
            raise GeneratorError(f"{self.target}: forward returned {y.dtype}; expected torch.float32")
        if not torch.isfinite(y).all():
            raise GeneratorError(f"{self.target}: forward on a seeded z returned NaN or Inf")
        lo, hi = value_range
        if y.min().item() < lo - RANGE_SLACK or y.max().item() > hi + RANGE_SLACK:
            raise GeneratorError(f"{self.target}: outputs span [{y.min().item():.4g}, {y.max().item():.4g}], outside the "
                                 f"value range [{lo:g}, {hi:g}]; pass --value-range LO,HI or set value_range on the module")
        return shape, tuple(y.shape[1:])  # type: ignore[return-value]

    def load(self, device: str | torch.device = "cpu", ema: bool = True) -> Loaded:
        g = self._build()
        weights_sha = self._load_weights(g)
        g = g.float().eval()
        declared, latent_dim, img_shape, value_range = self._contract(g)
        value_range = value_range or VALUE_RANGE
        label = self._label(g)
        latent_shape, shape = self._check(g, declared, latent_dim, img_shape, value_range, label)
        sig = Signature.latent_to_image(latent_shape, shape, tuple(value_range), input_name=_input_name(g), label=label)
        self._record = {"kind": "user", "generator": self.target,
                        "file": str(self.file) if self.file else None, "file_sha256": self._file_sha,
                        "weights": str(self.weights) if self.weights else None, "weights_sha256": weights_sha,
                        "class": f"{type(g).__module__}.{type(g).__qualname__}",
                        "img_shape_from": "declared" if img_shape else "output", "latent_dim": sig.latent_dim,
                        "latent_shape": list(sig.latent_shape), "latent_shape_from": "declared" if declared else "probe",
                        "n_classes": sig.n_classes,
                        "img_shape": list(sig.img_shape), "value_range": list(sig.value_range),
                        "signature": sig.to_dict()}
        return Loaded(g.to(device), sig)

    @property
    def identity(self) -> str:
        rec = self.record()  # the code and weights, not where they lie: a re-opened record has the same identity
        what = [None if self.is_file else self.module_name, self.attr, rec["file_sha256"], rec["weights_sha256"]]
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()

    def record(self) -> dict[str, Any]:
        if self._record is None:
            self.load("cpu")
        assert self._record is not None
        return dict(self._record)

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "UserSource":
        """Re-open the generator an export recorded: from the file it named, checked against its sha256."""
        target = rec["generator"]
        module, _, attr = target.rpartition(":")
        if rec.get("file") and (module.endswith(".py") or "/" in module):
            target = f"{rec['file']}:{attr}"  # the absolute path: works from any working directory
            if not Path(rec["file"]).is_file():
                raise _gone("generator source file", rec["file"])
        if rec.get("weights") and not Path(rec["weights"]).is_file():
            raise _gone("weights file", rec["weights"])
        return cls(target, rec.get("weights"), rec.get("latent_dim"), tuple(rec["img_shape"]),
                   tuple(rec["value_range"]), expect=rec, latent_shape=tuple(rec.get("latent_shape") or ()) or None,
                   n_classes=rec.get("n_classes"))


def _input_name(g: nn.Module) -> str:
    """The name forward() gives its first input (`noise`, `input`, `z`...): the artifacts' input name."""
    import inspect

    try:
        params = list(inspect.signature(g.forward).parameters.values())
    except (TypeError, ValueError):
        return DEFAULT_INPUT
    first = next((p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)), None)
    return first.name if first is not None else DEFAULT_INPUT


def generator_source(src: "str | Path | GeneratorSource") -> GeneratorSource:
    """A GeneratorSource as is; a path is a gantool checkpoint (run dir or .pt file)."""
    return src if isinstance(src, GeneratorSource) else CheckpointSource(src)


def source_of_manifest(doc: dict[str, Any]) -> GeneratorSource | None:
    """The generator an export directory's manifest says it came from (None when it names none)."""
    rec = doc.get("source")
    if isinstance(rec, dict) and rec.get("kind") == "user":
        return UserSource.from_record(rec)
    path = recorded_checkpoint(doc)
    return CheckpointSource(path) if path else None


def recorded_checkpoint(doc: dict[str, Any]) -> str | None:
    """The checkpoint path a manifest records (its source record, else the older source_checkpoint key)."""
    rec = doc.get("source")
    path = rec.get("checkpoint") if isinstance(rec, dict) else None
    return path or doc.get("source_checkpoint")
