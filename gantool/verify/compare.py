"""Parity: does an artifact compute what its checkpoint computes? Checks names, then shapes, then values.

    result = verify_runner(load_runner(ckpt, "eager"), load_runner("exported/generator.fp32.onnx"))

Every failure is typed (ShapeError, ToleranceError, NonFiniteError, MetadataError, ChecksumError),
carries the max abs / rel difference where there is one, and all of them are collected, not just
the first.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from gantool.errors import ArtifactError, first_line
from gantool.runners import Runner
from gantool import noise


@dataclass(frozen=True)
class Tolerance:
    """Pass when every |out - ref| <= atol + rtol * |ref| (numpy.allclose semantics) and, where set,
    the 99.9th percentile and the mean of |out - ref| stay under p999_abs and mean_abs, and the
    signal-to-quantization-noise ratio 10 log10(sum ref^2 / sum (out - ref)^2) is at least
    min_sqnr_db (the error judged against the output's own size, as torch.ao's numeric suite does)."""

    atol: float
    rtol: float
    p999_abs: float | None = None
    mean_abs: float | None = None
    min_sqnr_db: float | None = None

    @property
    def has_bulk_bounds(self) -> bool:
        return any(v is not None for v in (self.p999_abs, self.mean_abs, self.min_sqnr_db))


# Per artifact dtype, against eager fp32 (how they were derived: docs/export.md, "Tolerances").
# fp32 only reorders the same float math. fp16 and bf16: every bound is a multiple of the dtype's
# unit roundoff u (2^-11, 2^-8), since a generator turns rounding at every layer into an output
# error of A x u. Per pixel, atol = 64 u: the largest A seen on a trained G was 18-20 (demo G) and
# 26 (a longer-trained one). A per-pixel bound that wide cannot see a file that is wrong on a few
# pixels or whose outputs are small (untrained: rms 0.047, so an all-zero bf16 file stayed within
# 0.25), so the half dtypes are also judged on the bulk, over every checked pixel at once (verify) or
# a parity batch of >= 64 z (bench): p99.9 <= 32 u (measured 0.2-3.7 u, about half the max), mean
# <= 4 u (measured 0.05-0.28 u) and SQNR >= -20 log10(8 u), i.e. error rms <= 8 u x the output's
# rms (measured 0.47-1.27 u: 48.2 dB fp16, 30.1 dB bf16). int8 rounds each tensor to 255 levels of
# its range: a pixel on tanh's steep part can flip (max 1.07 measured on the demo G, 1.67 on a fully
# trained one), so no single pixel is bounded (atol 2 = the output range) and it is judged on the
# bulk alone: p99.9, mean, SQNR; and on distribution parity (verify's FID ratio, class histogram,
# recognisability). SQNR >= 12 dB (error rms <= 1/4 of the output's): good files 18.4 / 22.7 dB
# (untrained, static / dynamic) and 29.5 / 35.7 dB (demo G) at 2,048 z; one layer's weight scale x2
# gives 0.6-2.5 dB on the untrained G, and x10 on the demo G breaks p99.9 (0.85-1.99).
ROUNDING_MULTIPLE = 64  # atol
P999_MULTIPLE, MEAN_MULTIPLE, RMS_MULTIPLE = 32, 4, 8  # the half dtypes' bulk bounds, in units of u
UNIT_ROUNDOFF = {"fp16": 2.0 ** -11, "bf16": 2.0 ** -8}


def rounding_tolerance(u: float) -> Tolerance:
    """The bounds of a dtype that rounds to unit roundoff u: per pixel and on the bulk."""
    return Tolerance(atol=ROUNDING_MULTIPLE * u, rtol=0.0, p999_abs=P999_MULTIPLE * u, mean_abs=MEAN_MULTIPLE * u,
                     min_sqnr_db=float(-20 * np.log10(RMS_MULTIPLE * u)))


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-5, rtol=1e-4),
    "fp16": rounding_tolerance(UNIT_ROUNDOFF["fp16"]),  # atol 0.03125, p99.9 0.0156, mean 0.00195, 48.2 dB
    "bf16": rounding_tolerance(UNIT_ROUNDOFF["bf16"]),  # atol 0.25, p99.9 0.125, mean 0.0156, 30.1 dB
    # measured on the demo G at 8,192 z: static max 1.07 / p99.9 0.33 / mean 4.9e-3, dynamic 0.97 / 0.25 / 2.7e-3
    "int8": Tolerance(atol=2.0, rtol=0.0, p999_abs=0.5, mean_abs=0.02, min_sqnr_db=12.0),
    # bench's tf32 rows: fp32 weights, matmul inputs rounded to TF32's 10-bit mantissa (fp16's unit
    # roundoff) with fp32 range and accumulation, so the same rounding bounds hold.
    "tf32": rounding_tolerance(UNIT_ROUNDOFF["fp16"]),
}
REL_FLOOR = 1e-3  # relative error divides by max(|ref|, REL_FLOOR) so near-zero pixels do not explode it
BATCH_SIZES = (1, 7, 1024)  # one, an odd size, a large one


class ParityError(ArtifactError):
    """An artifact that does not honour the contract or does not compute what its checkpoint computes."""

    exit_code = 1
    kind = "parity"

    def __init__(self, message: str, max_abs: float | None = None, max_rel: float | None = None):
        super().__init__(message)
        self.max_abs, self.max_rel = max_abs, max_rel

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": str(self), "max_abs": self.max_abs, "max_rel": self.max_rel}


class MetadataError(ParityError):
    kind = "metadata"  # wrong I/O names, latent size, source checkpoint, ...


class ShapeError(ParityError):
    kind = "shape"  # an input or output shape off the contract (N, latent) -> (N, 1, 28, 28)


class NonFiniteError(ParityError):
    kind = "nonfinite"  # NaN or Inf in the output


class ToleranceError(ParityError):
    kind = "tolerance"  # finite values further from eager than the dtype's tolerance


class ChecksumError(ParityError):
    kind = "checksum"  # the file is missing or its SHA-256 no longer matches the manifest


class LoadError(ParityError):
    kind = "load"  # the file cannot be opened as its format (truncated, not ONNX, ...)


@dataclass
class BatchResult:
    batch: int
    max_abs: float
    max_rel: float
    p999_abs: float
    nonfinite: int
    passed: bool
    sqnr_db: float | None = None  # null when out == ref exactly or ref is all zero


@dataclass
class ParityResult:
    """One candidate against the reference: per-batch numbers and every failure found."""

    name: str
    dtype: str
    tolerance: Tolerance
    batches: list[BatchResult] = field(default_factory=list)
    failures: list[ParityError] = field(default_factory=list)
    skipped: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    pooled: dict[str, Any] | None = None  # bulk stats over every checked batch, and its z (dtypes with bulk bounds)

    @property
    def passed(self) -> bool:
        return self.skipped is None and not self.failures and bool(self.batches)

    @property
    def acceptable(self) -> bool:
        """Passed, or only its numerical comparison was skipped; a skip never hides a failure found."""
        return not self.failures and (self.passed or self.skipped is not None)

    @property
    def max_abs(self) -> float:
        return max((b.max_abs for b in self.batches), default=float("nan"))

    @property
    def max_rel(self) -> float:
        return max((b.max_rel for b in self.batches), default=float("nan"))

    @property
    def p999_abs(self) -> float:
        if self.pooled is not None:
            return self.pooled["p999_abs"]
        return max((b.p999_abs for b in self.batches), default=float("nan"))

    @property
    def sqnr_db(self) -> float | None:
        """Over every checked batch where the bulk is judged, else the worst batch's; None for an exact match."""
        if self.pooled is not None:
            return self.pooled["sqnr_db"]
        return min((b.sqnr_db for b in self.batches if b.sqnr_db is not None), default=None)

    @property
    def nonfinite(self) -> int:
        return sum(b.nonfinite for b in self.batches)

    def summary(self) -> str:
        if self.skipped and not self.failures:
            return f"{self.name}: skipped ({self.skipped})"
        if self.passed:
            return f"{self.name}: pass ({self.dtype})  {self.figures()}"
        kinds = ", ".join(dict.fromkeys(f.kind for f in self.failures)) or "no batches checked"
        skipped = f" (values not compared: {self.skipped})" if self.skipped else ""
        return f"{self.name}: FAIL ({kinds}): {self.failures[0] if self.failures else ''}{skipped}"

    def figures(self) -> str:
        """The figures the verdict is made on, each beside its bound; the per-batch worst apart,
        since at batch 1 a p99.9 is one pixel and only the pooled figure is judged."""
        t = self.tolerance
        each = (f"max abs {self.max_abs:.2e} <= atol {t.atol:g}" if not t.rtol else
                f"max abs {self.max_abs:.2e}, max rel {self.max_rel:.2e} (each pixel within atol {t.atol:g} "
                f"+ rtol {t.rtol:g} x |ref|)")
        if self.pooled is None:
            return each
        p, bulk = self.pooled, []
        if t.p999_abs is not None:
            bulk.append(f"p99.9 {p['p999_abs']:.2e} <= {t.p999_abs:.3g}")
        if t.mean_abs is not None:
            bulk.append(f"mean {p['mean_abs']:.2e} <= {t.mean_abs:.3g}")
        if t.min_sqnr_db is not None:
            bulk.append("SQNR inf (exact)" if p["sqnr_db"] is None else f"SQNR {p['sqnr_db']:.1f} dB >= {t.min_sqnr_db:.3g} dB")
        worst = max(self.batches, key=lambda b: b.p999_abs)
        return (f"{each}; over all {p['z']:,} z: {', '.join(bulk)}  "
                f"(worst single batch: p99.9 {worst.p999_abs:.2e} at batch {worst.batch}, not judged alone)")

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if v != v else float(v)  # NaN -> null in JSON

        return {
            "name": self.name, "dtype": self.dtype, "passed": self.passed, "skipped": self.skipped,
            "tolerance": asdict(self.tolerance), "max_abs": num(self.max_abs), "max_rel": num(self.max_rel),
            "p999_abs": num(self.p999_abs), "sqnr_db": self.sqnr_db, "nonfinite": self.nonfinite, "pooled": self.pooled,
            "batches": [asdict(b) for b in self.batches], "failures": [f.to_dict() for f in self.failures],
            **self.meta,
        }

    def raise_if_failed(self) -> None:
        if self.failures:
            first = self.failures[0]
            raise type(first)(self.summary(), first.max_abs, first.max_rel)


def _abs_diff(ref: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """|out - ref| in float64, with non-finite outputs counted as exact (the element-wise check reports them)."""
    return (out.double() - ref.double()).abs().where(torch.isfinite(out), torch.zeros((), dtype=torch.float64))


def bulk_stats(ref: torch.Tensor, out: torch.Tensor, tol: Tolerance,
               diff: torch.Tensor | None = None) -> tuple[dict[str, float | None], list[str]]:
    """p99.9 and mean of |out - ref| and the SQNR, and the bounds of `tol` they break. `diff`:
    _abs_diff(ref, out) when the caller has it already."""
    diff = _abs_diff(ref, out) if diff is None else diff
    p999, mean = float(np.quantile(diff.flatten().numpy(), 0.999)), float(diff.mean())
    noise_power, signal_power = float(diff.square().sum()), float(ref.double().square().sum())
    # undefined (None) for an exact match or an all-zero reference: the absolute bounds judge those
    sqnr = float(10 * np.log10(signal_power / noise_power)) if noise_power > 0 and signal_power > 0 else None
    broken = []
    if tol.p999_abs is not None and p999 > tol.p999_abs:
        broken.append(f"p99.9 abs error {p999:.3e} > {tol.p999_abs:g}")
    if tol.mean_abs is not None and mean > tol.mean_abs:
        broken.append(f"mean abs error {mean:.3e} > {tol.mean_abs:g}")
    if tol.min_sqnr_db is not None and sqnr is not None and sqnr < tol.min_sqnr_db:
        broken.append(f"SQNR {sqnr:.1f} dB < {tol.min_sqnr_db:g} dB (error rms {10 ** (-sqnr / 20):.2f}x the output's)")
    return {"p999_abs": p999, "mean_abs": mean, "sqnr_db": sqnr, "z": int(ref.shape[0])}, broken


def compare(ref: torch.Tensor, out: torch.Tensor, tol: Tolerance, bulk: bool = True) -> tuple[BatchResult, list[ParityError]]:
    """Element-wise comparison of two float32 CPU image batches of the same shape, and (`bulk`)
    the tolerance's bounds on the error's bulk over this batch."""
    n = ref.shape[0]
    nonfinite = int((~torch.isfinite(out)).sum())
    diff = _abs_diff(ref, out)
    rel = diff / ref.double().abs().clamp_min(REL_FLOOR)
    max_abs, max_rel = float(diff.max()), float(rel.max())
    within = bool((diff <= tol.atol + tol.rtol * ref.double().abs()).all())
    stats, broken = bulk_stats(ref, out, tol, diff)
    p999, sqnr = stats["p999_abs"], stats["sqnr_db"]
    failures: list[ParityError] = []
    if nonfinite:
        failures.append(NonFiniteError(f"batch {n}: {nonfinite} NaN/Inf values in the output", max_abs, max_rel))
    if not within:
        failures.append(ToleranceError(
            f"batch {n}: max abs error {max_abs:.3e} (max rel {max_rel:.3e}) exceeds atol {tol.atol:g} + "
            f"rtol {tol.rtol:g}*|ref|", max_abs, max_rel))
    if bulk and broken:
        failures.append(ToleranceError(f"batch {n}: {'; '.join(broken)} (max abs {max_abs:.3e})", max_abs, max_rel))
    ok = not failures
    return BatchResult(n, max_abs, max_rel, p999, nonfinite, ok, sqnr), failures


def verify_runner(reference: Runner, candidate: Runner, batch_sizes: tuple[int, ...] = BATCH_SIZES, seed: int = 0,
                  atol: float | None = None, rtol: float | None = None, name: str | None = None) -> ParityResult:
    """Run both on the same fixed-seed z at each batch size; shapes first, then values.

    The tolerance defaults to TOLERANCES[candidate's dtype]; atol / rtol override it.
    """
    base = TOLERANCES.get(candidate.info.dtype, TOLERANCES["fp32"])
    tol = replace(base, atol=base.atol if atol is None else atol, rtol=base.rtol if rtol is None else rtol)
    result = ParityResult(name or candidate.name, candidate.info.dtype, tol)
    latent, img = reference.info.latent_dim, tuple(reference.info.img_shape)
    if candidate.info.latent_dim != latent or tuple(candidate.info.img_shape) != img:
        result.failures.append(ShapeError(
            f"declares z (N, {candidate.info.latent_dim}) -> (N, {', '.join(map(str, candidate.info.img_shape))}); "
            f"the checkpoint's contract is (N, {latent}) -> (N, {', '.join(map(str, img))})"))
        return result
    pooled: list[tuple[torch.Tensor, torch.Tensor]] = []
    for n in batch_sizes:
        z = noise.latent(n, seed, latent)
        ref = reference(z)
        try:
            out = candidate(z)
        except Exception as e:  # the contract allows this z, so a refusal is a contract (shape) violation
            msg = first_line(e)
            result.failures.append(ShapeError(f"batch {n}: the artifact fails on z of shape ({n}, {latent}): {msg}"))
            continue
        if tuple(out.shape) != tuple(ref.shape):
            result.failures.append(ShapeError(
                f"batch {n}: output shape {tuple(out.shape)}, the contract says {tuple(ref.shape)}"))
            continue
        # The bulk bounds judge every checked pixel at once: at batch 1 (784 pixels) a p99.9 is
        # the single worst pixel, which is what the element-wise bound is for.
        batch, failures = compare(ref, out, tol, bulk=False)
        result.batches.append(batch)
        result.failures.extend(failures)
        if tol.has_bulk_bounds:
            pooled.append((ref, out))
    if pooled:
        ref, out = (torch.cat(t) for t in zip(*pooled))
        stats, broken = bulk_stats(ref, out, tol)
        result.pooled = stats
        if broken:
            result.failures.append(ToleranceError(
                f"all {ref.shape[0]:,} z ({', '.join(str(b.batch) for b in result.batches)}): {'; '.join(broken)}",
                result.max_abs, result.max_rel))
    return result
