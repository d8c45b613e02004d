"""The generators (the seed's MLP, a DCGAN) and the discriminator (MLP or conv body): nn code only.

    g = build_generator(cfg)      # picks the body by cfg.g_arch; every caller builds G through this
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gantool.config import G_ARCH_NAMES, ModelConfig


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


class ClassCode(nn.Module):
    """z (B, latent) -> one-hot classes (B, classes), a deterministic function of z.

    A continuous G maps the connected Gaussian onto the data's ten disconnected digit manifolds only by
    drawing in-between shapes on the way from one to the next; a class read off z lets G jump instead.
    The class comes from the signs of z's first `bits` coordinates (a code 0..2^bits-1, code * classes
    // 2^bits): a sign survives every rounding (fp16, bf16, int8 graphs keep z in float), so every
    artifact picks the same class as eager for the same z. The code, the class and the one-hot comparison
    are int64 operations: no float arithmetic for a quantizer to approximate. With 10 bits and 10 classes
    each class has 102 or 103 of the 1,024 codes: probabilities within 0.1 % of uniform.
    """

    BITS = 10

    def __init__(self, classes: int, latent_dim: int):
        super().__init__()
        self.classes, self.bits = classes, min(self.BITS, latent_dim)

    def code(self, z: torch.Tensor) -> torch.Tensor:  # (B, latent) -> (B,) int64 in [0, 2^bits)
        # Bit by bit with Python-int weights: every exporter takes that. A weight tensor does not:
        # a buffer (torch.export cannot unlift non-persistent ones; persistent ones would be weights a
        # checkpoint could carry wrong), a torch.tensor literal (the ONNX exporter refuses the lifted
        # constant), `2 ** torch.arange(bits)` (AOTInductor, torch 2.14, compiles that pow to garbage).
        bits = (z[:, :self.bits] >= 0).long()
        code = bits[:, 0]
        for i in range(1, self.bits):
            code = code + bits[:, i] * (1 << i)
        return code

    def labels(self, z: torch.Tensor) -> torch.Tensor:
        """The class (B,) int64 that G is asked to draw for each z."""
        return self.code(z) * self.classes // 2 ** self.bits

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, latent) -> (B, classes) in z's dtype
        classes = torch.arange(self.classes, device=z.device)
        return (self.labels(z).unsqueeze(1) == classes).to(z.dtype)


class DCGANGenerator(nn.Module):
    """z (B, latent) -> images (B, C, H, W) in [-1, 1]: pytorch/examples' DCGAN G sized to the image.

    z is seen as a (B, latent, 1, 1) map and projected by a ConvTranspose2d to g_channels[0] maps of
    side S / 2^len(g_channels) (7 for 28, 8 for 32); each further width is a 4x4 stride-2
    ConvTranspose2d + BatchNorm2d + ReLU block that doubles the side; a last stride-2 ConvTranspose2d
    to C channels and Tanh make the image. 28x28 with (128, 64): 100 -> 128@7 -> 64@14 -> 1@28.
    With cfg.g_classes the one-hot class that ClassCode reads off z enters beside z (100 + 10 maps).
    """

    def __init__(self, cfg: ModelConfig = ModelConfig(g_arch="dcgan")):
        super().__init__()
        self.cfg = cfg
        widths = cfg.g_channels
        start = cfg.img_size // 2 ** len(widths)
        self.code = ClassCode(cfg.g_classes, cfg.latent_dim) if cfg.g_classes else None
        self.in_maps = cfg.latent_dim + cfg.g_classes
        layers: list[nn.Module] = [nn.ConvTranspose2d(self.in_maps, widths[0], start, 1, 0, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], cfg.channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.latent_dim = cfg.latent_dim
        for m in self.modules():  # DCGAN's init: N(0, 0.02) weights, BatchNorm scale N(1, 0.02)
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # (B, latent) -> (B, latent [+ classes], 1, 1); reshape keeps N dynamic for every exporter.
        if self.code is not None:
            z = torch.cat([z, self.code(z)], dim=1)
        return self.net(z.reshape(-1, self.in_maps, 1, 1))


# G's builders by ModelConfig.g_arch; validate() checks the name against these keys.
G_ARCHS = {"mlp": Generator, "dcgan": DCGANGenerator}
assert tuple(G_ARCHS) == G_ARCH_NAMES, "gantool.config.G_ARCH_NAMES names the CLI's --arch choices"


def build_generator(cfg: ModelConfig) -> nn.Module:
    """The generator that `cfg` describes (a fresh init; load weights with load_state_dict)."""
    return G_ARCHS[cfg.g_arch](cfg)


def g_arch_problem(cfg: ModelConfig) -> str | None:
    """Why `cfg` describes no buildable generator (None when it does)."""
    if cfg.g_arch not in G_ARCHS:
        return f"unknown --arch {cfg.g_arch!r}; choose one of: {', '.join(G_ARCHS)}"
    if cfg.g_classes and cfg.g_arch != "dcgan":
        return f"g_classes (a class read from z) is built for g_arch dcgan only, not {cfg.g_arch!r}"
    if cfg.g_classes < 0 or cfg.g_classes == 1:
        return f"g_classes must be 0 (off) or >= 2 (got {cfg.g_classes})"
    if cfg.g_arch == "dcgan":
        k = 2 ** len(cfg.g_channels)
        if not cfg.g_channels or min(cfg.g_channels) <= 0 or cfg.img_size % k or cfg.img_size < k:
            return (f"g_channels {cfg.g_channels} must be positive and the {cfg.img_size}px side divisible "
                    f"by 2^{len(cfg.g_channels)} (one doubling per width)")
    return None


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


def flops_per_sample(g: nn.Module, latent: Any) -> int:
    """FLOPs of one sample through `g` as torch.utils.flop_counter counts them (2 per multiply-add
    of matmuls and convolutions; element-wise ops uncounted), from a batch of 2 in eval mode on CPU."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    m = copy.deepcopy(g).float().cpu().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        if hasattr(latent, "example"):  # a gantool.signature.Signature: every input forward() takes
            m(*latent.example(2))
        else:  # a latent size or shape
            m(torch.zeros(2, *((latent,) if isinstance(latent, int) else latent)))
    return counter.get_total_flops() // 2
