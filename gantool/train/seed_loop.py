"""The original article's training loop, re-implemented faithfully with only its crashes fixed.

This is the baseline that gantool's loop is benchmarked against; it is not used for training.
Kept as the seed wrote it: torchvision transforms applied per sample inside a DataLoader
(batch 100, shuffle, no workers), a Sigmoid discriminator with nn.BCELoss, Adam(lr 2e-4) with
default betas, G run twice a step, and the fake batch *not* detached in the D step (defect 7:
the backward pass runs through G for nothing). Fixed, because they crash on current PyTorch:
1. Normalize with one mean/std for one-channel MNIST (was three),
2. labels of shape (B, 1) to match D's output (were (B,)),
3. `.item()` instead of `loss.data[0]`,
4./6. no results/ figure or IPython display (the progress line is kept; plotting is off the
   training path and the article's notebook display cannot run in a script),
5. a `device` argument instead of hard-coded `.cuda()`.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn


class SeedDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(784, 1024), nn.LeakyReLU(0.2, inplace=True), nn.Dropout(0.3),
            nn.Linear(1024, 512), nn.LeakyReLU(0.2, inplace=True), nn.Dropout(0.3),
            nn.Linear(512, 256), nn.LeakyReLU(0.2, inplace=True), nn.Dropout(0.3),
            nn.Linear(256, 1), nn.Sigmoid(),
        )

    def forward(self, x):
        out = self.model(x.view(x.size(0), 784))
        return out.view(out.size(0), -1)


class SeedGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(100, 256), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(256, 512), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(512, 1024), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(1024, 784), nn.Tanh(),
        )

    def forward(self, x):
        x = x.view(x.size(0), -1)
        return self.model(x)


class SeedMNIST(torch.utils.data.Dataset):
    """What torchvision's MNIST does per item: uint8 array -> PIL image -> transform."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray):
        import torchvision.transforms as transforms

        self.pixels, self.labels = pixels, labels
        # Fix 1: one mean/std for one channel.
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=(0.5,), std=(0.5,))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.fromarray(self.pixels[i], mode="L")
        return self.transform(img), int(self.labels[i])


def seed_dataset(images: torch.Tensor, labels: torch.Tensor) -> SeedMNIST:
    """gantool's [-1, 1] tensor back to the uint8 pixels the seed's transforms start from (exact)."""
    pixels = ((images.reshape(-1, 28, 28) * 0.5 + 0.5) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return SeedMNIST(pixels, labels.numpy())


class SeedLoop:
    """The seed's state (nets, criterion, optimisers, loader) and its step, on any device."""

    def __init__(self, dataset: SeedMNIST, device: torch.device | str = "cpu", batch_size: int = 100, seed: int = 0):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
        self.discriminator = SeedDiscriminator().to(self.device)
        self.generator = SeedGenerator().to(self.device)
        self.criterion = nn.BCELoss()
        lr = 0.0002
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr)
        self.g_optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr)
        self.test_noise = torch.randn(16, 100).to(self.device)

    def train_discriminator(self, images, real_labels, fake_images, fake_labels):
        self.discriminator.zero_grad()
        outputs = self.discriminator(images)
        real_loss = self.criterion(outputs, real_labels)
        real_score = outputs
        outputs = self.discriminator(fake_images)  # defect 7 kept: fake_images not detached
        fake_loss = self.criterion(outputs, fake_labels)
        fake_score = outputs
        d_loss = real_loss + fake_loss
        d_loss.backward()
        self.d_optimizer.step()
        return d_loss, real_score, fake_score

    def train_generator(self, discriminator_outputs, real_labels):
        self.generator.zero_grad()
        g_loss = self.criterion(discriminator_outputs, real_labels)
        g_loss.backward()
        self.g_optimizer.step()
        return g_loss

    def step(self, images: torch.Tensor):
        dev = self.device
        images = images.to(dev)
        real_labels = torch.ones(images.size(0), 1).to(dev)  # fix 2: (B, 1)
        noise = torch.randn(images.size(0), 100).to(dev)
        fake_images = self.generator(noise)
        fake_labels = torch.zeros(images.size(0), 1).to(dev)
        d_loss, real_score, fake_score = self.train_discriminator(images, real_labels, fake_images, fake_labels)
        noise = torch.randn(images.size(0), 100).to(dev)  # G is run a second time
        fake_images = self.generator(noise)
        outputs = self.discriminator(fake_images)
        g_loss = self.train_generator(outputs, real_labels)
        return d_loss, g_loss, real_score, fake_score

    def run(self, steps: int, log_every: int = 100, log=None) -> dict[str, Any]:
        """Run `steps` steps through the DataLoader (re-iterating epochs as the seed does)."""
        done, t0 = 0, time.perf_counter()
        while done < steps:
            for n, (images, _) in enumerate(self.loader):
                d_loss, g_loss, real_score, fake_score = self.step(images)
                done += 1
                if (n + 1) % log_every == 0:
                    _ = self.generator(self.test_noise)  # the seed draws its 4x4 grid here
                    line = (f"Step[{n + 1}/{len(self.loader)}], d_loss: {d_loss.item():.4f}, g_loss: {g_loss.item():.4f}, "
                            f"D(x): {real_score.data.mean():.2f}, D(G(z)): {fake_score.data.mean():.2f}")  # fix 3
                    if log:
                        log(line)
                if done >= steps:
                    break
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - t0
        return {"steps": done, "seconds": elapsed}
