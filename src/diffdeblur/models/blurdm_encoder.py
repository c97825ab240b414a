"""BlurDM's latent networks: the image-pair encoder (LE_arch) and the residual estimators (MLP).

Faithful to Jin-Ting-He/BlurDM ``src/MIMO_UNet/models/LatentEncoder.py`` (``LE_arch``) and
``LatentBlurDM.py`` (``denoise``), read at suxh19/BlurDM @ a198412 (see docs/methods/blurdm.md section 5).
Widths are keyword arguments so that small variants exist for tests and CPU studies; the defaults
are the published sizes (encoder ~1.15 M parameters, each estimator ~0.46 M).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .blocks import pad_to_multiple

LRELU_SLOPE = 0.1  # LeakyReLU(0.1) everywhere in the reference
UNSHUFFLE = 4  # PixelUnshuffle(4): 3 channels -> 48 per image, at H/4 x W/4
IMAGE_CENTER = 0.5  # the reference works on images in [-0.5, 0.5]


def center_image(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-0.5, 0.5], the reference code's pixel range (the one place this shift happens)."""
    return x - IMAGE_CENTER


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(LRELU_SLOPE, inplace=True)


class EncoderResBlock(nn.Module):
    """conv3x3 -> [BN] -> LReLU -> conv3x3 -> [BN], plus identity."""

    def __init__(self, c: int, batch_norm: bool) -> None:
        super().__init__()
        norm = (lambda: nn.BatchNorm2d(c)) if batch_norm else nn.Identity
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), norm(), _lrelu(),
                                  nn.Conv2d(c, c, 3, padding=1), norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class LatentEncoder(nn.Module):
    """LE_arch: two images -> one prior vector per image.

    forward(a, b): a, b (B, 3, H, W) float in [0, 1] (any H, W; padded to a multiple of 4)
    -> (B, out_dim). PixelUnshuffle(4) of each, concatenated (96 channels), conv 96->width,
    ``num_blocks`` residual blocks, convs width->mid->mid->out_dim (LReLU 0.1 after each), global
    average pool, then two (Linear out->out + LReLU). The sharp encoder SE uses
    ``batch_norm=True`` and is fed (blur, sharp); the blur encoder BE has no BN and gets (blur, blur).
    """

    def __init__(self, out_dim: int = 256, width: int = 64, mid_width: int = 128, num_blocks: int = 6,
                 batch_norm: bool = False) -> None:
        super().__init__()
        cin = 2 * 3 * UNSHUFFLE ** 2
        self.unshuffle = nn.PixelUnshuffle(UNSHUFFLE)
        self.head = nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), _lrelu())
        self.blocks = nn.Sequential(*[EncoderResBlock(width, batch_norm) for _ in range(num_blocks)])
        self.tail = nn.Sequential(
            nn.Conv2d(width, mid_width, 3, padding=1), _lrelu(),
            nn.Conv2d(mid_width, mid_width, 3, padding=1), _lrelu(),
            nn.Conv2d(mid_width, out_dim, 3, padding=1), _lrelu(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.mlp = nn.Sequential(nn.Linear(out_dim, out_dim), _lrelu(), nn.Linear(out_dim, out_dim), _lrelu())

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, _, _ = pad_to_multiple(center_image(a), UNSHUFFLE)
        b, _, _ = pad_to_multiple(center_image(b), UNSHUFFLE)
        x = torch.cat([self.unshuffle(a), self.unshuffle(b)], dim=1)  # (B, 96, H/4, W/4)
        x = self.tail(self.blocks(self.head(x)))  # (B, out_dim, 1, 1)
        return self.mlp(x.flatten(1))


class ResidualEstimator(nn.Module):
    """One residual estimator (``denoise`` in the reference; two instances: blur and noise residual).

    forward(z_t (B, D), cond (B, C), t_frac (B, 1) = t / T) -> (B, D). Input [cond, t/T, z_t]
    (513 values at the published sizes), Linear -> hidden + LReLU, then ``num_layers - 1`` more
    Linear + LReLU layers (the last one maps to D). No skip connection, despite the reference's
    "ResMLP" name; the final LReLU is kept as in the reference.
    """

    def __init__(self, latent_dim: int = 256, cond_dim: int = 256, hidden: int = 256, num_layers: int = 6) -> None:
        super().__init__()
        if num_layers < 2:
            raise ConfigError(f"num_layers must be >= 2, got {num_layers}")
        dims = [cond_dim + 1 + latent_dim] + [hidden] * (num_layers - 1) + [latent_dim]
        layers: list[nn.Module] = []
        for din, dout in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(din, dout), _lrelu()]
        self.net = nn.Sequential(*layers)

    def forward(self, z_t: torch.Tensor, cond: torch.Tensor, t_frac: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([cond, t_frac.to(z_t.dtype), z_t], dim=1))
