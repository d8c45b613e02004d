"""What a training run leaves behind besides the checkpoint: metrics.jsonl, sample grids, plots."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from gantool.checkpoint import atomic_write, atomic_write_text
from gantool.config import NORM_MEAN, NORM_STD

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    """Append-only JSON lines; on resume, lines past the checkpoint's step are dropped."""

    def __init__(self, path: Path):
        self.path = path

    def truncate_after(self, step: int) -> None:
        # Lines written after the last checkpoint (e.g. before a NaN stop) describe steps the
        # resumed run will redo; keep the log consistent with the weights.
        if not self.path.exists():
            return
        kept = [ln for ln in self.read() if ln.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a crash mid-append is not worth failing a run for
        return out


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] for image files (inverse of Normalize(0.5, 0.5))."""
    return (x.float() * NORM_STD + NORM_MEAN).clamp_(0.0, 1.0)


@torch.no_grad()
def save_grid(generator: torch.nn.Module, noise: torch.Tensor, path: Path, nrow: int = 8) -> Path:
    """G(noise) as one PNG grid, written atomically."""
    from torchvision.utils import save_image

    was_training = generator.training
    generator.eval()
    images = denormalize(generator(noise).cpu())
    generator.train(was_training)
    return atomic_write(path, lambda p: save_image(images, p, nrow=nrow, padding=2, format="png"))


def _plot(path: Path, series: list[tuple[str, list[float], list[float]]], ylabel: str, title: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(xs for _, xs, _ in series):
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, xs, ys in series:
        ax.plot(xs, ys, label=label, marker="o" if len(xs) < 30 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return path


def loss_labels(cfg: Any = None, g_classes: int = 0) -> tuple[str, str]:
    """What d_loss and g_loss hold for this run's options (the trainer's terms, in nats);
    `g_classes`: G reads a class from z and is asked to draw it (AC-GAN)."""
    smooth = getattr(cfg, "label_smoothing", 0) or 0
    d, g = f"D: BCE(real, {1 - smooth:g}) + BCE(fake, 0)", "G: BCE(D(G(z)), 1)"
    if cfg is not None and getattr(cfg, "top_k", 1) < 1:
        g += " on the top-k samples"
    if cfg is not None and getattr(cfg, "class_weight", 0):
        d += f" + {cfg.class_weight:g} CE(class head, labels)"
        g += (f" + {cfg.class_weight:g} CE(class head, z's class)" if g_classes
              else f" + {cfg.class_weight:g} (sample entropy - batch entropy), can go < 0")
    if cfg is not None and getattr(cfg, "r1_gamma", 0):
        d += f" + {cfg.r1_gamma:g}/2 R1"
    return d, g


def plot_losses(records: list[dict[str, Any]], path: Path, cfg: Any = None, g_classes: int = 0) -> Path | None:
    """loss.png: the logged window means of d_loss and g_loss, labelled with the terms they sum."""
    rows = [r for r in records if "d_loss" in r]
    steps = [r["step"] for r in rows]
    d_label, g_label = loss_labels(cfg, g_classes)
    return _plot(path, [(d_label, steps, [r["d_loss"] for r in rows]),
                        (g_label, steps, [r["g_loss"] for r in rows])],
                 "loss (nats, mean over each log window)", "GAN losses")


def plot_fid(records: list[dict[str, Any]], path: Path) -> Path | None:
    """Training-time evals: FID / floor in each feature space (raw FID when no floor was logged), and
    precision / recall beside the real digits' values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [(r["step"], r["eval"]) for r in records if "fid" in r.get("eval", {})]
    if not evals:
        return None
    steps, rows = [st for st, _ in evals], [e for _, e in evals]
    key = "fid_over_floor" if all("fid_over_floor" in e for e in rows) else "fid"
    others = sorted({k[:-len("_fid_over_floor")] for e in rows for k in e if k.endswith("_fid_over_floor")
                     and k != "fid_over_floor"}) if key == "fid_over_floor" else []
    spaces = [("", "cnn")] + [(f"{o}_", o) for o in others]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    marker = "o" if len(steps) < 30 else None
    for (prefix, name), style in zip(spaces, ("-", "--", ":", "-.")):
        left.plot(steps, [e.get(f"{prefix}{key}", math.nan) for e in rows], style, marker=marker,
                  label=f"{name} features")
        for metric, colour in (("precision", "tab:blue"), ("recall", "tab:orange")):
            if any(f"{prefix}{metric}" in e for e in rows):
                right.plot(steps, [e.get(f"{prefix}{metric}", math.nan) for e in rows], style, color=colour,
                           marker=marker, label=f"{metric} ({name})")
                if f"{prefix}real_{metric}" in rows[-1]:  # held-out real digits: the level to reach
                    right.axhline(rows[-1][f"{prefix}real_{metric}"], color=colour, ls=style, alpha=0.35, lw=1)
    left.set(xlabel="step", ylabel="FID / real-vs-real floor" if key == "fid_over_floor" else "FID",
             title="FID over training")
    right.set(xlabel="step", ylabel="share of samples / of real digits", ylim=(0, 1.05),
              title="precision (fidelity), recall (diversity); thin: real digits")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return path


def format_scores(scores: dict[str, float]) -> str:
    """The training-time eval in one line: FID (x floor, per space), precision/recall beside real's, classes."""
    s, parts = scores, []
    if "fid" in s:
        ratios = [f"{s['fid_over_floor']:.1f}x floor"] if "fid_over_floor" in s else []
        ratios += [f"{k[:-len('_fid_over_floor')]} {v:.1f}x" for k, v in s.items()
                   if k.endswith("_fid_over_floor") and k != "fid_over_floor"]
        parts.append(f"FID {s['fid']:.4g}" + (f" ({'; '.join(ratios)})" if ratios else ""))
    for key in ("precision", "recall"):
        if key in s:
            parts.append(f"{key} {s[key]:.3f}" + (f" (real {s[f'real_{key}']:.3f})" if f"real_{key}" in s else ""))
    for key, fmt in (("recognisability", "{:.1%}"), ("class_entropy", "{:.3f}")):
        if key in s:
            parts.append(f"{key.replace('_', ' ')} {fmt.format(s[key])}")
    return ", ".join(parts)
