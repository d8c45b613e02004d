"""scripts/recipe_sweep.py: the table and the precision/recall plot from results.jsonl, its variants
are valid recipe overrides, and an unknown variant is one line."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "recipe_sweep.py"


def _module():
    spec = importlib.util.spec_from_file_location("recipe_sweep", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(variant: str, seed: int, recall: float) -> dict:
    space = {"fid_over_floor": 3.0, "precision": 0.7, "recall": recall, "density": 0.6, "coverage": 0.5,
             "real_recall": 0.86, "real_precision": 0.84}
    return {"variant": variant, "seed": seed, "overrides": {}, "steps": 9000, "train_wall_s": 270.0, "threads": 2,
            "scores": {"recognisability": 0.89, "class_entropy": 0.994, "min_class_share": 0.08,
                       "targets_met": {"recognisability": False, "class_entropy": True},
                       "spaces": {"cnn": space, "mlp": dict(space, fid_over_floor=4.0)}}}


def test_table_and_frontier_plot_from_results(tmp_path):
    rows = [_row("tuned-100", 0, 0.04), _row("mlp-d", 0, 0.57)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--plot", str(tmp_path / "f.png")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("| tuned-100") or line.startswith("| mlp-d")]
    assert len(lines) == 2 and "| 0.040 (0.860) |" in lines[0]
    assert "3.0x, 4.0x" in lines[1] and "class_entropy" in lines[1]
    png = (tmp_path / "f.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_every_variant_is_a_valid_recipe_override():
    from gantool.train.options import resolve_configs

    mod = _module()
    for name, overrides in mod.VARIANTS.items():
        o = dict(overrides)
        recipe = o.pop("recipe", "tuned")
        o = (mod.BASE if recipe == "tuned" else {}) | o
        model_cfg, cfg = resolve_configs(recipe, model=o.pop("model", None), **o)
        assert cfg.epochs == overrides.get("epochs", cfg.epochs) and cfg.recipe == recipe, name


def test_unknown_variant_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--variants", "nope", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "unknown variant(s) nope" in r.stderr.splitlines()[-1]
