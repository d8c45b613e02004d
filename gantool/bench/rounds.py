"""Interleaved rounds (issue 24): every row of one batch size timed a short slice per round, in a fresh
seeded random order each round, so a machine that drifts slows every row alike; and the paired ratio of
each row to the reference row, round by round, with its own 95 % interval.

Timing row A's repeats and then row B's turns a drift of the machine between the two into a speed
difference between backends. Google Benchmark's --benchmark_enable_random_interleaving does the same.

    rounds = interleave(timers, stop, seed=0)       # timers: gantool.bench.timing.Timer, warmed up
    paired_ratio(rounds, ref=0, row=2)              # {"median": 1.41, "ci_low": 1.38, "ci_high": 1.45, ...}
"""
from __future__ import annotations

import random
import statistics
import time
from typing import Any, Callable, Sequence

from gantool.bench.stats import median_ci_ranks

SLICE_S = 0.1  # a row's share of one round: at least this long ...
SLICE_MIN_CALLS = 3  # ... and at least this many timed samples,
REWARM_CALLS = 1  # after one untimed call: the row before it left its caches and thread pool behind
MIN_ROUNDS = 10  # enough paired rounds for the ratio's 95 % interval (>= 6) to be worth reading


def round_order(n: int, seed: int, r: int) -> list[int]:
    """Round r's order of the n rows: a permutation from (seed, r) alone, so a run can be replayed."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + r).shuffle(order)
    return order


def interleave(timers: Sequence[Any], stop: Any, seed: int = 0, slice_s: float = SLICE_S,
               min_calls: int = SLICE_MIN_CALLS, clock: Callable[[], float] = time.perf_counter,
               max_rounds: int = 100_000, min_rounds: int = MIN_ROUNDS,
               rewarm: int = REWARM_CALLS) -> list[dict[str, Any]]:
    """Rounds until every timer's samples satisfy `stop` (gantool.bench.timing.StopRule, judged on its
    whole sample and the seconds it spent) and min_rounds ran, or the cap. Each round: a fresh order,
    one slice per row (after `rewarm` untimed calls).
    Returns the rounds: {"round", "order", "median_s": [per row, that slice's median seconds a call]}."""
    rounds: list[dict[str, Any]] = []
    enough = lambda new, elapsed: len(new) >= min_calls and elapsed >= slice_s  # noqa: E731
    if stop.repeats:  # exactly `repeats` samples: one a round
        enough = lambda new, elapsed: len(new) >= 1  # noqa: E731
    while len(rounds) < max_rounds:
        order = round_order(len(timers), seed, len(rounds))
        medians: list[float | None] = [None] * len(timers)
        for i in order:  # every row every round, done or not, so each round pairs all of them
            medians[i] = statistics.median(timers[i].take(enough, rewarm))
        rounds.append({"round": len(rounds), "order": order, "median_s": medians})
        if all(_done(stop, t) for t in timers) and (len(rounds) >= min_rounds or stop.repeats):
            break
    return rounds


def _done(stop: Any, timer: Any) -> bool:
    """The stop rule on a timer's whole sample and the seconds it spent, checked now."""
    return stop.done(timer.times, timer.elapsed, every_call=True)


def paired_ratio(rounds: list[dict[str, Any]], ref: int, row: int) -> dict[str, Any] | None:
    """Speed of `row` over `ref` (ref's time / row's time, > 1 = faster) from the rounds where both
    took a slice: the median of the per-round ratios and its distribution-free 95 % interval."""
    ratios = [r["median_s"][ref] / r["median_s"][row] for r in rounds
              if r["median_s"][ref] and r["median_s"][row]]
    return ratio_summary(ratios)


def ratio_summary(ratios: Sequence[float]) -> dict[str, Any] | None:
    """Median, 95 % CI (order statistics, as for a row's median) and n of per-round ratios."""
    if not ratios:
        return None
    a = sorted(ratios)
    ranks = median_ci_ranks(len(a))
    lo, hi = (a[ranks[0]], a[ranks[1]]) if ranks else (None, None)
    return {"median": statistics.median(a), "ci_low": lo, "ci_high": hi, "n": len(a)}
