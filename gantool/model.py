"""The seed's MLP Generator and Discriminator (nn code only)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gantool.config import ModelConfig


class Generator(nn.Module):
    """z (B, latent) -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        width = cfg.latent_dim
        for h in cfg.g_hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(cfg.leaky_slope)]
            width = h
        layers += [nn.Linear(width, cfg.img_numel), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self._shape = cfg.img_shape

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # (B, latent) -> (B, 784) -> (B, 1, 28, 28); reshape keeps N dynamic for every exporter.
        return self.net(z).reshape(-1, *self._shape)


class MinibatchStd(nn.Module):
    """Appends the mean over features of the per-feature std across the batch (ProGAN), so D sees
    batch diversity and G is pushed away from collapsing onto a few modes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, F+1)
        std = x.float().std(dim=0, unbiased=False).mean().to(x.dtype)
        return torch.cat([x, std.expand(x.shape[0], 1)], dim=1)


class Dropout(nn.Dropout):
    """nn.Dropout whose CPU masks are cheap. ATen's CPU dropout draws one Bernoulli sample per
    element with a scalar-loop sampler: it was a quarter of a conv-D training step on 2 cores
    (docs/training.md). Here each mask element takes 15 random bits, four to one 64-bit draw, and is
    kept when they are >= p * 2^15: p is rounded to a multiple of 2^-15 (|change| <= 1.6e-5) and kept
    elements are scaled by 1 / (their exact keep rate), so the expectation is the input. Off the
    CPU it is F.dropout (a fused kernel there)."""

    BITS = 15

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        levels = 1 << self.BITS
        drop = round(self.p * levels)
        if drop >= levels:
            return torch.zeros_like(x)
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()
        keep = (bits.view(torch.int16)[:n].view(x.shape) & (levels - 1)) >= drop
        return x * keep.to(x.dtype).mul_(levels / (levels - drop))


class Discriminator(nn.Module):
    """images (B, C, H, W) -> logits (B, 1). Sigmoid lives in the loss (BCE-with-logits)."""

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.cfg = cfg
        self.pack = cfg.d_pack
        body, width = D_BODIES[cfg.d_arch](cfg)
        # net = body + the real/fake Linear; net[:-1] is D's feature extractor.
        self.net = nn.Sequential(*body, nn.Linear(width, 1))
        # Auxiliary head on D's last features: class logits for each of the `pack` packed samples.
        self.classes = cfg.d_classes
        self.cls = nn.Linear(width, cfg.d_pack * cfg.d_classes) if cfg.d_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # PacGAN: pack consecutive samples into one D input, (B, 784) -> (B/pack, 784*pack).
        return self.net(x.reshape(x.shape[0] // self.pack, -1))

    def forward_with_classes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, ...) -> real/fake logits (B/pack, 1) and class logits (B, classes)."""
        h = self.net[:-1](x.reshape(x.shape[0] // self.pack, -1))
        return self.net[-1](h), self.cls(h).reshape(x.shape[0], self.classes)


def _mlp_body(cfg: ModelConfig) -> tuple[list[nn.Module], int]:
    """The seed's D: Linear + LeakyReLU + Dropout per width in d_hidden, on (B/pack, 784*pack)."""
    width = cfg.img_numel * cfg.d_pack
    layers: list[nn.Module] = []
    for i, h in enumerate(cfg.d_hidden):
        if cfg.d_minibatch_std and i == len(cfg.d_hidden) - 1:
            layers.append(MinibatchStd())
            width += 1
        layers += [nn.Linear(width, h), nn.LeakyReLU(cfg.leaky_slope), Dropout(cfg.d_dropout)]
        width = h
    return layers, width


def _conv_body(cfg: ModelConfig) -> tuple[list[nn.Module], int]:
    """Strided 4x4 convolutions (each halves the side: 28 -> 14 -> 7) with LeakyReLU, then flatten;
    the packed samples enter as channels, (B/pack, 784*pack) -> (B/pack, C*pack, 28, 28)."""
    c, side = cfg.channels * cfg.d_pack, cfg.img_size
    layers: list[nn.Module] = [nn.Unflatten(1, (c, side, side))]
    for ch in cfg.d_channels:
        layers += [nn.Conv2d(c, ch, 4, 2, 1), nn.LeakyReLU(cfg.leaky_slope), Dropout(cfg.d_dropout)]
        c, side = ch, side // 2
    layers.append(nn.Flatten())
    width = c * side * side
    if cfg.d_minibatch_std:
        layers.append(MinibatchStd())
        width += 1
    return layers, width


# D's body builders by ModelConfig.d_arch; validate() checks the name against these keys.
D_BODIES = {"mlp": _mlp_body, "conv": _conv_body}


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def generator_flops_per_sample(cfg: ModelConfig) -> int:
    """Multiply-adds x2 of the Linear layers (activations are negligible)."""
    dims = [cfg.latent_dim, *cfg.g_hidden, cfg.img_numel]
    return sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))
