"""The Trainer: G, D, their optimisers, EMA and RNG streams, and the losses of one GAN step."""
from __future__ import annotations

import copy
import datetime as dt
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gantool import __version__
from gantool.checkpoint import load_state
from gantool.config import ModelConfig, TrainConfig
from gantool.data import Dataset
from gantool.device import DTYPES
from gantool.errors import CheckpointError, first_line
from gantool.model import Discriminator, Generator
from gantool.noise import latent

N_FIXED_NOISE = 64


@dataclass
class RunResult:
    """Where a run wrote its outputs and how far it got."""

    out: Path
    checkpoint: Path
    step: int
    epoch: int
    interrupted: bool = False
    last: dict[str, float] = field(default_factory=dict)
    evals: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Owns G, D, their optimisers, the EMA copy of G and the RNG streams of one run."""

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, data: Dataset, device: torch.device):
        self.model_cfg, self.cfg, self.device = model_cfg, cfg, device
        self.provenance = dict(data.provenance)
        torch.manual_seed(cfg.seed)
        self.G = Generator(model_cfg).to(device)
        self.D = Discriminator(model_cfg).to(device)
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if cfg.ema_decay > 0 else None
        # Fused Adam on CUDA/CPU (one kernel per step); foreach elsewhere. The objective is unchanged.
        fused = device.type in ("cuda", "cpu")
        adam = dict(betas=tuple(cfg.betas), fused=fused, foreach=None if fused else True)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.d_lr or cfg.lr, **adam)
        self.amp_dtype = DTYPES[cfg.precision]
        self.use_amp = cfg.precision != "fp32"
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type in ("cuda", "cpu"))
        self.g_fn = torch.compile(self.G) if cfg.compile else self.G
        self.d_fn = torch.compile(self.D) if cfg.compile else self.D
        self.d_cls_fn = (torch.compile(self.D.forward_with_classes) if cfg.compile
                         else self.D.forward_with_classes) if model_cfg.d_classes else None
        # Progress-grid z: the same rows `gantool sample --seed <seed>` draws (gantool.noise), from a
        # generator of its own, so it never perturbs the training RNG.
        self.fixed_noise = latent(N_FIXED_NOISE, cfg.seed, model_cfg.latent_dim, device)
        self.shuffle = torch.Generator().manual_seed(cfg.seed)  # CPU: same data order on every device
        self.images = (data.images[: cfg.limit] if cfg.limit else data.images).to(device)
        self.labels = (data.labels[: cfg.limit] if cfg.limit else data.labels).to(device)
        self.step = self.epoch = self.epoch_step = 0
        self.total_steps = cfg.epochs * (self.images.shape[0] // cfg.batch_size)
        self.epoch_shuffle_state = self.shuffle.get_state()
        # Minibatch-std mixes statistics across the batch: real and fake must then go through D
        # apart; otherwise one D forward on cat(real, fake) gives the same per-sample objective.
        self.concat_d = not model_cfg.d_minibatch_std
        n_out = cfg.batch_size // model_cfg.d_pack
        self.real_target = torch.full((n_out, 1), 1.0 - cfg.label_smoothing, device=device)
        self.ones = torch.ones(n_out, 1, device=device)
        self.zeros = torch.zeros(n_out, 1, device=device)

    # --- one optimisation step ----------------------------------------------------------------
    def train_step(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One D step and one G step on a real batch (B, 1, 28, 28) (and its labels, used only by
        D's class head). Returns (4,) on device: d_loss, g_loss, mean D(x), mean D(G(z)), with no
        host sync."""
        B = real.shape[0]
        if self.d_cls_fn is not None and labels is None:
            raise ValueError("D has a class head (d_classes > 0): train_step needs the batch's labels")
        if self.cfg.lr_decay:
            self._decay_lr()
        z = torch.randn(B, self.model_cfg.latent_dim, device=self.device)
        amp = torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp)
        # D: maximise log D(x) + log(1 - D(G(z))) -- BCE(D(x), 1-s) + BCE(D(G(z)), 0).
        if self.cfg.r1_gamma:  # R1 needs D's gradient with respect to the real images
            real = real.detach().requires_grad_(True)
        with amp:
            fake = self.g_fn(z)  # (B, 1, 28, 28), graph kept for the G step
            if self.concat_d:
                logits, classes = self._d(torch.cat([real, fake.detach()]))
                real_logits, fake_logits = logits.chunk(2)
                real_classes = classes[:B] if classes is not None else None
            else:
                (real_logits, real_classes), (fake_logits, _) = self._d(real), self._d(fake.detach())
            d_loss = (F.binary_cross_entropy_with_logits(real_logits, self.real_target)
                      + F.binary_cross_entropy_with_logits(fake_logits, self.zeros))
            if real_classes is not None:  # D's head learns the real digits' labels
                d_loss = d_loss + self.cfg.class_weight * F.cross_entropy(real_classes.float(), labels)
            if self.cfg.r1_gamma:
                d_loss = d_loss + self.cfg.r1_gamma / 2 * r1_penalty(real_logits, real)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(d_loss).backward()
        self.scaler.step(self.opt_d)
        # G: non-saturating, maximise log D(G(z)) -- BCE(D(G(z)), 1) on the same fake batch.
        # D's weights are frozen so the backward computes only what G needs.
        self.D.requires_grad_(False)
        with amp:
            logits, classes = self._d(fake)
            k = self.top_k_count(logits.shape[0])
            if k < logits.shape[0]:  # learn only from the fakes D rates most real
                logits = logits.topk(k, dim=0).values
            g_loss = F.binary_cross_entropy_with_logits(logits, self.ones[:k])
            if classes is not None:
                g_loss = g_loss + self.cfg.class_weight * nameability_loss(classes.float())
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(g_loss).backward()
        self.scaler.step(self.opt_g)
        self.scaler.update()
        self.D.requires_grad_(True)
        if self.G_ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(list(self.G_ema.parameters()), list(self.G.parameters()), 1.0 - self.cfg.ema_decay)
        with torch.no_grad():
            return torch.stack([d_loss.float(), g_loss.float(),
                                torch.sigmoid(real_logits.float()).mean(), torch.sigmoid(fake_logits.float()).mean()])

    def train_on(self, idx: torch.Tensor) -> torch.Tensor:
        """train_step on the dataset rows `idx` (on device): the one gather of a batch and its labels."""
        return self.train_step(self.images.index_select(0, idx), self.labels.index_select(0, idx))

    def top_k_count(self, n: int) -> int:
        """How many of the n fake D outputs G learns from this epoch (top-k training)."""
        share = max(self.cfg.top_k, self.cfg.top_k_gamma ** self.epoch)
        return max(1, min(n, round(share * n)))

    def lr_scale(self) -> float:
        """Factor on both learning rates for the coming step: 1, then over the last `lr_decay` of
        the run's steps a straight line down that reaches 0 just after the final step. A function of
        the step alone, so a resumed run follows the same schedule."""
        decay_steps = self.cfg.lr_decay * self.total_steps
        return 1.0 if decay_steps <= 0 else min(1.0, max(0.0, (self.total_steps - self.step) / decay_steps))

    def _decay_lr(self) -> None:
        scale = self.lr_scale()
        for opt, lr in ((self.opt_g, self.cfg.lr), (self.opt_d, self.cfg.d_lr or self.cfg.lr)):
            for group in opt.param_groups:
                group["lr"] = lr * scale

    def _d(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D on a batch: real/fake logits (B/pack, 1) and, with a class head, class logits
        (B, classes), else None."""
        if self.d_cls_fn is not None:
            return self.d_cls_fn(x)
        return self.d_fn(x), None

    @property
    def sampler(self) -> torch.nn.Module:
        return self.G_ema if self.G_ema is not None else self.G

    # --- checkpoint state ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "shuffle": self.epoch_shuffle_state}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model_config": self.model_cfg.to_dict(),
            "train_config": self.cfg.to_dict(),
            "generator": self.G.state_dict(),
            "generator_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            "discriminator": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "data": self.provenance,
            "versions": {"gantool": __version__, "torch": str(torch.__version__), "python": sys.version.split()[0]},
            "rng": rng,
            "fixed_noise": self.fixed_noise.cpu(),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def load(self, payload: dict[str, Any]) -> None:
        for key in ("discriminator", "opt_g", "opt_d", "rng"):
            if payload.get(key) is None:
                raise CheckpointError(f"cannot resume: the checkpoint has no {key!r} (not a training checkpoint)")
        load_state(self.G, payload["generator"], "generator")
        load_state(self.D, payload["discriminator"], "discriminator")
        if self.G_ema is not None:
            load_state(self.G_ema, payload.get("generator_ema") or payload["generator"], "generator_ema")
        try:
            self.opt_g.load_state_dict(payload["opt_g"])
            self.opt_d.load_state_dict(payload["opt_d"])
            if payload.get("scaler"):
                self.scaler.load_state_dict(payload["scaler"])
            rng = payload["rng"]
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            self.shuffle.set_state(rng["shuffle"])
        except (ValueError, KeyError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"cannot resume: optimiser/RNG state does not fit ({first_line(e)})") from None
        self.epoch_shuffle_state = self.shuffle.get_state()
        self.fixed_noise = payload["fixed_noise"].to(self.device)
        self.step, self.epoch, self.epoch_step = int(payload["step"]), int(payload["epoch"]), int(payload.get("epoch_step", 0))


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over real images of the squared norm of d(sum of D's logits)/d(image), differentiable
    (a double backward), so D learns to be flat on the data."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
    return grad.float().pow(2).reshape(grad.shape[0], -1).sum(1).mean()


def nameability_loss(class_logits: torch.Tensor) -> torch.Tensor:
    """G's term for D's class head (CatGAN's generator objective, with a head trained on labels):
    the mean entropy of each sample's class distribution (low: D can name the digit) minus the
    entropy of the batch's average distribution (high: all classes appear). Both in nats."""
    logp = F.log_softmax(class_logits, dim=1)
    p = logp.exp()
    per_sample = -(p * logp).sum(dim=1).mean()
    mean_p = p.mean(dim=0)
    marginal = -(mean_p * mean_p.clamp_min(1e-12).log()).sum()
    return per_sample - marginal
