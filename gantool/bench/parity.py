"""Parity of a bench row: its timed output (first call, or a CUDA graph's replay) against eager fp32 on
the same z with gantool.verify.compare's per-dtype tolerance; a small batch's bulk bounds judged on an
untimed parity batch of >= 64 z."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch

from gantool import noise
from gantool.runners import Runner

if TYPE_CHECKING:
    from gantool.bench.timing import Measured

BULK_MIN_SAMPLES = 64  # 50,176 pixels
PARITY_ROWS = 2048  # large batches: parity on the first and last 2048 samples (rows are independent)


def parity_rows(batch: int) -> torch.Tensor | None:
    """Indices of the samples whose output is checked; None = all of them."""
    if batch <= 2 * PARITY_ROWS:
        return None
    return torch.cat([torch.arange(PARITY_ROWS), torch.arange(batch - PARITY_ROWS, batch)])


def compare(reference: torch.Tensor, out: torch.Tensor, dtype: str,
            bulk: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, Any]:
    """A backend's first output vs eager fp32 on the same z, with gantool.verify.compare's per-dtype
    tolerance. `bulk`: (eager, backend) outputs of a parity batch (parity_batch) that judges the
    bulk bounds for a batch too small to judge them itself."""
    from gantool.verify.compare import TOLERANCES, bulk_stats
    from gantool.verify.compare import compare as parity_compare

    tol = TOLERANCES[dtype]  # tf32 has its own (gantool.verify.compare)
    if tuple(out.shape) != tuple(reference.shape):
        return {"passed": False, "atol": tol.atol, "error": f"output shape {tuple(out.shape)}, eager gives {tuple(reference.shape)}"}
    # the bulk bounds need enough pixels to mean anything: below BULK_MIN_SAMPLES a p99.9 is the
    # single worst pixel, so a small batch is judged on its parity batch's bulk instead
    own = out.shape[0] >= BULK_MIN_SAMPLES
    res, failures = parity_compare(reference, out, tol, bulk=own)
    errors = [str(f) for f in failures]
    d = {"max_abs_err": res.max_abs, "max_rel_err": res.max_rel, "p999_abs_err": res.p999_abs,
         "sqnr_db": res.sqnr_db, "atol": tol.atol,
         "rtol": tol.rtol, "nonfinite": res.nonfinite}
    if bulk is not None and not own and tol.has_bulk_bounds:
        stats, broken = bulk_stats(*bulk, tol)
        d["bulk"] = stats
        if broken:
            errors.append(f"parity batch of {bulk[0].shape[0]} z (untimed calls at batch {out.shape[0]}): "
                          f"{'; '.join(broken)}")
    d["passed"] = not errors
    if errors:
        d["error"] = errors[0]
    return d


def parity_batch(runner: Runner, reference: Callable[[torch.Tensor], torch.Tensor], batch: int, dtype: str,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """For a batch below BULK_MIN_SAMPLES of a dtype with bulk bounds: eager's and the runner's
    outputs over ceil(64 / batch) untimed calls at this batch size (the shape the row runs, which
    graph and engine backends may be fixed to), judged as one batch of >= 64 z. None otherwise."""
    from gantool.verify.compare import TOLERANCES

    if batch >= BULK_MIN_SAMPLES or not TOLERANCES[dtype].has_bulk_bounds:
        return None
    calls = -(-BULK_MIN_SAMPLES // batch)
    z = noise.latent(calls * batch, seed + 1, runner.info.latent_dim)  # not the timed z's: new pixels
    # call by call on both sides: a conditional G's default labels (row i: class i mod n) are per call
    return torch.cat([reference(c) for c in z.split(batch)]), torch.cat([runner(c) for c in z.split(batch)])


def check_parity(ref: torch.Tensor, m: Measured, idx: torch.Tensor | None, batch: int, precision: str,
                 bulk: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, Any]:
    """Eager fp32 against what is timed: a graph backend's replayed output (and its first,
    pre-capture call too); any other backend's first call. `bulk`: parity_batch's outputs."""
    pick = lambda out: out if idx is None or out.shape[0] != batch else out[idx]  # noqa: E731
    if m.replayed is None:
        return {**compare(ref, pick(m.first), precision, bulk), "checked": "first call"}
    p = {**compare(ref, pick(m.replayed), precision, bulk), "checked": "replayed CUDA graph"}
    first = compare(ref, pick(m.first), precision)
    if p["passed"] and not first["passed"]:
        p.update(passed=False, error=f"first (pre-capture) call: {first.get('error') or first['max_abs_err']}")
    return p
