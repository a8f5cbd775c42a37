"""Small networks for the shipped trained models: a time-conditioned MLP for 2-D toys, a small
convolutional U-Net for the 8x8 digits scikit-learn ships, and a digits classifier whose
penultimate layer is the feature space of FD-digits (``bench.zoo.fd``).

Every score network has the signature ``net(x, c)``: ``x`` a batch of states, ``c`` a (batch,)
tensor, the *noise conditioning* that the model wrapper (``bench.zoo.trained``) computes from the
continuous time once, in one documented way per SDE family (``1000 t`` on VP, ``250 log sigma``
on sigma-time/VE). Networks know nothing of SDEs; they run in the dtype they are cast to
(float32 for training, float64 for reference solves).

``ARCHS`` maps the architecture names written in checkpoint cards to these classes; a card's
``arch_args`` are the constructor's keyword arguments.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TimeEmbedding", "ToyMLP", "DigitsUNet", "DigitsClassifier", "ARCHS"]


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar (Vaswani et al. 2017; DDPM's timestep embedding),
    followed by a two-layer MLP: c -> [cos(c w_k), sin(c w_k)], w_k = max_period^(-k/half)."""

    def __init__(self, dim: int, out: int, max_period: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"TimeEmbedding: dim must be even, got {dim}")
        half = dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half) / half),
                             persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim, out), nn.SiLU(), nn.Linear(out, out))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        arg = c.to(self.freqs.dtype)[:, None] * self.freqs[None]
        return self.mlp(torch.cat([torch.cos(arg), torch.sin(arg)], dim=1))


class _ResMLPBlock(nn.Module):
    def __init__(self, hidden: int, emb: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.lin1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb, hidden)
        self.lin2 = nn.Linear(hidden, hidden)

    def forward(self, h, e):
        z = self.lin1(torch.nn.functional.silu(self.norm(h))) + self.emb(e)
        return h + self.lin2(torch.nn.functional.silu(z))


class ToyMLP(nn.Module):
    """Residual MLP with a sinusoidal time embedding for low-dimensional data: ``net(x, c)``,
    x of shape (batch, dim). ``depth`` residual blocks of width ``hidden``."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, emb: int = 64):
        super().__init__()
        self.temb = TimeEmbedding(emb, emb)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_ResMLPBlock(hidden, emb) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim)

    def forward(self, x, c):
        e = self.temb(c)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(torch.nn.functional.silu(self.norm(h)))


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, groups: int):
        super().__init__()
        self.n1 = nn.GroupNorm(min(groups, cin), cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, cout)
        self.n2 = nn.GroupNorm(min(groups, cout), cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):
        h = self.c1(torch.nn.functional.silu(self.n1(x))) + self.emb(e)[:, :, None, None]
        h = self.c2(torch.nn.functional.silu(self.n2(h)))
        return self.skip(x) + h


class DigitsUNet(nn.Module):
    """A two-level convolutional U-Net for (batch, 1, 8, 8) images: ``net(x, c)``.

    8x8 at ``ch`` channels (two residual blocks) -> 4x4 at ``2 ch`` (two blocks, the middle)
    -> back to 8x8 with the skip concatenated (two blocks); residual blocks add the time
    embedding after their first convolution (DDPM's block, without attention)."""

    def __init__(self, ch: int = 32, emb: int = 128, groups: int = 8, in_ch: int = 1):
        super().__init__()
        self.temb = TimeEmbedding(emb, emb)
        self.inp = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.down = nn.ModuleList([_ResBlock(ch, ch, emb, groups), _ResBlock(ch, ch, emb, groups)])
        self.pool = nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1)
        self.mid = nn.ModuleList([_ResBlock(2 * ch, 2 * ch, emb, groups), _ResBlock(2 * ch, 2 * ch, emb, groups)])
        self.upconv = nn.Conv2d(2 * ch, ch, 3, padding=1)
        self.up = nn.ModuleList([_ResBlock(2 * ch, ch, emb, groups), _ResBlock(ch, ch, emb, groups)])
        self.norm = nn.GroupNorm(min(groups, ch), ch)
        self.out = nn.Conv2d(ch, in_ch, 3, padding=1)

    def forward(self, x, c):
        e = self.temb(c)
        h = self.inp(x)
        for block in self.down:
            h = block(h, e)
        skip = h
        h = self.pool(h)
        for block in self.mid:
            h = block(h, e)
        h = self.upconv(torch.nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = torch.cat([h, skip], dim=1)
        for block in self.up:
            h = block(h, e)
        return self.out(torch.nn.functional.silu(self.norm(h)))


class DigitsClassifier(nn.Module):
    """A small CNN classifying 8x8 digits (10 classes); ``features(x)`` is its penultimate layer,
    the feature space of FD-digits. Input: (batch, 1, 8, 8) in the models' data scaling."""

    def __init__(self, ch: int = 32, features: int = 64, classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, ch, 3, padding=1), nn.SiLU(),
            nn.Conv2d(ch, ch, 3, padding=1), nn.SiLU(),
            nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1), nn.SiLU(),  # -> 4x4
            nn.Conv2d(2 * ch, 2 * ch, 3, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(2 * ch * 16, features), nn.SiLU(),
        )
        self.head = nn.Linear(features, classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


#: architecture name (as written in a checkpoint card) -> class
ARCHS = {"toy_mlp": ToyMLP, "digits_unet": DigitsUNet, "digits_classifier": DigitsClassifier}
