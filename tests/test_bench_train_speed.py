"""compare_train_speed: a JSON-able report of both loops, ratios, and honest 'unavailable' rows."""
from __future__ import annotations

import json
import statistics

import pytest
import torch

from gantool.bench import train_speed as train_bench
from gantool.errors import ConfigError
from gantool.bench.train_speed import compare_train_speed, format_report, paired_ratio, round_orders, run_rounds


pytestmark = pytest.mark.usefixtures("one_thread")


def test_report_is_json_and_ratio_is_consistent(monkeypatch):
    monkeypatch.setattr(train_bench, "supports_dtype", lambda dev, dt: str(dt) != "torch.float16")
    r = compare_train_speed(device="cpu", precisions=("fp32", "fp16"), batch_size=20, steps=2, warmup=1, repeats=2)
    json.dumps(r)
    seed, ours = r["seed_loop"], r["gantool"]["fp32"]
    assert r["device"] == "cpu" and r["batch_size"] == 20 and r["dataset"] == "mnist-5k"
    assert len(seed["runs_samples_per_s"]) == 2 and seed["samples_per_s"] > 0
    # the ratio is paired: the median of each round's gantool/seed, not a ratio of the two medians
    per_round = [g / s for g, s in zip(ours["runs_samples_per_s"], seed["runs_samples_per_s"])]
    assert ours["ratio"] == pytest.approx(statistics.median(per_round))
    assert ours["ratio_ci"] == {"median": ours["ratio"], "ci_low": None, "ci_high": None, "n": 2}  # 2 < 6 rounds
    assert r["order"] == {"kind": "interleaved", "seed": 0, "rounds": round_orders(["seed", "fp32"], 2, 0)}
    assert r["gantool"]["fp16"] == {"unavailable": "fp16 autocast is not supported on cpu"}
    assert set(r["versions"]) == {"gantool", "torch", "python"}
    text = format_report(r)
    assert "seed loop" in text and "x the seed loop, 2 paired rounds: too few for a 95% CI" in text
    assert "fp16: unavailable" in text


class DriftingMachine:
    """A fake clock on a machine that slows down linearly: work w takes w * (1 + now / 60) seconds,
    so by the end of the runs below everything is ~4x slower than at their start."""

    def __init__(self):
        self.now = 0.0

    def loop(self, work: float):
        def run() -> None:
            self.now += work * (1 + self.now / 60)

        return run


def test_paired_rounds_give_the_true_ratio_on_a_drifting_machine():
    truth = 2.0  # the seed loop does twice gantool's work a slice
    m = DriftingMachine()
    loops = {"seed": m.loop(2.0), "fp32": m.loop(2.0 / truth)}
    times = run_rounds(loops, round_orders(list(loops), 30, seed=0), clock=lambda: m.now)
    paired = paired_ratio(times["seed"], times["fp32"])
    assert paired["median"] == pytest.approx(truth, rel=0.03)
    assert paired["ci_low"] <= truth * 1.03 and paired["ci_high"] >= truth * 0.97 and paired["n"] == 30
    # A fixed order (seed, then gantool, every round) puts the drift inside each round into every
    # ratio alike: its interval is tight and misses the truth.
    m = DriftingMachine()
    loops = {"seed": m.loop(2.0), "fp32": m.loop(2.0 / truth)}
    fixed = paired_ratio(*run_rounds(loops, [["seed", "fp32"]] * 30, clock=lambda: m.now).values())
    assert fixed["ci_high"] < truth
    # The same machine timed loop by loop (every seed slice, then every gantool slice): the drift
    # between the two halves reads as a speed difference.
    m = DriftingMachine()
    loops = {"seed": m.loop(2.0), "fp32": m.loop(2.0 / truth)}
    seq = run_rounds(loops, [["seed"]] * 30 + [["fp32"]] * 30, clock=lambda: m.now)
    assert statistics.median(seq["seed"]) / statistics.median(seq["fp32"]) < 0.8 * truth


def test_round_orders_are_fresh_each_round_and_replay_from_the_seed():
    names = ["seed", "fp32", "bf16"]
    orders = round_orders(names, 40, seed=7)
    assert orders == round_orders(names, 40, seed=7)
    assert orders != round_orders(names, 40, seed=8)
    assert all(sorted(o) == sorted(names) for o in orders)
    assert len({tuple(o) for o in orders}) == 6  # every order of three turns up in 40 rounds


def test_run_rounds_times_each_slice_in_the_rounds_order():
    m, ran = DriftingMachine(), []
    loops = {name: (lambda name=name: (ran.append(name), m.loop(1.0)())) for name in ("a", "b")}
    times = run_rounds(loops, [["b", "a"], ["a", "b"]], clock=lambda: m.now)
    assert ran == ["b", "a", "a", "b"]
    assert times["b"][0] == pytest.approx(1.0) and times["a"][0] == pytest.approx(1 + 1 / 60)


def test_paired_ratio_of_known_rounds_has_the_known_interval():
    # per-round ratios 1.0, 1.1, ..., 1.9 in a shuffled order, each round at a different absolute
    # speed (pairing cancels it); n = 10: the 95 % interval is the 2nd..9th smallest (ranks 1 and 8)
    ratios = [1.3, 1.0, 1.9, 1.5, 1.1, 1.7, 1.2, 1.8, 1.4, 1.6]
    gantool = [0.5 * (1 + i) for i in range(10)]
    seed = [r * t for r, t in zip(ratios, gantool)]
    got = paired_ratio(seed, gantool)
    assert got == pytest.approx({"median": 1.45, "ci_low": 1.1, "ci_high": 1.8, "n": 10})
    assert paired_ratio(seed[:5], gantool[:5])["ci_low"] is None  # 5 rounds cannot reach 95 %
    with pytest.raises(ValueError):
        paired_ratio(seed, gantool[:9])  # rounds must pair


def test_format_report_prints_the_interval():
    v = {"samples_per_s": 1000.0, "ratio": 2.0, "ratio_ci": {"median": 2.0, "ci_low": 1.9, "ci_high": 2.1, "n": 15}}
    r = {"device": "cpu", "device_name": "x", "batch_size": 100, "dataset": "mnist-5k",
         "seed_loop": {"samples_per_s": 500.0}, "gantool": {"fp32": v}}
    assert "gantool fp32: 1,000 samples/s (2.00x the seed loop, 95% CI 1.90-2.10x over 15 paired rounds)" in format_report(r)
    old = {**r, "gantool": {"fp32": {"samples_per_s": 1000.0, "ratio": 2.0}}}  # a report from before issue 24
    assert "(2.00x the seed loop)" in format_report(old)


def test_bad_arguments():
    with pytest.raises(ConfigError):
        compare_train_speed(device="cpu", steps=0)
    with pytest.raises(ConfigError, match="unknown precision"):
        compare_train_speed(device="cpu", precisions=("fp8",), batch_size=20, steps=1, warmup=0, repeats=1)
    with pytest.raises(ConfigError, match="larger than the dataset"):
        compare_train_speed(device="cpu", batch_size=100_000)
