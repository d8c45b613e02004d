"""compare_train_speed: a JSON-able report of both loops, ratios, and honest 'unavailable' rows."""
from __future__ import annotations

import json

import pytest
import torch

from gantool.bench import train_speed as train_bench
from gantool.errors import ConfigError
from gantool.bench.train_speed import compare_train_speed, format_report


pytestmark = pytest.mark.usefixtures("one_thread")


def test_report_is_json_and_ratio_is_consistent(monkeypatch):
    monkeypatch.setattr(train_bench, "supports_dtype", lambda dev, dt: str(dt) != "torch.float16")
    r = compare_train_speed(device="cpu", precisions=("fp32", "fp16"), batch_size=20, steps=2, warmup=1, repeats=2)
    json.dumps(r)
    seed, ours = r["seed_loop"], r["gantool"]["fp32"]
    assert r["device"] == "cpu" and r["batch_size"] == 20 and r["dataset"] == "mnist-5k"
    assert len(seed["runs_samples_per_s"]) == 2 and seed["samples_per_s"] > 0
    assert ours["ratio"] == pytest.approx(ours["samples_per_s"] / seed["samples_per_s"])
    assert r["gantool"]["fp16"] == {"unavailable": "fp16 autocast is not supported on cpu"}
    assert set(r["versions"]) == {"gantool", "torch", "python"}
    text = format_report(r)
    assert "seed loop" in text and "x the seed loop" in text and "fp16: unavailable" in text


def test_bad_arguments():
    with pytest.raises(ConfigError):
        compare_train_speed(device="cpu", steps=0)
    with pytest.raises(ConfigError, match="unknown precision"):
        compare_train_speed(device="cpu", precisions=("fp8",), batch_size=20, steps=1, warmup=0, repeats=1)
    with pytest.raises(ConfigError, match="larger than the dataset"):
        compare_train_speed(device="cpu", batch_size=100_000)
