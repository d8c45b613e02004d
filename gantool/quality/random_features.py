"""A feature space for images of any shape: a seeded random convolutional network.

The MNIST classifiers (gantool.quality.classifier) only see 1x28x28 digits. For any other
generator, FID/KID/precision/recall and distribution parity are computed in the features of a
fixed, untrained conv network (weights drawn from a seeded generator, He-normal): no training, no
download, the same network for the same (channels, seed) on every machine. Random-network features
are a known stand-in when no trained feature extractor fits the data (Naeem et al. 2020, sec. 5.3);
their numbers compare only with each other and with the real-vs-real floor beside them, never
with published Inception FIDs, and the space is always named `random-conv` in reports.

    space = RandomConvSpace(channels=3, value_range=(-1, 1))
    f = space.features(images)          # (N, 224) float32
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gantool.errors import ConfigError

SPACE = "random-conv"
WIDTHS = (32, 64, 128)  # 3x3 stride-2 convs; the features are each layer's channel means (32+64+128 = 224)
SEED = 0


class RandomConvNet(nn.Module):
    def __init__(self, channels: int, widths: tuple[int, ...] = WIDTHS, seed: int = SEED):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.convs = nn.ModuleList()
        c = channels
        for w in widths:
            conv = nn.Conv2d(c, w, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * math.sqrt(2.0 / (c * 9)))
                conv.bias.zero_()
            self.convs.append(conv)
            c = w
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for conv in self.convs:
            x = torch.relu(conv(x))
            feats.append(x.mean(dim=(2, 3)))  # global average pool: any H, W
        return torch.cat(feats, dim=1)


class RandomConvSpace:
    """What gantool.quality.metrics.FeatureSpace needs from a classifier: `space`, `accuracy`, `features()`."""

    space = SPACE
    accuracy = None  # nothing was trained: there is no accuracy to report

    def __init__(self, channels: int, value_range: tuple[float, float] = (-1.0, 1.0), seed: int = SEED):
        self.net = RandomConvNet(channels, seed=seed)
        self.lo, self.hi = float(value_range[0]), float(value_range[1])
        self.num_features = sum(WIDTHS)

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
        scaled = lambda x: (x.float() - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0  # noqa: E731 - to [-1, 1]
        return torch.cat([self.net(scaled(images[i:i + batch])) for i in range(0, len(images), batch)])


def load_real_images(path: str | Path, img_shape: tuple[int, ...], value_range: tuple[float, float]) -> torch.Tensor:
    """Real images to score against: .npy / .npz (first array) / .pt, (N, C, H, W) or (N, H, W, C).

    uint8 arrays are pixels 0..255 mapped onto the value range; float arrays must already be in it.
    """
    from gantool.paths import require_file

    p = require_file(path, "--real")
    try:
        if p.suffix == ".pt":
            x = torch.load(p, map_location="cpu", weights_only=True)
            arr = x.numpy() if isinstance(x, torch.Tensor) else None
        elif p.suffix == ".npz":
            with np.load(p) as z:
                arr = z[z.files[0]] if z.files else None
        elif p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            raise ConfigError(f"--real {p}: give a .npy, .npz or .pt file of images (N, C, H, W)")
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file is bad input
        raise ConfigError(f"--real {p}: cannot read it ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if arr is None:
        raise ConfigError(f"--real {p}: holds no array of images")
    c, h, w = img_shape
    if arr.ndim == 4 and arr.shape[1:] != (c, h, w) and arr.shape[1:] == (h, w, c):
        arr = arr.transpose(0, 3, 1, 2)
    if arr.ndim == 3 and c == 1 and arr.shape[1:] == (h, w):
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1:] != (c, h, w):
        raise ConfigError(f"--real {p}: images of shape {tuple(arr.shape[1:])}, the generator makes {c}x{h}x{w}")
    if len(arr) < 100:
        raise ConfigError(f"--real {p}: {len(arr)} images; FID and k-NN manifolds need at least 100")
    lo, hi = value_range
    if arr.dtype == np.uint8:
        x = torch.from_numpy(np.ascontiguousarray(arr)).float() * ((hi - lo) / 255.0) + lo
    else:
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        if not torch.isfinite(x).all():
            raise ConfigError(f"--real {p}: holds NaN/Inf")
        if x.min() < lo - 1e-3 or x.max() > hi + 1e-3:
            raise ConfigError(f"--real {p}: values in [{float(x.min()):.3g}, {float(x.max()):.3g}], outside the "
                              f"generator's value range [{lo:g}, {hi:g}] (uint8 pixels are scaled to it)")
    return x
