"""Sample statistics for bench rows: median with a distribution-free 95% CI, IQR, guarded percentiles."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

CONFIDENCE = 0.95
_Z = 1.959963984540054  # two-sided 95% normal quantile


def median_ci_ranks(n: int, confidence: float = CONFIDENCE) -> tuple[int, int] | None:
    """0-based ranks (lo, hi) of the sorted samples bracketing the median with >= `confidence`.

    Distribution-free: the number of samples below the true median is Binomial(n, 1/2), so
    [x(j), x(n+1-j)] (1-based) covers it with probability 1 - 2 P(Bin <= j-1): exact for n <= 1000,
    normal approximation above. None when n is too small for any interval to reach it (n < 6).
    """
    alpha = 1 - confidence
    if n < 6:
        return None
    if n > 1000:
        j = int(math.floor(n / 2 - _Z * math.sqrt(n) / 2))
        return max(0, j - 1), min(n - 1, n - j)
    # P(Bin(n, 1/2) <= k), accumulated; the largest j with 2 * P(Bin <= j - 1) <= alpha
    cdf, best = 0.0, None
    for k in range(n // 2 + 1):
        cdf += math.comb(n, k) * 0.5 ** n
        if 2 * cdf > alpha:
            break
        best = k + 1  # 1-based rank of the lower bound
    if best is None:
        return None
    return best - 1, n - best


def percentile_min_n(p: float) -> int:
    """Fewest samples for percentile p to rest on at least one sample at or beyond it: p99 -> 100."""
    return 1 if p <= 50 else int(math.ceil(100 / (100 - p) - 1e-9))


def summarize(times: Sequence[float], percentiles: Sequence[float] = (50, 90, 99),
              confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Seconds in -> n, median, CI, IQR, min, mean and the requested percentiles (None with a reason
    where n is too small to estimate them)."""
    a = np.sort(np.asarray(times, dtype=float))
    n = len(a)
    med = float(np.median(a))
    ranks = median_ci_ranks(n, confidence)
    lo, hi = (float(a[ranks[0]]), float(a[ranks[1]])) if ranks else (None, None)
    q1, q3 = np.percentile(a, [25, 75]) if n else (math.nan, math.nan)
    pct: dict[str, float | None] = {}
    why: dict[str, str] = {}
    for p in percentiles:
        key = f"p{p:g}"
        need = percentile_min_n(p)
        if n >= need:
            pct[key] = float(np.percentile(a, p))
        else:
            pct[key] = None
            why[key] = f"n={n} < {need} samples"
    return {"n": n, "median": med, "ci_low": lo, "ci_high": hi,
            "ci_rel": None if lo is None or med <= 0 else max(med - lo, hi - med) / med,
            "iqr": float(q3 - q1), "min": float(a[0]), "mean": float(a.mean()),
            "percentiles": pct, "percentile_notes": why}


def ci_rel(times: Sequence[float], confidence: float = CONFIDENCE) -> float | None:
    """Half-width of the median's CI relative to the median (the stopping rule's quantity)."""
    ranks = median_ci_ranks(len(times), confidence)
    if ranks is None:
        return None
    a = np.sort(np.asarray(times, dtype=float))
    med = float(np.median(a))
    return max(med - a[ranks[0]], a[ranks[1]] - med) / med if med > 0 else None
