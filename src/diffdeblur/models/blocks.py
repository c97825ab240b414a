"""Blocks shared by two or more architectures."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor, with per-channel affine."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            # NHWC memory (the channels-last engines): the channel axis is the contiguous one, so the fused
            # layer_norm runs on a view, in one pass, and the result stays channels-last
            return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias,
                                self.eps).permute(0, 3, 1, 2)
        # NCHW: the same statistics in 4 passes over the map instead of 6 (memory-bound at large sizes)
        mu = x.mean(1, keepdim=True)
        xc = x - mu
        var = xc.square().mean(1, keepdim=True)
        return torch.addcmul(self.bias.view(1, -1, 1, 1), xc * torch.rsqrt(var + self.eps),
                             self.weight.view(1, -1, 1, 1))


class PriorFusion(nn.Module):
    """Prior fusion module (BlurDM's PFM): per-channel scale and shift from a prior vector.

    x: (B, C, H, W); prior: (B, D). Returns x * (1 + k) + v with (k, v) = Linear(D -> 2C)(prior),
    bias-free. The reference code uses x * k + v; writing the scale as (1 + k) is the same family
    but makes a zero prior the identity, so a backbone is unchanged by a neutral prior. The projection starts
    at zero (as ControlNet's zero convolutions): a fused backbone initialised from plain regression weights
    (``train.init_from``) restores exactly as they do at its first step, whatever prior it is given; the
    projection gets gradients from the first step on (its input, the prior, is not zero).
    """

    def __init__(self, prior_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(prior_dim, 2 * channels, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
        if prior is None:
            return x
        k, v = self.proj(prior).chunk(2, dim=1)
        return x * (1 + k[:, :, None, None]) + v[:, :, None, None]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017; DDPM). t: (B,) float -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> tuple[torch.Tensor, int, int]:
    """Pad (B, C, H, W) on the bottom/right to a multiple of ``multiple``; return (x, H, W) originals."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        if mode == "reflect" and (ph >= h or pw >= w):
            mode = "replicate"  # reflect needs the pad to be smaller than the side
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w
