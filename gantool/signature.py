"""What a generator takes and gives (Signature), built once from its source and read back from any artifact.

    sig = Signature.latent_to_image(100, (1, 28, 28))        # z (N, 100) -> images (N, 1, 28, 28)
    meta = sig.metadata()                                    # str -> str, embedded in every artifact
    sig = Signature.from_metadata(meta, "generator.onnx")    # the one parser; refuses what it cannot read

The latent input's per-sample shape may have several dims ((100,) or (100, 1, 1)); a seeded draw of
`latent_dim` numbers is reshaped to it, so the same seed means the same numbers whatever the shape.
A conditional generator has a second input, a class label: int64 (N,) in [0, n_classes). Where a
caller gives no labels, row i gets class i mod n_classes (`labels`), so every seeded batch of at least
n_classes rows covers every class, the same way for the reference and every artifact.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from gantool.errors import ArtifactError

LATENT, LABEL = "latent", "label"
# The names gantool gives when a source names nothing (its own generators; artifacts made before
# the signature was recorded). A user module's forward() names its own input.
DEFAULT_INPUT, DEFAULT_OUTPUT = "z", "images"
METADATA_KEY = "gantool.signature"
SIGNATURE_VERSION = 1


@dataclass(frozen=True)
class Input:
    """One input tensor: its name (as forward() names it), role, per-sample shape and element type."""

    name: str
    role: str = LATENT
    shape: tuple[int, ...] = ()
    dtype: str = "float32"  # the latent's is the artifact's float dtype at run time (fp16 file: float16)
    n_classes: int | None = None  # a label input: values in [0, n_classes)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "role": self.role, "shape": list(self.shape), "dtype": self.dtype}
        if self.n_classes is not None:
            d["n_classes"] = self.n_classes
        return d


@dataclass(frozen=True)
class Signature:
    """A generator's inputs and its image output (N is the batch, always dynamic)."""

    inputs: tuple[Input, ...]
    output_name: str = DEFAULT_OUTPUT
    img_shape: tuple[int, ...] = ()  # (C, H, W)
    value_range: tuple[float, float] = (-1.0, 1.0)
    batch_dim: str = field(default="N", compare=False)

    @classmethod
    def latent_to_image(cls, latent: int | tuple[int, ...], img_shape: tuple[int, ...],
                        value_range: tuple[float, float] = (-1.0, 1.0), input_name: str = DEFAULT_INPUT,
                        output_name: str = DEFAULT_OUTPUT, label: tuple[str, int] | None = None) -> "Signature":
        """`label`: (input name, n_classes) for a conditional generator's second input."""
        shape = (int(latent),) if isinstance(latent, int) else tuple(int(d) for d in latent)
        ins = (Input(input_name, LATENT, shape),)
        if label is not None:
            ins += (Input(label[0], LABEL, (), "int64", int(label[1])),)
        return cls(ins, output_name, tuple(int(d) for d in img_shape), (float(value_range[0]), float(value_range[1])))

    # --- what everyone reads ------------------------------------------------------------------
    @property
    def latent(self) -> Input:
        return next(i for i in self.inputs if i.role == LATENT)

    @property
    def label(self) -> Input | None:
        return next((i for i in self.inputs if i.role == LABEL), None)

    @property
    def n_classes(self) -> int | None:
        return self.label.n_classes if self.label else None

    @property
    def input_name(self) -> str:
        return self.latent.name

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.latent.shape

    @property
    def latent_dim(self) -> int:
        return math.prod(self.latent.shape)

    def with_names(self, input_name: str | None = None, output_name: str | None = None) -> "Signature":
        ins = tuple(replace(i, name=input_name) if i.role == LATENT and input_name else i for i in self.inputs)
        return replace(self, inputs=ins, output_name=output_name or self.output_name)

    def describe(self) -> str:
        """One line: `z (N, 100) -> images (N, 1, 28, 28) in [-1, 1]`."""
        ins = ", ".join(f"{i.name} (N, {', '.join(map(str, i.shape))})" if i.shape else f"{i.name} (N,)"
                        for i in self.inputs)
        lo, hi = self.value_range
        return f"{ins} -> {self.output_name} (N, {', '.join(map(str, self.img_shape))}) in [{lo:g}, {hi:g}]"

    def io(self, io_dtype: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The manifest entry's `inputs` / `outputs`: names, shapes with the batch dim, dtypes."""
        ins = [{"name": i.name, "shape": [self.batch_dim, *i.shape],
                "dtype": io_dtype if i.role == LATENT else i.dtype} for i in self.inputs]
        return ins, [{"name": self.output_name, "shape": [self.batch_dim, *self.img_shape], "dtype": io_dtype}]

    def labels(self, n: int, device: Any = "cpu") -> Any:
        """The default class of row i: i mod n_classes (int64, (n,)); None for an unconditional generator."""
        import torch

        if self.label is None:
            return None
        return torch.arange(n, device=device) % int(self.label.n_classes or 1)

    def example(self, n: int, seed: int = 0, device: Any = "cpu", dtype: Any = None) -> tuple[Any, ...]:
        """The inputs forward() takes for n seeded rows: (z,) or (z, labels)."""
        z = self.latents(n, seed, device, dtype)
        return (z,) if self.label is None else (z, self.labels(n, device))

    def latents(self, n: int, seed: int, device: Any = "cpu", dtype: Any = None) -> Any:
        """Seeded z shaped (n, *latent_shape): gantool.noise's draw of latent_dim numbers a row, reshaped."""
        import torch

        from gantool.noise import latent

        return latent(n, seed, self.latent_dim, device, dtype or torch.float32).reshape(n, *self.latent_shape)

    # --- to and from the manifest / artifact metadata ---------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"version": SIGNATURE_VERSION, "inputs": [i.to_dict() for i in self.inputs],
                "output": {"name": self.output_name, "shape": list(self.img_shape)},
                "value_range": list(self.value_range)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Signature":
        ins = tuple(Input(str(i["name"]), str(i.get("role", LATENT)), tuple(int(v) for v in i.get("shape", ())),
                          str(i.get("dtype", "float32")), i.get("n_classes")) for i in d["inputs"])
        if sum(i.role == LATENT for i in ins) != 1:
            raise ValueError("a signature has exactly one latent input")
        out = d["output"]
        lo, hi = d.get("value_range", (-1.0, 1.0))
        return cls(ins, str(out["name"]), tuple(int(v) for v in out["shape"]), (float(lo), float(hi)))

    def metadata(self) -> dict[str, str]:
        """String key/values for an artifact: the whole signature as JSON, and the flat keys older readers know."""
        return {
            METADATA_KEY: json.dumps(self.to_dict(), separators=(",", ":")),
            "gantool.latent_dim": str(self.latent_dim),
            "gantool.image_shape": ",".join(str(d) for d in self.img_shape),
            "gantool.value_range": ",".join(str(v) for v in self.value_range),
            "gantool.input": self.input_name,
            "gantool.output": self.output_name,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str], where: Any) -> "Signature":
        """The one reader of an artifact's signature (its gantool metadata); ArtifactError in one line when
        it is absent or malformed. Nothing is assumed: an artifact that does not say its image shape is refused."""
        try:
            if meta.get(METADATA_KEY):
                sig = cls.from_dict(json.loads(meta[METADATA_KEY]))
            else:  # artifacts written before the signature key: the flat keys
                shape = tuple(int(v) for v in meta["gantool.image_shape"].split(","))
                lo, hi = (float(v) for v in meta.get("gantool.value_range", "-1,1").split(","))
                sig = cls.latent_to_image(int(meta["gantool.latent_dim"]), shape, (lo, hi),
                                          meta.get("gantool.input") or DEFAULT_INPUT,
                                          meta.get("gantool.output") or DEFAULT_OUTPUT)
        except KeyError as e:
            raise ArtifactError(f"{where} does not say its {str(e).strip(chr(39)).removeprefix('gantool.')} "
                                "(no gantool metadata); was it written by `gantool export`?") from None
        except (ValueError, TypeError, AttributeError) as e:
            raise ArtifactError(f"{where} carries unusable gantool metadata ({type(e).__name__}: {e}); "
                                "was it written by `gantool export`?") from None
        if len(sig.img_shape) != 3:
            raise ArtifactError(f"{where}: image shape {sig.img_shape} is not C,H,W")
        return sig


def artifact_dtype(meta: dict[str, str], io_dtype: str | None, where: Any) -> str:
    """The dtype an artifact holds: its metadata's, checked against the I/O element type where the file
    has one (an int8 file takes and returns float32)."""
    declared = meta.get("gantool.dtype")
    if io_dtype is None:
        if not declared:
            raise ArtifactError(f"{where} does not say its dtype (no gantool metadata); was it written by `gantool export`?")
        return declared
    return "int8" if io_dtype == "fp32" and declared == "int8" else io_dtype


def resolve_dtype(requested: str | None, held: str, where: Any) -> str:
    """Artifacts have a fixed dtype: "auto"/None takes it; anything else must match it."""
    if requested in (None, "auto") or requested == held:
        return held
    raise ArtifactError(f"{where} holds {held} weights but {requested} was asked for "
                        f"(export a {requested} artifact or pass dtype='auto')")
