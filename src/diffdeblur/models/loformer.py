"""LoFormer (Mao et al., "LoFormer: Local Frequency Transformer for Image Deblurring", ACM MM 2024,
arXiv 2407.16993). Faithful to INVOKERer/LoFormer ``basicsr/models/archs/LoFormer_arch.py`` (class
``LoFormer`` with ``cs = 'channel_mlp'``, ``ffn = 'ffn'``, ``up_method = 'upshuffle'``, as in
``Motion_Deblurring/Options/train_GoPro_Loformer*_600k_8gpu.yml``) and ``dct_util.py`` (``DCT2x`` / ``IDCT2x``).

A Restormer-like U-Net (3x3 patch embedding, three encoder levels at C, 2C, 4C, a middle stage at 8C,
pixel-(un)shuffle resizing, concatenated skips reduced by 1x1 convs except at the top level, which stays at
2C, and a 3x3 output conv added to the input) whose unit is the Local Frequency Transformer block (LoFT):

    Z = DCT(x)                     orthonormal 2-D DCT-II of the whole feature map (each channel)
    Z = Z + FreqLC(LN(Z))          local channel-wise self-attention in 8x8 windows of DCT coefficients,
                                   gated by MGate: out * GELU(Linear_64x64(v)) (the linear mixes the 64
                                   frequencies of a window)
    x = IDCT(Z)
    x = x + GDFN(LN(x))            Restormer's gated depth-wise FFN (expansion 2.66, GELU)

Every count in ``enc_blk_nums`` / ``middle_blk_num`` / ``dec_blk_nums`` is a *pair* of LoFT blocks (the
reference's ``TransformerBlock_2b``). Decoder heads are the encoder heads reversed; the window is 8 at every
level (``window_size_*`` and ``grid_size_*`` are all 8 in the reference configs).

Sizes (the reference's ``__main__``): LoFormer-S dim 32, pairs (1, 2, 3) / 7 / (3, 2, 2); LoFormer-B dim 36
and LoFormer-L dim 48, both (1, 2, 6) / 9 / (6, 2, 2); heads (1, 2, 4), middle 8, window 8, expansion 2.66.
``PUBLISHED`` (the constructor defaults) is LoFormer-S, the size BlurDM used: its official code
(Jin-Ting-He/BlurDM ``src/LoFormer/deblur_predict_ddp.py``) builds ``LoFormerPrior(train_size=384)``, whose
defaults (``src/LoFormer/models/LoFormerBlurDM.py``) are dim 32, (1, 2, 3) / 7 / (3, 2, 2). (The same repo also
holds an unused ``LoFormerPriorBig`` with LoFormer-B's sizes.)

Parameters (counted here on the meta device): LoFormer-S 16,382,661; LoFormer-B 27,925,041; LoFormer-L
49,031,521. Paper (Table 1, LoFormer-S): 16.4 M - recalled, not read: the paper's table was not reachable from
this project's sources, only its abstract ("34.09 dB on GoPro with 126G FLOPs", LoFormer-L).
MACs at 256x256 (FlopCounterMode, FLOPs / 2, one image): LoFormer-S 83.6 G, of which the DCT/IDCT matrix
products are 27.9 G (55.8 G without them); LoFormer-L 197.2 G (DCT 44.4 G, 152.8 G without). The paper's
figures come from the reference ``flops()``, which counts each DCT as C*H*W*log2(H*W) (a fast transform) and
the GDFN and resizing convs loosely (e.g. the GDFN input conv at half its width); that formula, applied to
this module's sizes, gives LoFormer-S 47.0 G, -B 73.0 G, -L 126.4 G - the paper's 126G for LoFormer-L.

Read from the reference, not reconstructed: every layer, width, bias flag, the temperature initialisation
(ones / sqrt(C)), the reflect padding of the input to a multiple of 8 and of q, k, v to a multiple of the
window (here replicate where a side is smaller than its pad, which the reference cannot run), the DCT
matrix (``get_dctMatrix``), the pre-norm-in-the-DCT-domain order. Inferred rather than read: the LayerNorm
is Restormer's ``WithBias`` layer norm (eps 1e-5) - LoFormer's ``norm_util.py`` is not stored, but its
``LayerNorm(dim, LayerNorm_type)`` call is Restormer's. Not in the reference: ``prior_dim > 0`` adds this
project's PriorFusion (BlurDM's prior fusion, x * (1 + k) + v) at the input of each decoder level (LoFormer
has no refinement stage); BlurDM's own ``LoFormerPrior`` instead applies x * k + v from a 256-d prior inside
the attention of every decoder LoFT (after its layer norm, in the DCT domain).
Images are (B, 3, H, W) float in [0, 1].
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .blocks import LayerNorm2d, PriorFusion, pad_to_multiple
from .hparams import HyperParameters
from .protocol import restore_options

# LoFormer-S: 16,382,661 parameters, 83.6 GMACs at 256x256
PUBLISHED = dict(dim=32, enc_blk_nums=(1, 2, 3), middle_blk_num=7, dec_blk_nums=(3, 2, 2))
# CPU-sized: 366,971 parameters, 6.0 GMACs at 256x256
SMALL = dict(dim=8, enc_blk_nums=(1, 1, 1), middle_blk_num=1, dec_blk_nums=(1, 1, 1))
# tests: 89,947 parameters
TINY = dict(dim=4, enc_blk_nums=(1, 1, 1), middle_blk_num=1, dec_blk_nums=(1, 1, 1), heads=(1, 1, 2),
            heads_mid=2, window_size=4)


def dct_matrix(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n, n), float32: D[k, j] = s_k cos(pi (2j + 1) k / 2n), s_0 = sqrt(1/n),
    s_k = sqrt(2/n). ``D @ x`` transforms along x's first axis and ``D.T @ X`` inverts it.

    The angle index (2j + 1) k is reduced mod 4n in integers, so the cosine keeps float32 accuracy for large n."""
    k = torch.arange(n, device=device)
    m = (2 * k[None, :] + 1) * k[:, None] % (4 * n)
    d = torch.cos(m.float() * (math.pi / (2 * n))) * math.sqrt(2 / n)
    d[0] = math.sqrt(1 / n)
    return d


def dct2(x: torch.Tensor) -> torch.Tensor:
    """2-D orthonormal DCT-II over the last two axes: (..., H, W) -> (..., H, W) = D_H x D_W^T."""
    dh, dw = (dct_matrix(n, x.device).to(x.dtype) for n in x.shape[-2:])
    return dh @ x @ dw.T


def idct2(z: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2`: (..., H, W) -> (..., H, W) = D_H^T z D_W."""
    dh, dw = (dct_matrix(n, z.device).to(z.dtype) for n in z.shape[-2:])
    return dh.T @ z @ dw


class FreqLC(nn.Module):
    """Local channel-wise self-attention in ws x ws windows (Freq-LC) with the MLP gate (MGate).

    x: (B, C, H, W) -> (B, C, H, W). q, k, v = depth-wise 3x3 (1x1 (x)); per window and head, the (c, c)
    attention softmax(q k^T * t) over the ws*ws positions, applied to v, times GELU(Linear(v)) whose linear
    mixes the ws*ws positions of the window; then a 1x1 projection.
    """

    def __init__(self, dim: int, heads: int, window: int, bias: bool) -> None:
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=bias)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1) / math.sqrt(dim))
        self.gate = nn.Sequential(nn.Linear(window * window, window * window), nn.GELU())
        self.project_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n, ws = self.heads, self.window
        qkv, _, _ = pad_to_multiple(self.qkv_dwconv(self.qkv(x)), ws)
        nh, nw = qkv.shape[-2] // ws, qkv.shape[-1] // ws
        # (B, 3C, nh ws, nw ws) -> 3 x (B nh nw, heads, C/heads, ws*ws)
        q, k, v = (qkv.reshape(b, 3, n, c // n, nh, ws, nw, ws).permute(1, 0, 4, 6, 2, 3, 5, 7)
                   .reshape(3, b * nh * nw, n, c // n, ws * ws).unbind(0))
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        out = (attn @ v) * self.gate(v)
        out = out.reshape(b, nh, nw, n, c // n, ws, ws).permute(0, 3, 4, 1, 5, 2, 6).reshape(b, c, nh * ws, nw * ws)
        return self.project_out(out[:, :, :h, :w])


class GDFN(nn.Module):
    """Gated depth-wise feed-forward network (Restormer): (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int, expansion: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class LoFT(nn.Module):
    """Local Frequency Transformer block: attention on the layer-normed DCT of x, residual in the DCT domain,
    inverse DCT, then a pre-norm GDFN residual. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int, heads: int, window: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-5)
        self.attn = FreqLC(dim, heads, window, bias)
        self.norm2 = LayerNorm2d(dim, eps=1e-5)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = dct2(x)
        x = idct2(z + self.attn(self.norm1(z)))
        return x + self.ffn(self.norm2(x))


class LoFormer(HyperParameters, nn.Module):
    """forward(x, prior=None): (B, 3, H, W) (+ prior (B, prior_dim)) -> (B, 3, H, W), any H, W."""

    def __init__(self, dim: int = 32, enc_blk_nums: tuple[int, ...] | list[int] = (1, 2, 3),
                 middle_blk_num: int = 7, dec_blk_nums: tuple[int, ...] | list[int] = (3, 2, 2),
                 heads: tuple[int, ...] | list[int] = (1, 2, 4), heads_mid: int = 8, window_size: int = 8,
                 ffn_expansion_factor: float = 2.66, bias: bool = True, prior_dim: int = 0) -> None:
        super().__init__()
        if not len(enc_blk_nums) == len(dec_blk_nums) == len(heads):
            raise ConfigError("LoFormer: enc_blk_nums, dec_blk_nums and heads must have the same length")

        def stage(c: int, pairs: int, n_heads: int) -> nn.Sequential:
            return nn.Sequential(*[LoFT(c, n_heads, window_size, ffn_expansion_factor, bias)
                                   for _ in range(2 * pairs)])

        self.size_multiple = 2 ** len(enc_blk_nums)
        self.prior_dim = prior_dim
        self.patch_embed = nn.Conv2d(3, dim, 3, padding=1, bias=False)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        chan = dim
        for pairs, n_heads in zip(enc_blk_nums, heads):
            self.encoders.append(stage(chan, pairs, n_heads))
            self.downs.append(nn.Sequential(nn.Conv2d(chan, chan // 2, 3, padding=1, bias=False),
                                            nn.PixelUnshuffle(2)))
            chan *= 2
        self.middle = stage(chan, middle_blk_num, heads_mid)
        self.ups, self.reduce_chan, self.decoders = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        widths = []
        for j, (pairs, n_heads) in enumerate(zip(dec_blk_nums, heads[::-1])):
            self.ups.append(nn.Sequential(nn.Conv2d(chan, 2 * chan, 3, padding=1, bias=False), nn.PixelShuffle(2)))
            last = j == len(dec_blk_nums) - 1  # the top level keeps the concatenated 2 * dim channels
            self.reduce_chan.append(nn.Identity() if last else nn.Conv2d(chan, chan // 2, 1, bias=bias))
            chan = chan if last else chan // 2
            widths.append(chan)
            self.decoders.append(stage(chan, pairs, n_heads))
        self.output = nn.Conv2d(chan, 3, 3, padding=1, bias=bias)
        self.fusions = nn.ModuleList([PriorFusion(prior_dim, c) for c in widths]) if prior_dim > 0 else None

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        padded, h, w = pad_to_multiple(x, self.size_multiple)
        z = self.patch_embed(padded)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            z = encoder(z)
            skips.append(z)
            z = down(z)
        z = self.middle(z)
        for i, (up, reduce, decoder) in enumerate(zip(self.ups, self.reduce_chan, self.decoders)):
            z = reduce(torch.cat([up(z), skips.pop()], dim=1))
            if self.fusions is not None:
                z = self.fusions[i](z, prior)
            z = decoder(z)
        return self.output(z)[:, :, :h, :w] + x

    @restore_options
    def restore(self, blur: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] (+ optional prior (B, D)) -> restored (B, 3, H, W) in [0, 1]."""
        return self.forward(blur, prior).clamp(0, 1)
