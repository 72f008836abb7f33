"""Optional adversarial training of the vocoder: a small multi-period discriminator (HiFi-GAN's MPD,
arXiv 2010.05646, with narrower layers) and least-squares GAN losses with feature matching.

Each period ``p`` folds the waveform (B, 1, T) into (B, 1, T / p, p) and runs 2-D convolutions with
(k, 1) kernels, so every sub-discriminator judges one phase of the signal's periodic structure.
Only the training code uses it; it is not part of an exported decoder.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: tuple = (16, 32, 64, 128), slope: float = 0.1):
        super().__init__()
        self.period, self.slope = period, slope
        layers, c_in = [], 1
        for i, c in enumerate(channels):
            stride = 3 if i < len(channels) - 1 else 1
            layers.append(nn.Conv2d(c_in, c, (5, 1), (stride, 1), padding=(2, 0)))
            c_in = c
        self.convs = nn.ModuleList(layers)
        self.post = nn.Conv2d(c_in, 1, (3, 1), 1, padding=(1, 0))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """x (B, 1, T) -> (logits (B, n), feature maps of every layer)."""
        b, c, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), mode="reflect")
        x = x.view(b, c, -1, self.period)
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.slope)
            feats.append(x)
        x = self.post(x)
        feats.append(x)
        return x.flatten(1), feats


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, periods: tuple = (2, 3, 5, 7, 11), channels: tuple = (16, 32, 64, 128)):
        super().__init__()
        self.discriminators = nn.ModuleList([PeriodDiscriminator(p, tuple(channels)) for p in periods])

    def forward(self, wav: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        """wav (B, T) -> per period (logits, features)."""
        x = wav[:, None]
        return [d(x) for d in self.discriminators]


def discriminator_loss(real: list, fake: list) -> Tensor:
    """LSGAN: real -> 1, generated -> 0 (``fake`` computed from the detached generator output)."""
    return sum(((r - 1) ** 2).mean() + (f ** 2).mean() for (r, _), (f, _) in zip(real, fake)) / len(real)


def generator_adversarial_loss(fake: list) -> Tensor:
    return sum(((f - 1) ** 2).mean() for f, _ in fake) / len(fake)


def feature_matching_loss(real: list, fake: list) -> Tensor:
    """L1 between the discriminator's feature maps of real (no gradient) and generated audio."""
    total, n = 0.0, 0
    for (_, fr), (_, ff) in zip(real, fake):
        for a, b in zip(fr, ff):
            total = total + F.l1_loss(b, a.detach())
            n += 1
    return total / n
