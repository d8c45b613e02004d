"""The Trainer: G, D, their optimisers, EMA and RNG streams, and the losses of one GAN step."""
from __future__ import annotations

import copy
import datetime as dt
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from gantool import __version__
from gantool.checkpoint import load_state
from gantool.config import ModelConfig, TrainConfig
from gantool.data import Dataset
from gantool.device import DTYPES, train_precision
from gantool.distributed import SINGLE, Dist, rank_seed
from gantool.errors import CheckpointError, first_line
from gantool.model import Discriminator, build_generator
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

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, data: Dataset, device: torch.device,
                 dist: Dist = SINGLE):
        self.model_cfg, self.cfg, self.device, self.dist = model_cfg, cfg, device, dist
        self.provenance = dict(data.provenance)
        torch.manual_seed(cfg.seed)
        self.G = build_generator(model_cfg).to(device)
        self.G_code = getattr(self.G, "code", None)  # ClassCode when G reads a class from z
        self.D = Discriminator(model_cfg).to(device)
        if dist.enabled:  # the same init on every rank; then each rank its own noise and dropout stream
            torch.manual_seed(rank_seed(cfg.seed, dist.rank))
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if cfg.ema_decay > 0 else None
        # Fused Adam on CUDA/CPU (one kernel per step); foreach elsewhere. The objective is unchanged.
        fused = device.type in ("cuda", "cpu")
        adam = dict(betas=tuple(cfg.betas), fused=fused, foreach=None if fused else True)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.d_lr or cfg.lr, **adam)
        self.precision = train_precision(cfg.precision, device)  # "auto": bf16 where native, else fp32
        self.amp_dtype = DTYPES[self.precision]
        self.use_amp = self.precision != "fp32"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16" and device.type in ("cuda", "cpu"))
        # Under torchrun G and D are DistributedDataParallel (gradients averaged over ranks); G's step
        # runs D as a plain module (_frozen): D is not trained there, so it has nothing to sync.
        fn = torch.compile if cfg.compile else (lambda f: f)
        self.g_fn = fn(dist.wrap(self.G, device))
        self.d_frozen = fn(self.D)
        self.d_fn = fn(dist.wrap(self.D, device)) if dist.enabled else self.d_frozen
        self.d_cls_frozen = fn(self.D.forward_with_classes) if model_cfg.d_classes else None
        self.d_cls_fn = (fn(dist.wrap(WithClasses(self.D), device)) if dist.enabled else self.d_cls_frozen
                         ) if model_cfg.d_classes else None
        # Progress-grid z: the same rows `gantool sample --seed <seed>` draws (gantool.noise), from a
        # generator of its own, so it never perturbs the training RNG.
        self.fixed_noise = latent(N_FIXED_NOISE, cfg.seed, model_cfg.latent_dim, device)
        self.shuffle = torch.Generator().manual_seed(cfg.seed)  # CPU: same data order on every device
        self.images = (data.images[: cfg.limit] if cfg.limit else data.images).to(device)
        self.labels = (data.labels[: cfg.limit] if cfg.limit else data.labels).to(device)
        self.step = self.epoch = self.epoch_step = 0
        self.total_steps = cfg.epochs * (self.images.shape[0] // cfg.batch_size)
        self.local_batch = cfg.batch_size // dist.world  # --batch-size is the global batch
        self.epoch_shuffle_state = self.shuffle.get_state()
        # Minibatch-std mixes statistics across the batch: real and fake must then go through D
        # apart; otherwise one D forward on cat(real, fake) gives the same per-sample objective.
        self.concat_d = not model_cfg.d_minibatch_std
        n_out = self.local_batch // model_cfg.d_pack
        self.real_target = torch.full((n_out, 1), 1.0 - cfg.label_smoothing, device=device)
        self.ones = torch.ones(n_out, 1, device=device)
        self.zeros = torch.zeros(n_out, 1, device=device)

    # --- one optimisation step ----------------------------------------------------------------
    def train_step(self, real: torch.Tensor, labels: torch.Tensor | None = None,
                   z: torch.Tensor | None = None) -> torch.Tensor:
        """One D step and one G step on a real batch (B, 1, 28, 28) (and its labels, used only by
        D's class head), with noise z (B, latent) from this rank's stream unless given.
        Returns (4,) on device: d_loss, g_loss, mean D(x), mean D(G(z)), with no host sync."""
        B = real.shape[0]
        if self.d_cls_fn is not None and labels is None:
            raise ValueError("D has a class head (d_classes > 0): train_step needs the batch's labels")
        if self.cfg.lr_decay:
            self._decay_lr()
        if z is None:
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
            logits, classes = self._d(fake, frozen=True)
            g_loss = self._g_adversarial(logits)
            if classes is not None and self.G_code is not None:  # AC-GAN: draw the class z names
                g_loss = g_loss + self.cfg.class_weight * F.cross_entropy(classes.float(), self.G_code.labels(z))
            elif classes is not None:  # CatGAN: be nameable, and all classes appear
                g_loss = g_loss + self.cfg.class_weight * nameability_loss(classes.float(), self.dist.global_mean)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(g_loss).backward()
        self.scaler.step(self.opt_g)
        self.scaler.update()
        self.D.requires_grad_(True)
        if self.G_ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(list(self.G_ema.parameters()), list(self.G.parameters()), 1.0 - self.cfg.ema_decay)
                for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):  # BatchNorm's running stats
                    b_ema.copy_(b)
        with torch.no_grad():
            return torch.stack([d_loss.float(), g_loss.float(),
                                torch.sigmoid(real_logits.float()).mean(), torch.sigmoid(fake_logits.float()).mean()])

    def train_on(self, idx: torch.Tensor) -> torch.Tensor:
        """train_step on the dataset rows `idx` (on device): the one gather of a batch and its labels.
        `idx` is the global batch; under torchrun rank r takes its r-th slice, disjoint from the others'."""
        if self.dist.enabled:
            idx = idx[self.dist.rank * self.local_batch:(self.dist.rank + 1) * self.local_batch]
        return self.train_step(self.images.index_select(0, idx), self.labels.index_select(0, idx))

    def _g_adversarial(self, logits: torch.Tensor) -> torch.Tensor:
        """G's BCE(D(G(z)), 1) over the fakes it learns from (top-k): on every rank the value, and
        after DDP's average the gradient, of what one process computes on the whole global batch."""
        n, world, rank = logits.shape[0], self.dist.world, self.dist.rank
        k = self.top_k_count(n * world)
        if k == n * world:
            return F.binary_cross_entropy_with_logits(logits, self.ones)
        if world == 1:  # learn only from the fakes D rates most real
            return F.binary_cross_entropy_with_logits(logits.topk(k, dim=0).values, self.ones[:k])
        # The global top k (ties broken in batch order, as one process's topk would), then world x
        # this rank's share of the sum / k, which DDP's mean over ranks turns into the global mean.
        top = self.dist.gather(logits.float()).flatten().topk(k).indices
        mine = top[(top >= rank * n) & (top < (rank + 1) * n)] - rank * n
        picked = logits.index_select(0, mine)
        return world * F.binary_cross_entropy_with_logits(picked, torch.ones_like(picked), reduction="sum") / k

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

    def _d(self, x: torch.Tensor, frozen: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D on a batch: real/fake logits (B/pack, 1) and, with a class head, class logits
        (B, classes), else None. `frozen`: in G's step, where D is not trained."""
        if self.d_cls_fn is not None:
            return (self.d_cls_frozen if frozen else self.d_cls_fn)(x)
        return (self.d_frozen if frozen else self.d_fn)(x), None

    @property
    def sampler(self) -> torch.nn.Module:
        return self.G_ema if self.G_ema is not None else self.G

    # --- checkpoint state ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The checkpoint payload. Under torchrun a collective: every rank's noise/dropout RNG
        state goes in (rng["ranks"], in rank order), so a resume with the same world size is exact."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "shuffle": self.epoch_shuffle_state}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        if self.dist.enabled:
            cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
            own = {"torch": rng["torch"], "cuda": cuda}
            rng["ranks"] = self.dist.gather_objects(own)
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
            "world_size": self.dist.world,
            "fixed_noise": self.fixed_noise.cpu(),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def load(self, payload: dict[str, Any]) -> str:
        """Continue from a checkpoint; returns a note when the RNG streams could not be restored
        exactly (another world size: each rank then derives a fresh stream from seed, rank, step)."""
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
            saved_world = int(payload.get("world_size", 1))
            note = ""
            if saved_world != self.dist.world:
                torch.manual_seed(rank_seed(self.cfg.seed, self.dist.rank, int(payload["step"])))
                note = (f"the run had {saved_world} rank(s), now {self.dist.world}: same global batch and data "
                        "order, fresh noise/dropout streams (not bit-exact)")
            elif self.dist.enabled:
                own = rng["ranks"][self.dist.rank]
                torch.set_rng_state(own["torch"])
                if own.get("cuda") is not None and self.device.type == "cuda":
                    torch.cuda.set_rng_state(own["cuda"], self.device)
            else:
                torch.set_rng_state(rng["torch"])
                if "cuda" in rng and torch.cuda.is_available():
                    torch.cuda.set_rng_state_all(rng["cuda"])
            self.shuffle.set_state(rng["shuffle"])
        except (ValueError, KeyError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"cannot resume: optimiser/RNG state does not fit ({first_line(e)})") from None
        self.epoch_shuffle_state = self.shuffle.get_state()
        self.fixed_noise = payload["fixed_noise"].to(self.device)
        self.step, self.epoch, self.epoch_step = int(payload["step"]), int(payload["epoch"]), int(payload.get("epoch_step", 0))
        return note


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over real images of the squared norm of d(sum of D's logits)/d(image), differentiable
    (a double backward), so D learns to be flat on the data."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
    return grad.float().pow(2).reshape(grad.shape[0], -1).sum(1).mean()


def nameability_loss(class_logits: torch.Tensor,
                     batch_mean: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> torch.Tensor:
    """G's term for D's class head (CatGAN's generator objective, with a head trained on labels):
    the mean entropy of each sample's class distribution (low: D can name the digit) minus the
    entropy of the batch's average distribution (high: all classes appear). Both in nats.
    `batch_mean` turns this rank's average distribution into the global batch's (Dist.global_mean)."""
    logp = F.log_softmax(class_logits, dim=1)
    p = logp.exp()
    per_sample = -(p * logp).sum(dim=1).mean()
    mean_p = batch_mean(p.mean(dim=0))
    marginal = -(mean_p * mean_p.clamp_min(1e-12).log()).sum()
    return per_sample - marginal


class WithClasses(torch.nn.Module):
    """D.forward_with_classes as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, d: Discriminator):
        super().__init__()
        self.d = d

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.d.forward_with_classes(x)
