"""The SR3 UNet: the denoiser network of conditional pixel diffusion (and, on latents, of latent diffusion).

SR3 (Saharia et al. 2021, "Image Super-Resolution via Iterative Refinement", arXiv 2104.07636; reference
code Janspiry/Image-Super-Resolution-via-Iterative-Refinement ``model/sr3_modules/unet.py``): a UNet whose
input is the noisy image concatenated with the condition (here the blurry image), with a sinusoidal
time / noise-level embedding added in every residual block, GroupNorm + Swish residual blocks, optional
single-head self-attention at chosen levels, and channel multipliers per level. ``forward(x_t, t, cond)``.
Optionally (:meth:`SR3UNet.add_guidance`) the encoder blocks at chosen levels take multiscale structure guidance
features (:mod:`.guidance`): ``forward(x_t, t, cond, guidance={factor: feature})``.
The methods that use it: :mod:`diffdeblur.methods.sr3` (SR3, DvSR) and :mod:`diffdeblur.methods.latent`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .blocks import timestep_embedding
from .guidance import Features, check_scales, encoder_factors, guide_projection

ATTN_QUERY_CHUNK = 4096  # attention runs over query chunks of this many positions: memory O(chunk x HW)


# ---- network -------------------------------------------------------------------------------------

def _groups(channels: int, norm_groups: int) -> int:
    return math.gcd(channels, norm_groups)


class ResBlock(nn.Module):
    """SR3 ResnetBlock: GN-Swish-conv, + Linear(time embedding), GN-Swish-dropout-conv, 1x1 skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, norm_groups: int, dropout: float) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.GroupNorm(_groups(c_in, norm_groups), c_in), nn.SiLU(),
                                    nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb = nn.Linear(emb_dim, c_out)
        self.block2 = nn.Sequential(nn.GroupNorm(_groups(c_out, norm_groups), c_out), nn.SiLU(),
                                    nn.Dropout(dropout), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x) + self.emb(emb)[:, :, None, None]
        return self.block2(h) + self.skip(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over all H*W positions (SR3: one head), GN first, residual add.

    Queries are processed in chunks of ``ATTN_QUERY_CHUNK`` so that memory stays O(chunk * H*W) at
    large test sizes (a 90x160 map at 1/8 of 720p has 14,400 positions); the cost is still O(HW^2).
    """

    def __init__(self, channels: int, norm_groups: int, heads: int = 1) -> None:
        super().__init__()
        if channels % heads:
            raise ConfigError(f"attention: {channels} channels not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels, norm_groups), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        # q, k, v: (B, heads, HW, c/heads)
        y = torch.cat([F.scaled_dot_product_attention(q[:, :, i:i + ATTN_QUERY_CHUNK], k, v)
                       for i in range(0, h * w, ATTN_QUERY_CHUNK)], dim=2)
        return x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))


class ResAttnBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, norm_groups: int, dropout: float,
                 attn: bool, heads: int) -> None:
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim, norm_groups, dropout)
        self.attn = SelfAttention(c_out, norm_groups, heads) if attn else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class SR3UNet(nn.Module):
    """Conditional diffusion UNet. forward(x_t (B,C,H,W), t (B,) float, cond (B,Cc,H,W)) -> (B,C,H,W).

    Levels l = 0..L-1 run at 1/2^l resolution with ``base_channels * channel_mults[l]`` channels and
    ``num_res_blocks`` residual blocks (decoder: one more, fed by the skips). ``attn_levels``: the levels
    with self-attention after each residual block (level 3 is 16x16 on 128x128 training crops, SR3's
    choice); ``mid_attn``: attention in the middle block. H and W must be multiples of 2^(L-1).
    ``guide_channels`` > 0 with ``guide_scales`` (factors 2^l of encoder levels l): guided encoder blocks, see
    :meth:`add_guidance` (0, the default, is the plain SR3 UNet: same tensors, same outputs).
    """

    def __init__(self, in_channels: int = 3, cond_channels: int = 3, out_channels: int = 3,
                 base_channels: int = 64, channel_mults: Sequence[int] = (1, 2, 4, 8, 8), num_res_blocks: int = 2,
                 attn_levels: Sequence[int] = (3,), mid_attn: bool = True, attn_heads: int = 1,
                 dropout: float = 0.0, norm_groups: int = 32, guide_channels: int = 0,
                 guide_scales: Sequence[int] = ()) -> None:
        super().__init__()
        mults = list(channel_mults)
        self.base_channels = base_channels
        self.size_multiple = 2 ** (len(mults) - 1)
        emb_dim = base_channels * 4
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.init_conv = nn.Conv2d(in_channels + cond_channels, base_channels, 3, padding=1)
        blk = dict(emb_dim=emb_dim, norm_groups=norm_groups, dropout=dropout, heads=attn_heads)

        self.downs = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        skips, ch = [base_channels], base_channels
        self.encoder_inputs: list[list[int]] = []  # input channels of every encoder block, per level
        for level, m in enumerate(mults):
            blocks = nn.ModuleList()
            self.encoder_inputs.append([])
            for _ in range(num_res_blocks):
                self.encoder_inputs[-1].append(ch)
                blocks.append(ResAttnBlock(ch, base_channels * m, attn=level in attn_levels, **blk))
                ch = base_channels * m
                skips.append(ch)
            self.downs.append(blocks)
            if level < len(mults) - 1:
                self.downsamplers.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = nn.ModuleList([ResAttnBlock(ch, ch, attn=mid_attn, **blk), ResAttnBlock(ch, ch, attn=False, **blk)])

        self.ups = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level in reversed(range(len(mults))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                out = base_channels * mults[level]
                blocks.append(ResAttnBlock(ch + skips.pop(), out, attn=level in attn_levels, **blk))
                ch = out
            self.ups.append(blocks)
            if level > 0:
                self.upsamplers.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.final = nn.Sequential(nn.GroupNorm(_groups(ch, norm_groups), ch), nn.SiLU(),
                                   nn.Conv2d(ch, out_channels, 3, padding=1))
        nn.init.zeros_(self.final[-1].weight)  # start as a zero predictor (ADM's zero_module)
        nn.init.zeros_(self.final[-1].bias)
        self.guide: nn.ModuleDict | None = None
        if guide_channels > 0:
            self.add_guidance(guide_channels, guide_scales)

    def add_guidance(self, guide_channels: int, guide_scales: Sequence[int]) -> None:
        """Make the encoder blocks of the levels at factors ``guide_scales`` (2^l for level l) guided blocks: a
        feature (B, guide_channels, H/2^l, W/2^l) given to :meth:`forward` enters every block of level l through
        :func:`~.guidance.guide_projection` (zero-initialised: the outputs stay the unguided ones until trained).
        New tensors only: ``guide.<factor>.<block>.*``. One-line ConfigError for a factor that is no level."""
        scales = check_scales(guide_scales, encoder_factors(len(self.downs)), "guide_scales")
        self.guide = nn.ModuleDict({str(s): nn.ModuleList([guide_projection(guide_channels, c) for c in
                                                           self.encoder_inputs[s.bit_length() - 1]]) for s in scales})

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None,
                guidance: Features | None = None) -> torch.Tensor:
        """x_t (B, C, H, W), t (B,) float, cond (B, Cc, H, W) or None, guidance: {factor: (B, guide_channels,
        H/factor, W/factor)} for guided levels (None or {} = unguided) -> (B, C, H, W)."""
        emb = self.time_mlp(timestep_embedding(t, self.base_channels).to(x_t.dtype))  # (B, 4*base)
        x = self.init_conv(torch.cat([x_t, cond], dim=1) if cond is not None else x_t)
        hs = [x]
        for i, blocks in enumerate(self.downs):
            entry = self._guided_level(guidance, 2 ** i)
            for j, block in enumerate(blocks):
                if entry is not None:  # a guided block: feature through its zero-initialised 1x1 conv, added
                    x = x + entry[1][j](entry[0])
                x = block(x, emb)
                hs.append(x)
            if i < len(self.downsamplers):
                x = self.downsamplers[i](x)
                hs.append(x)
        for block in self.mid:
            x = block(x, emb)
        for i, blocks in enumerate(self.ups):
            for block in blocks:
                x = block(torch.cat([x, hs.pop()], dim=1), emb)
            if i < len(self.upsamplers):
                x = self.upsamplers[i](F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.final(x)

    def _guided_level(self, guidance: Features | None, factor: int) -> tuple[torch.Tensor, nn.ModuleList] | None:
        """(feature, projections) of the level at ``factor`` when guidance for it is given, else None."""
        if not guidance or factor not in guidance:
            return None
        if self.guide is None or str(factor) not in self.guide:
            raise ConfigError(f"guidance at factor {factor}: this UNet has no guided blocks there "
                              f"(guided factors: {', '.join(self.guide) if self.guide else 'none'})")
        return guidance[factor], self.guide[str(factor)]
