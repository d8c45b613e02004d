"""Training: options -> Trainer (one GAN step) -> loop (epochs, checkpoints, grids, evals)."""
from gantool.train.loop import train
from gantool.train.options import resolve_configs, resume_configs
from gantool.train.trainer import RunResult, Trainer

__all__ = ["RunResult", "Trainer", "resolve_configs", "resume_configs", "train"]
