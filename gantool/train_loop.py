"""The epoch loop around Trainer.train_step: shuffling, log windows, checkpoints, grids, evals."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from gantool.checkpoint import CHECKPOINT_NAME
from gantool.train import RunResult, Trainer, checkpoint, diverged
from gantool.train_log import MetricsLog, format_scores, plot_fid, plot_losses, save_grid


class _Window:
    """Per-step stats stay on the device in a (log_every, 4) buffer; read once a window."""

    def __init__(self, trainer: Trainer):
        self.t = trainer
        self.buf = torch.zeros(trainer.cfg.log_every, 4, device=trainer.device)
        self.n = 0
        self.t0 = time.perf_counter()
        self.last: dict[str, float] = {}
        self.last_good: int | None = None  # step of the last checkpoint written from finite losses

    def add(self, stats: torch.Tensor) -> None:
        self.buf[self.n] = stats
        self.n += 1

    def pause(self) -> float:
        return time.perf_counter()

    def resume(self, since: float) -> None:
        # Checkpoints, grids and evals are not training time: keep them out of samples/s.
        self.t0 += time.perf_counter() - since

    def flush(self, metrics: MetricsLog, out: Path) -> dict[str, float] | None:
        """Host sync: check every step of the window is finite, log the window mean."""
        if self.n == 0:
            return None
        vals = self.buf[: self.n].cpu()  # the one sync per window
        elapsed = time.perf_counter() - self.t0
        first_step = self.t.step - self.n + 1
        bad = (~torch.isfinite(vals[:, :2])).any(dim=1).nonzero()
        if len(bad):
            raise diverged(first_step + int(bad[0]), out, self.last_good)
        mean = vals.mean(dim=0).tolist()
        rec = {"step": self.t.step, "epoch": self.t.epoch + (1 if self.t.epoch_step else 0),
               "d_loss": mean[0], "g_loss": mean[1], "d_x": mean[2], "d_g_z": mean[3],
               "samples_per_s": self.n * self.t.cfg.batch_size / max(elapsed, 1e-9)}
        metrics.append(rec)
        self.last, self.n, self.t0 = rec, 0, time.perf_counter()
        return rec


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(BarColumn(bar_width=20), MofNCompleteColumn(), TextColumn("{task.description}"),
                    TimeRemainingColumn(), console=console,
                    disable=not (enabled and console.is_terminal), transient=False)


def _summary(rec: dict[str, float]) -> str:
    return (f"d_loss {rec['d_loss']:.4f}  g_loss {rec['g_loss']:.4f}  D(x) {rec['d_x']:.3f}  "
            f"D(G(z)) {rec['d_g_z']:.3f}  {rec['samples_per_s']:,.0f} samples/s")


def _short(rec: dict[str, float]) -> str:  # fits an 80-column terminal beside the bar
    return (f"d {rec['d_loss']:.3f} g {rec['g_loss']:.3f} D(x) {rec['d_x']:.2f} "
            f"D(G(z)) {rec['d_g_z']:.2f} {rec['samples_per_s']:,.0f}/s")


def run_loop(t: Trainer, out: Path, metrics: MetricsLog, stop, log: Callable[[str], None], progress: bool) -> RunResult:
    cfg, B = t.cfg, t.cfg.batch_size
    n = t.images.shape[0]
    per_epoch = n // B  # the last partial batch is dropped (PacGAN packs and fixed targets need full batches)
    total = t.total_steps  # cfg.epochs * per_epoch, the span lr_decay's schedule is laid over
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    win = _Window(t)
    win.last_good = t.step if t.step else None
    evaluator, evals = None, []
    samples = out / "samples"
    interrupted = False
    source = t.provenance.get("dataset", cfg.dataset)
    if t.provenance.get("fallback"):
        source += f" (FALLBACK: {cfg.dataset} unavailable)"
    log(f"training {source} ({n} images, {per_epoch} steps/epoch) on {t.device} {cfg.precision}, "
        f"recipe {cfg.recipe}, {cfg.epochs} epochs, batch {B} -> {out}")
    with _progress(progress) as bar:
        task = bar.add_task("", total=total, completed=t.step)
        while t.epoch < cfg.epochs and t.step < total and not interrupted:
            # The shuffle generator's state at the start of the epoch is what a checkpoint stores,
            # so a resume mid-epoch redraws the same permutation and skips the batches done.
            t.epoch_shuffle_state = t.shuffle.get_state()
            perm = torch.randperm(n, generator=t.shuffle).to(t.device)
            for i in range(t.epoch_step, per_epoch):
                win.add(t.train_on(perm[i * B:(i + 1) * B]))
                t.step += 1
                t.epoch_step = i + 1
                if win.n == cfg.log_every:
                    rec = win.flush(metrics, out)
                    bar.update(task, completed=t.step, description=_short(rec))
                if cfg.sample_every and t.step % cfg.sample_every == 0:
                    since = win.pause()
                    save_grid(t.sampler, t.fixed_noise, samples / f"step-{t.step:06d}.png")
                    win.resume(since)
                if stop.set or t.step >= total:
                    interrupted = stop.set
                    break
            bar.update(task, completed=t.step)
            since = win.pause()
            win.flush(metrics, out)  # also the NaN check: never checkpoint a diverged state
            if t.epoch_step == per_epoch:
                t.epoch, t.epoch_step = t.epoch + 1, 0
                t.epoch_shuffle_state = t.shuffle.get_state()
            checkpoint(t, out)
            win.last_good = t.step
            if t.epoch_step == 0 and not cfg.sample_every:
                save_grid(t.sampler, t.fixed_noise, samples / f"step-{t.step:06d}.png")
            if bar.disable and win.last and t.epoch_step == 0:  # no live bar: one line an epoch
                log(f"epoch {t.epoch}/{cfg.epochs} step {t.step}: {_summary(win.last)}")
            if cfg.eval_every and t.epoch_step == 0 and t.epoch % cfg.eval_every == 0:
                evaluator = evaluator or _make_evaluator(t)
                evals.append(_evaluate(t, evaluator, metrics, log))
            win.resume(since)
    save_grid(t.sampler, t.fixed_noise, samples / "final.png")
    records = metrics.read()
    plot_losses(records, out / "loss.png")
    if any("fid" in r.get("eval", {}) for r in records):
        plot_fid(records, out / "fid.png")
    if interrupted:
        log(f"interrupted at step {t.step}; checkpoint saved; continue with --resume {out}")
    return RunResult(out=out, checkpoint=out / CHECKPOINT_NAME, step=t.step, epoch=t.epoch,
                     interrupted=interrupted, last=win.last, evals=evals)


def _make_evaluator(t: Trainer):
    from gantool.quality import TrainingEvaluator  # lazy: quality pulls in the classifier and torchmetrics

    return TrainingEvaluator(dataset=t.cfg.dataset, data_dir=t.cfg.data_dir, device=t.device)


def _evaluate(t: Trainer, evaluator, metrics: MetricsLog, log: Callable[[str], None]) -> dict[str, Any]:
    g = t.sampler
    was_training = g.training
    g.eval()
    with torch.no_grad():
        scores = {k: float(v) for k, v in evaluator(g).items()}
    g.train(was_training)
    rec = {"step": t.step, "epoch": t.epoch, "eval": scores}
    metrics.append(rec)
    log(f"eval epoch {t.epoch} step {t.step}: {format_scores(scores)}")
    return rec
