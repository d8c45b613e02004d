"""The epoch loop around Trainer.train_step: shuffling, log windows, checkpoints, grids, evals."""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from gantool.checkpoint import CHECKPOINT_NAME, model_config_of, save_checkpoint
from gantool.data import load_dataset
from gantool.distributed import Dist
from gantool.errors import CheckpointError, ConfigError, TrainingDiverged
from gantool.config import ModelConfig, TrainConfig
from gantool.train.options import default_out, load_resume, prepare_out, validate
from gantool.train.trainer import RunResult, Trainer
from gantool.train.log import METRICS_NAME, MetricsLog, format_scores, plot_fid, plot_losses, save_grid


def train(
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> RunResult:
    """Train (or resume) one run into `out`. Library entry point behind `gantool train`.

    Under torchrun every rank runs this: --batch-size is the global batch, each rank trains on its
    share with DDP, and rank 0 alone logs and writes into `out`."""
    dist = Dist.from_env()
    if not dist.is_main:
        log, progress = (lambda msg: None), False
    payload = None
    if resume is not None:
        payload = load_resume(resume)
        ckpt_model = model_config_of(payload)
        if ckpt_model != model_cfg:
            raise CheckpointError(f"cannot resume from {resume}: its architecture {ckpt_model} differs from {model_cfg}")
    validate(model_cfg, cfg, world=dist.world)
    device = dist.device(cfg.device)
    data = load_dataset(cfg.dataset, cfg.data_dir)
    if data.provenance.get("fallback"):
        log(f"WARNING: {data.provenance.get('fallback_reason')}; training on the bundled mnist-5k subset instead")
    n = min(len(data), cfg.limit) if cfg.limit else len(data)
    if cfg.batch_size > n:
        raise ConfigError(f"--batch-size {cfg.batch_size} is larger than the dataset ({n} images)")
    if model_cfg.d_classes and int(data.labels.max()) >= model_cfg.d_classes:
        raise ConfigError(f"{cfg.dataset} has labels up to {int(data.labels.max())} but D's class head "
                          f"has only {model_cfg.d_classes} classes (d_classes)")
    dist.init(device)
    try:
        if out is None:  # rank 0's clock names the run for every rank
            out = dist.broadcast(_run_dir(resume) if resume is not None else default_out(cfg))
        # Resuming may write into the resumed run's own directory; any other --out must be free.
        same_run = resume is not None and Path(out).resolve() == _run_dir(resume).resolve()
        out = Path(out)
        dist.on_main(lambda: prepare_out(out, resuming=same_run))
        trainer = Trainer(model_cfg, cfg, data, device, dist)
        metrics = MetricsLog(out / METRICS_NAME) if dist.is_main else None
        if payload is not None:
            note = trainer.load(payload)
            if metrics is not None:
                metrics.truncate_after(trainer.step)
            log(f"resuming {resume} at step {trainer.step} (epoch {trainer.epoch}, batch {trainer.epoch_step})"
                + (f"; {note}" if note else ""))
        with _StopFlag() as stop:
            result = run_loop(trainer, out, metrics, stop, log, progress)
    except BaseException:
        dist.close(barrier=False)
        raise
    dist.close()
    return result


class _StopFlag:
    """First Ctrl-C asks the loop to stop after the current step and save; a second one aborts."""

    def __init__(self):
        self.set = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def now(self, dist: Dist, synced: bool) -> bool:
        """Whether to stop after this step. Ranks must stop together, so under torchrun they agree
        at log-window boundaries (`synced`), where the window's all-reduce already meets them."""
        if not dist.enabled:
            return self.set
        return synced and dist.any(self.set)


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
        vals = self.t.dist.mean(self.buf[: self.n]).cpu()  # the one sync per window (over ranks too)
        elapsed = time.perf_counter() - self.t0
        first_step = self.t.step - self.n + 1
        bad = (~torch.isfinite(vals[:, :2])).any(dim=1).nonzero()
        if len(bad):
            raise diverged(first_step + int(bad[0]), out, self.last_good)
        mean = vals.mean(dim=0).tolist()
        rec = {"step": self.t.step, "epoch": self.t.epoch + (1 if self.t.epoch_step else 0),
               "d_loss": mean[0], "g_loss": mean[1], "d_x": mean[2], "d_g_z": mean[3],
               "samples_per_s": self.n * self.t.cfg.batch_size / max(elapsed, 1e-9)}
        if metrics is not None:  # rank 0's
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


def run_loop(t: Trainer, out: Path, metrics: MetricsLog | None, stop, log: Callable[[str], None],
             progress: bool) -> RunResult:
    """`metrics` is None on ranks other than 0: they train and take part in every collective but
    write nothing."""
    cfg, B = t.cfg, t.cfg.batch_size
    main = t.dist.is_main
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
    ranks = f" x {t.dist.world} ranks ({t.dist.backend}, batch {t.local_batch} each)" if t.dist.enabled else ""
    log(f"training {source} ({n} images, {per_epoch} steps/epoch) on {t.device}{ranks} {t.precision}"
        f"{' (--precision auto)' if cfg.precision == 'auto' else ''}, "
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
                if main and cfg.sample_every and t.step % cfg.sample_every == 0:
                    since = win.pause()
                    save_grid(t.sampler, t.fixed_noise, samples / f"step-{t.step:06d}.png")
                    win.resume(since)
                if stop.now(t.dist, synced=win.n == 0) or t.step >= total:
                    interrupted = t.step < total  # stopped early: by Ctrl-C (on any rank)
                    break
            bar.update(task, completed=t.step)
            since = win.pause()
            win.flush(metrics, out)  # also the NaN check: never checkpoint a diverged state
            if t.epoch_step == per_epoch:
                t.epoch, t.epoch_step = t.epoch + 1, 0
                t.epoch_shuffle_state = t.shuffle.get_state()
            checkpoint(t, out)
            win.last_good = t.step
            if main and t.epoch_step == 0 and not cfg.sample_every:
                save_grid(t.sampler, t.fixed_noise, samples / f"step-{t.step:06d}.png")
            if bar.disable and win.last and t.epoch_step == 0:  # no live bar: one line an epoch
                log(f"epoch {t.epoch}/{cfg.epochs} step {t.step}: {_summary(win.last)}")
            if main and cfg.eval_every and t.epoch_step == 0 and t.epoch % cfg.eval_every == 0:
                evaluator = evaluator or _make_evaluator(t)
                evals.append(_evaluate(t, evaluator, metrics, log))
            win.resume(since)
    if main:
        save_grid(t.sampler, t.fixed_noise, samples / "final.png")
        records = metrics.read()
        plot_losses(records, out / "loss.png", cfg, t.model_cfg.g_classes)
        if any("fid" in r.get("eval", {}) for r in records):
            plot_fid(records, out / "fid.png")
    if interrupted:
        log(f"interrupted at step {t.step}; checkpoint saved; continue with --resume {out}")
    return RunResult(out=out, checkpoint=out / CHECKPOINT_NAME, step=t.step, epoch=t.epoch,
                     interrupted=interrupted, last=win.last, evals=evals)


def _make_evaluator(t: Trainer):
    from gantool.quality.metrics import TrainingEvaluator  # lazy: quality pulls in the classifier and torchmetrics

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


def _run_dir(resume: str | Path) -> Path:
    p = Path(resume)
    return p.parent if p.is_file() else p


def checkpoint(trainer: Trainer, out: Path) -> Path:
    """Every rank hands in its RNG state (Trainer.state gathers them); rank 0 alone writes."""
    state = trainer.state()
    if trainer.dist.is_main:
        save_checkpoint(out / CHECKPOINT_NAME, state)
    return out / CHECKPOINT_NAME


def diverged(step: int, out: Path, last_good: int | None) -> TrainingDiverged:
    where = (f"last good checkpoint {out / CHECKPOINT_NAME} (step {last_good}) is kept"
             if last_good is not None else "no checkpoint was written before it")
    return TrainingDiverged(f"loss became NaN/Inf at step {step}; training stopped; {where}")
