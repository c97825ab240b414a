"""Stripformer (Tsai, Peng, Lin, Tsai, Lin, "Stripformer: Strip Transformer for Fast Image Deblurring",
ECCV 2022, arXiv 2204.04627). Faithful to pp00704831/Stripformer ``models/Stripformer.py``.

A feature embedding CNN (3x3 conv to 64 channels and 3 residual blocks at full size, a stride-2 conv to
128 and 3 residual blocks at 1/2, a stride-2 conv to 320 at 1/4; LeakyReLU 0.2 throughout), 12 strip
transformer blocks at 1/4 (dim 320, 5 heads), alternating intra-strip and inter-strip attention, a
transposed conv to 1/2 merged with the 1/2 features by a 1x1 conv, 6 more blocks there (dim 192, 3
heads), a transposed conv to full size merged with the full-size features, and a 3x3 conv + LeakyReLU
giving a residual added to the input.

Every block: LayerNorm; 1x1 conv; half of the channels attend along horizontal strips, the other half
along vertical ones; 1x1 conv; residual; LayerNorm + MLP (ratio 4, GELU); residual; depthwise 3x3
positional conv (PEG) with residual. Intra-strip attention: a pixel is a token, a row (column) is a
sequence. Inter-strip attention: a whole row (column) is a token, its (channel, pixel) values its feature.

Published configuration (:data:`PUBLISHED`): 19,708,611 parameters (paper, Table 1: 20 M) and 154.7 G
MACs at 256x256 (``torch.utils.flop_counter``, FLOPs / 2, on the reference code: the counter misses the
fused CPU attention kernel that this file's ``scaled_dot_product_attention`` may use). :data:`SMALL`
(668,499 parameters, 5.3 G MACs at 256x256) fits a small CPU; :data:`TINY` (26,299) is for tests.

The reference feeds images shifted to [-0.5, 0.5] and adds 0.5 back; :meth:`Stripformer.forward` does
the same on (B, 3, H, W) in [0, 1]. It pads (reflect) to a multiple of 8 as the reference's RealBlur
scripts do (GoPro and HIDE frames need none); BlurDM's scripts pad to 32.

``prior_dim > 0`` adds BlurDM's prior fusion (``StripformerPrior`` in Jin-Ting-He/BlurDM
``src/Stripformer/models/StripformerBlurDM.py``, read in its fork suxh19/BlurDM): a per-channel scale and
shift, bias-free Linear(prior_dim -> 2C), of the input of every block (18 published), before its LayerNorm (the
block's residual keeps the unfused input). BlurDM computes x * k + v (prior_dim 256); :class:`PriorFusion`
computes x * (1 + k) + v, so that a zero prior leaves the network unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .blocks import LayerNorm2d, PriorFusion, pad_to_multiple
from .hparams import HyperParameters
from .protocol import restore_options

SLOPE = 0.2  # LeakyReLU negative slope of the reference
MLP_RATIO = 4

PUBLISHED = dict(width=64, mid_width=128, dim=320, heads=5, blocks=12, decoder_dim=192, decoder_heads=3,
                 decoder_blocks=6, res_blocks=3)
SMALL = dict(width=16, mid_width=32, dim=80, heads=5, blocks=6, decoder_dim=48, decoder_heads=3,
             decoder_blocks=2, res_blocks=2)
TINY = dict(width=8, mid_width=8, dim=16, heads=2, blocks=2, decoder_dim=16, decoder_heads=2,
            decoder_blocks=2, res_blocks=1)


def conv_act(cin: int, cout: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2), nn.LeakyReLU(SLOPE))


def up_act(cin: int, cout: int) -> nn.Sequential:
    """x2 upsampling: 4x4 stride-2 transposed conv + LeakyReLU."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.LeakyReLU(SLOPE))


class ResBlock(nn.Module):
    """act(x + conv3x3(act(conv3x3(x)))) at width c (the activation follows the sum, as in the reference)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(SLOPE), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.body(x) + x, SLOPE)


class Mlp(nn.Module):
    """Linear(C -> 4C), GELU, Linear(4C -> C) on channels-last tokens, with the reference's initialisation."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, MLP_RATIO * dim)
        self.fc2 = nn.Linear(MLP_RATIO * dim, dim)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Softmax attention of (N, L, D) sequences, the heads splitting D into contiguous chunks -> (N, L, D)."""
    n, length, d = q.shape
    q, k, v = (t.reshape(n, length, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, d)


class StripBlock(nn.Module):
    """The shared frame of Intra-SA and Inter-SA; subclasses define :meth:`attention`. (B, C, H, W) -> same."""

    def __init__(self, dim: int, heads: int, prior_dim: int = 0) -> None:
        super().__init__()
        self.heads = heads
        self.fusion = PriorFusion(prior_dim, dim) if prior_dim > 0 else None
        self.attention_norm = LayerNorm2d(dim, eps=1e-5)  # nn.LayerNorm's eps, as the reference
        self.conv_input = nn.Conv2d(dim, dim, 1)
        self.fuse_out = nn.Conv2d(dim, dim, 1)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = Mlp(dim)
        self.peg = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        y = x if self.fusion is None else self.fusion(x, prior)
        x = x + self.fuse_out(self.attention(self.conv_input(self.attention_norm(y))))
        t = x.permute(0, 2, 3, 1)
        x = (t + self.ffn(self.ffn_norm(t))).permute(0, 3, 1, 2)
        return x + self.peg(x)


class IntraStripBlock(StripBlock):
    """Intra-SA: within each row (first half of the channels) and each column (second half), every pixel
    attends to the pixels of its strip; q, k, v by Linear(C/2 -> 3C/2) per direction."""

    def __init__(self, dim: int, heads: int, prior_dim: int = 0) -> None:
        super().__init__(dim, heads, prior_dim)
        self.qkv_h = nn.Linear(dim // 2, 3 * (dim // 2))
        self.qkv_v = nn.Linear(dim // 2, 3 * (dim // 2))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W): [horizontal | vertical] outputs."""
        b, c, h, w = x.shape
        xh, xv = x.chunk(2, dim=1)
        rows = xh.permute(0, 2, 3, 1).reshape(b * h, w, c // 2)  # B*H sequences of W pixels
        cols = xv.permute(0, 3, 2, 1).reshape(b * w, h, c // 2)  # B*W sequences of H pixels
        oh = multi_head_attention(*self.qkv_h(rows).chunk(3, dim=-1), self.heads)
        ov = multi_head_attention(*self.qkv_v(cols).chunk(3, dim=-1), self.heads)
        oh = oh.reshape(b, h, w, c // 2).permute(0, 3, 1, 2)
        ov = ov.reshape(b, w, h, c // 2).permute(0, 3, 2, 1)
        return torch.cat([oh, ov], dim=1)


class InterStripBlock(StripBlock):
    """Inter-SA: each row (first half of the channels) is one token of C/2 * W features, attending to the
    other rows; likewise columns (second half). q, k, v by 1x1 conv C/2 -> 3C/2 per direction; the heads
    split the features by channel."""

    def __init__(self, dim: int, heads: int, prior_dim: int = 0) -> None:
        super().__init__(dim, heads, prior_dim)
        self.conv_h = nn.Conv2d(dim // 2, 3 * (dim // 2), 1)
        self.conv_v = nn.Conv2d(dim // 2, 3 * (dim // 2), 1)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W): [horizontal | vertical] outputs."""
        b, c, h, w = x.shape
        xh, xv = x.chunk(2, dim=1)
        qkv_h = [t.permute(0, 2, 1, 3).reshape(b, h, -1) for t in self.conv_h(xh).chunk(3, dim=1)]  # (B, H, C/2*W)
        qkv_v = [t.permute(0, 3, 1, 2).reshape(b, w, -1) for t in self.conv_v(xv).chunk(3, dim=1)]  # (B, W, C/2*H)
        oh = multi_head_attention(*qkv_h, self.heads).reshape(b, h, c // 2, w).permute(0, 2, 1, 3)
        ov = multi_head_attention(*qkv_v, self.heads).reshape(b, w, c // 2, h).permute(0, 2, 3, 1)
        return torch.cat([oh, ov], dim=1)


def strip_blocks(n: int, dim: int, heads: int, prior_dim: int) -> nn.ModuleList:
    """n blocks alternating intra-strip (first) and inter-strip attention."""
    kinds = (IntraStripBlock, InterStripBlock)
    return nn.ModuleList(kinds[i % 2](dim, heads, prior_dim) for i in range(n))


class Stripformer(HyperParameters, nn.Module):
    """Stripformer. forward(x: (B, 3, H, W) in [0, 1], prior: (B, prior_dim) | None) -> (B, 3, H, W).

    width / mid_width: the embedding CNN at full size / 1/2 (reference 64 / 128); dim, heads, blocks: the
    strip blocks at 1/4 (320, 5, 12); decoder_dim, decoder_heads, decoder_blocks: those at 1/2 (192, 3, 6);
    res_blocks: residual blocks per embedding level (3).
    """

    size_multiple = 8

    def __init__(self, width: int = 64, mid_width: int = 128, dim: int = 320, heads: int = 5, blocks: int = 12,
                 decoder_dim: int = 192, decoder_heads: int = 3, decoder_blocks: int = 6, res_blocks: int = 3,
                 prior_dim: int = 0) -> None:
        super().__init__()
        for name, d, h in (("dim", dim, heads), ("decoder_dim", decoder_dim, decoder_heads)):
            if h < 1 or d % 2 or (d // 2) % h:
                raise ConfigError(f"Stripformer: {name}={d} must be even with {name}/2 divisible by its heads ({h})")
        self.intro = conv_act(3, width, 3)
        self.enc1 = nn.Sequential(*[ResBlock(width) for _ in range(res_blocks)])
        self.down1 = conv_act(width, mid_width, 3, stride=2)
        self.enc2 = nn.Sequential(*[ResBlock(mid_width) for _ in range(res_blocks)])
        self.down2 = conv_act(mid_width, dim, 3, stride=2)
        self.blocks = strip_blocks(blocks, dim, heads, prior_dim)
        self.up2 = up_act(dim, decoder_dim)
        self.merge2 = conv_act(decoder_dim + mid_width, decoder_dim, 1)
        self.decoder_blocks = strip_blocks(decoder_blocks, decoder_dim, decoder_heads, prior_dim)
        self.up1 = up_act(decoder_dim, width)
        self.merge1 = nn.Sequential(nn.Conv2d(2 * width, width, 1), nn.LeakyReLU(SLOPE),
                                    nn.Conv2d(width, width, 3, padding=1))
        self.dec1 = ResBlock(width)
        self.outro = conv_act(width, 3, 3)
        self.prior_dim = prior_dim

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        padded, h, w = pad_to_multiple(x, self.size_multiple)
        res1 = self.enc1(self.intro(padded - 0.5))  # the reference's input range [-0.5, 0.5]
        res2 = self.enc2(self.down1(res1))
        z = self.down2(res2)
        for block in self.blocks:
            z = block(z, prior)
        z = self.merge2(torch.cat([self.up2(z), res2], dim=1))
        for block in self.decoder_blocks:
            z = block(z, prior)
        z = self.up1(z)
        z = self.dec1(F.leaky_relu(self.merge1(torch.cat([z, res1], dim=1)) + z, SLOPE))
        return (self.outro(z) + padded)[:, :, :h, :w]  # (x - 0.5) + residual, shifted back by 0.5

    @restore_options
    def restore(self, blur: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] (+ optional prior (B, D)) -> restored (B, 3, H, W) in [0, 1]."""
        return self.forward(blur, prior).clamp(0, 1)
