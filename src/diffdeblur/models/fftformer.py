"""FFTformer (Kong, Dong, Ge, Li and Pan, "Efficient Frequency Domain-based Transformers for High-Quality Image
Deblurring", CVPR 2023, arXiv 2211.12250). Faithful to kkkls/FFTformer ``basicsr/models/archs/fftformer_arch.py``.

A three-level Restormer-style U-shape (3x3 conv embedding; bilinear x0.5 + 3x3 conv down, bilinear x2 + 3x3
conv up; a refinement stage at full resolution; a global residual on the input) whose blocks compute in
8x8 patches of the frequency domain:

- DFFN (every block): 1x1 conv to 2h channels, each 8x8 patch's rfft2 times a learnt per-channel 8x5
  spectrum (the JPEG-like quantisation matrix, initialised to ones), irfft2, 3x3 depthwise conv, GELU gate,
  1x1 conv back (h = ffn_expansion_factor * C);
- FSAS (decoder and refinement blocks only, the paper's asymmetric design): 1x1 + 3x3 depthwise convs to
  q, k, v (2C each), irfft2(rfft2(q) * rfft2(k)) per 8x8 patch, LayerNorm, times v, 1x1 conv back;
- the skips are merged by ``Fuse``: 1x1 conv of [decoder, encoder], a DFFN-only block at 2x width with
  expansion 2.66 (fixed in the reference), 1x1 conv, and the sum of the two halves.

The FFTs run in float32 (as the reference, which casts before ``rfft2``) and their results are cast back
to the input's dtype. Every level's features are cut in 8x8 patches and there are two x0.5 downsamplings,
so H and W must be multiples of 32: :meth:`FFTformer.forward` pads (reflect) and crops back.

Parameters: ``PUBLISHED`` 16.54 M (paper: 16.6 M, as listed with its GoPro results on paperswithcode.com;
the reference also builds an unused 1x1 conv ``reduce_chan_level2``, 18 K parameters, left out here);
``SMALL`` 0.494 M; ``TINY`` 0.113 M. Measured here: 131.4 G MACs at 256x256 for ``PUBLISHED`` (4.8 G for
``SMALL``), convolutions only: torch's FlopCounterMode counts neither the FFTs nor the elementwise
products; paper: FLOPs figure not found in the sources available here.

``prior_dim > 0`` adds BlurDM's prior fusion (:class:`~diffdeblur.models.blocks.PriorFusion`, per-channel
scale and shift) where features enter each decoder stage: before ``decoder_level3`` (the encoder's
output), ``decoder_level2`` and ``decoder_level1`` (after their ``Fuse``), and ``refinement``.
Images are (B, 3, H, W) float in [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .blocks import LayerNorm2d, PriorFusion, pad_to_multiple
from .hparams import HyperParameters
from .protocol import restore_options

PATCH = 8  # side of the patches FSAS and DFFN transform
LN_EPS = 1e-5  # the reference's (Restormer's) WithBias LayerNorm
FUSE_FFN_EXPANSION = 2.66  # the reference's TransformerBlock default, used by Fuse

PUBLISHED = dict(dim=48, num_blocks=(6, 6, 12), num_refinement_blocks=4, ffn_expansion_factor=3, bias=False)
SMALL = dict(dim=16, num_blocks=(1, 1, 2), num_refinement_blocks=1, ffn_expansion_factor=3, bias=False)
TINY = dict(dim=8, num_blocks=(1, 1, 1), num_refinement_blocks=1, ffn_expansion_factor=3, bias=False)


def patch_rfft2(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W), H and W multiples of 8 -> complex (B, C, H/8, 8, W/8, 5): each 8x8 patch's rfft2 (float32)."""
    b, c, h, w = x.shape
    return torch.fft.rfft2(x.float().reshape(b, c, h // PATCH, PATCH, w // PATCH, PATCH), dim=(3, 5))


def patch_irfft2(spectrum: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`patch_rfft2`, back to the shape and dtype of ``like`` (B, C, H, W)."""
    return torch.fft.irfft2(spectrum, s=(PATCH, PATCH), dim=(3, 5)).reshape(like.shape).to(like.dtype)


class DFFN(nn.Module):
    """Discriminative frequency-domain FFN: (B, C, H, W) -> (B, C, H, W), H, W multiples of 8."""

    def __init__(self, dim: int, expansion: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        # per channel, the gain of each (row, column) frequency of a patch's rfft2; the reference stores it as
        # (2h, 1, 1, 8, 5), kept 3-D here so that channels-last conversion (4-D and 5-D tensors) leaves it alone
        self.fft = nn.Parameter(torch.ones(2 * hidden, PATCH, PATCH // 2 + 1))
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project_in(x)
        x = patch_irfft2(patch_rfft2(x) * self.fft[:, None, :, None, :], x)
        x1, x2 = self.dwconv(x).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class FSAS(nn.Module):
    """Frequency-domain self-attention solver: (B, C, H, W) -> (B, C, H, W), H, W multiples of 8."""

    def __init__(self, dim: int, bias: bool) -> None:
        super().__init__()
        self.to_hidden = nn.Conv2d(dim, 6 * dim, 1, bias=bias)
        self.to_hidden_dw = nn.Conv2d(6 * dim, 6 * dim, 3, padding=1, groups=6 * dim, bias=bias)
        self.project_out = nn.Conv2d(2 * dim, dim, 1, bias=bias)
        self.norm = LayerNorm2d(2 * dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.to_hidden_dw(self.to_hidden(x)).chunk(3, dim=1)
        attention = patch_irfft2(patch_rfft2(q) * patch_rfft2(k), q)
        return self.project_out(v * self.norm(attention))


class FFTformerBlock(nn.Module):
    """Pre-norm residual block: [x + FSAS(LN(x))] (if ``attention``), then x + DFFN(LN(x)). Shape-preserving."""

    def __init__(self, dim: int, expansion: float, bias: bool, attention: bool) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=LN_EPS) if attention else None
        self.attn = FSAS(dim, bias) if attention else None
        self.norm2 = LayerNorm2d(dim, eps=LN_EPS)
        self.ffn = DFFN(dim, expansion, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn is not None:
            x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def stage(dim: int, n: int, expansion: float, bias: bool, attention: bool) -> nn.Sequential:
    return nn.Sequential(*[FFTformerBlock(dim, expansion, bias, attention) for _ in range(n)])


class Fuse(nn.Module):
    """Skip merge: decoder (B, C, H, W) and encoder (B, C, H, W) features -> (B, C, H, W)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * dim, 2 * dim, 1)
        self.att_channel = FFTformerBlock(2 * dim, FUSE_FFN_EXPANSION, bias=False, attention=False)
        self.conv2 = nn.Conv2d(2 * dim, 2 * dim, 1)

    def forward(self, dec: torch.Tensor, enc: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.att_channel(self.conv(torch.cat([dec, enc], dim=1))))
        d, e = x.chunk(2, dim=1)
        return d + e


def resample(cin: int, cout: int, scale: float) -> nn.Sequential:
    """Bilinear resize by ``scale`` then a bias-free 3x3 conv cin -> cout (the reference's Down/Upsample)."""
    return nn.Sequential(nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=False),
                         nn.Conv2d(cin, cout, 3, padding=1, bias=False))


class FFTformer(HyperParameters, nn.Module):
    """forward(x, prior=None): (B, 3, H, W) in [0, 1], any H, W (+ optional prior (B, prior_dim)) -> (B, 3, H, W).

    Defaults are the published GoPro configuration (``PUBLISHED``). Encoder blocks are DFFN-only; decoder
    and refinement blocks add FSAS.
    """

    size_multiple = 4 * PATCH  # 8x8 patches at 1/4 resolution

    def __init__(self, dim: int = 48, num_blocks: tuple[int, ...] | list[int] = (6, 6, 12),
                 num_refinement_blocks: int = 4, ffn_expansion_factor: float = 3, bias: bool = False,
                 prior_dim: int = 0) -> None:
        super().__init__()
        if len(num_blocks) != 3:
            raise ConfigError(f"num_blocks must have 3 entries (one per level), got {list(num_blocks)}")
        n1, n2, n3 = num_blocks
        c1, c2, c3 = dim, 2 * dim, 4 * dim
        f = ffn_expansion_factor
        self.patch_embed = nn.Conv2d(3, c1, 3, padding=1, bias=False)
        self.encoder_level1 = stage(c1, n1, f, bias, attention=False)
        self.down1_2 = resample(c1, c2, 0.5)
        self.encoder_level2 = stage(c2, n2, f, bias, attention=False)
        self.down2_3 = resample(c2, c3, 0.5)
        self.encoder_level3 = stage(c3, n3, f, bias, attention=False)
        self.decoder_level3 = stage(c3, n3, f, bias, attention=True)
        self.up3_2 = resample(c3, c2, 2)
        self.fuse2 = Fuse(c2)
        self.decoder_level2 = stage(c2, n2, f, bias, attention=True)
        self.up2_1 = resample(c2, c1, 2)
        self.fuse1 = Fuse(c1)
        self.decoder_level1 = stage(c1, n1, f, bias, attention=True)
        self.refinement = stage(c1, num_refinement_blocks, f, bias, attention=True)
        self.output = nn.Conv2d(c1, 3, 3, padding=1, bias=bias)
        self.prior_dim = prior_dim
        self.fusions = nn.ModuleList([PriorFusion(prior_dim, c) for c in (c3, c2, c1, c1)]) if prior_dim > 0 else None

    def _fuse(self, i: int, z: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
        return self.fusions[i](z, prior) if self.fusions is not None else z

    def forward_padded(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, 3, H, W) with H, W multiples of 32 -> (B, 3, H, W) (the input plus the predicted residual)."""
        enc1 = self.encoder_level1(self.patch_embed(x))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        z = self.encoder_level3(self.down2_3(enc2))
        z = self.decoder_level3(self._fuse(0, z, prior))
        z = self.decoder_level2(self._fuse(1, self.fuse2(self.up3_2(z), enc2), prior))
        z = self.decoder_level1(self._fuse(2, self.fuse1(self.up2_1(z), enc1), prior))
        z = self.refinement(self._fuse(3, z, prior))
        return self.output(z) + x

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        padded, h, w = pad_to_multiple(x, self.size_multiple)
        return self.forward_padded(padded, prior)[:, :, :h, :w]

    @restore_options
    def restore(self, blur: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] (+ optional prior (B, D)) -> restored (B, 3, H, W) in [0, 1]."""
        return self.forward(blur, prior).clamp(0, 1)
