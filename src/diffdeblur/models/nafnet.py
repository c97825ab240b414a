"""NAFNet: Simple Baselines for Image Restoration (Chen et al., ECCV 2022, arXiv 2204.04676).

Faithful to megvii-research/NAFNet ``basicsr/models/archs/NAFNet_arch.py``: NAFBlocks (LayerNorm,
1x1 conv c->2c, 3x3 depthwise conv, SimpleGate, simplified channel attention, 1x1 conv, residual
scaled by a zero-initialised per-channel beta; then a SimpleGate FFN scaled by gamma), a U-shape
with 2x2 stride-2 down convs, 1x1 conv + PixelShuffle up, additive skips, and a global residual.

Test-time local statistics (TLC, ``local_arch.py``): with ``tlc=True`` every global average pool
of the channel attention becomes, in eval mode, a local average over a window 1.5x the feature
size seen at the training crop size, so that statistics at 1280x720 match those of the crops.

Optionally (``prior_dim > 0``) every decoder level fuses a prior vector by per-channel scale and
shift before its blocks (BlurDM's prior fusion; see :class:`~diffdeblur.models.blocks.PriorFusion`).
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

TILE_CONTEXT_FRACTION = 5 / 12  # tile context / widest TLC window (measured, see NAFNet.tile_context)
TLC_FACTOR = 1.5  # window = 1.5x the training-size feature map (NAFNet local_arch base_size)


def local_avg_pool(x: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Mean over a kh x kw window around every pixel (edge-replicated), via integral images.

    Falls back to the global mean when the window covers the whole map. (B, C, H, W) -> same shape.
    """
    _, _, h, w = x.shape
    # The shortcut is exact (a window over the whole map is its mean), but a Python branch on the
    # map's size would be frozen into an exported graph at the export size; when tracing (ONNX
    # export, torch.compile) the integral-image path runs for every size, clamped to the map.
    if kh >= h and kw >= w and not torch.compiler.is_compiling():
        return x.mean(dim=(2, 3), keepdim=True)
    kh, kw = torch.sym_min(kh, h), torch.sym_min(kw, w)
    # box sums in float32 of the mean-removed map: sums stay small, so the box differences keep
    # ~1e-6 relative accuracy (float64 would cost ~2x the whole network's time at 720p)
    mean = x.mean(dim=(2, 3), keepdim=True)
    d = (x - mean).float()
    if torch.compiler.is_compiling() or d.requires_grad:  # one graph for every size; differentiable
        s = F.pad(d.cumsum(2).cumsum(3), (1, 0, 1, 0))
        box = s[..., kh:, kw:] - s[..., :-kh, kw:] - s[..., kh:, :-kw] + s[..., :-kh, :-kw]
        box = (box / (kh * kw)).to(x.dtype) + mean
    else:  # inference: the same sums in fewer passes, in the input's memory format
        box = _box_sums_eager(d, kh, kw).mul_(1.0 / (kh * kw)).add_(mean.float()).to(x.dtype)  # fresh map: in place
    return F.pad(box, ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2), mode="replicate")


def _box_sums_eager(d: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Sums over every kh x kw window: (B, C, H, W) -> (B, C, H - kh + 1, W - kw + 1), same memory format.

    Along W a cumulative sum; along H a running sum of rows, one vectorised add per row: ATen's cumsum
    scans a strided dimension one column at a time (2-4x slower at 720p, more so on NHWC maps)."""
    b, c, h, w = d.shape
    nhwc = d.is_contiguous(memory_format=torch.channels_last) and not d.is_contiguous()
    s = _cumsum_w_nhwc(d) if nhwc else d.cumsum(3)  # ATen's cumsum would return an NCHW map
    rows = torch.empty_like(s[..., kw - 1:])  # (B, C, H, W - kw + 1)
    rows[..., :1] = s[..., kw - 1:kw]
    torch.sub(s[..., kw:], s[..., :w - kw], out=rows[..., 1:])
    acc = torch.empty((b, c, h + 1, rows.shape[-1]), dtype=rows.dtype, device=rows.device,
                      memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    acc[:, :, 0].zero_()
    for i in range(h):
        torch.add(acc[:, :, i], rows[:, :, i], out=acc[:, :, i + 1])
    return acc[:, :, kh:] - acc[:, :, :h + 1 - kh]


def _cumsum_w_nhwc(d: torch.Tensor, block: int = 32) -> torch.Tensor:
    """``d.cumsum(3)`` of a channels-last (B, C, H, W) map, kept channels-last: a running sum inside blocks of
    ``block`` columns (one add of all (B, H, blocks, C) per column of a block), then each block's offset."""
    b, c, h, w = d.shape
    n = -(-w // block)
    v = d.permute(0, 2, 3, 1)  # (B, H, W, C), contiguous
    if n * block != w:
        v = F.pad(v, (0, 0, 0, n * block - w))
    v = v.reshape(b, h, n, block, c)
    out = torch.empty_like(v)
    out[:, :, :, 0] = v[:, :, :, 0]
    for i in range(1, block):
        torch.add(out[:, :, :, i - 1], v[:, :, :, i], out=out[:, :, :, i])
    if n > 1:
        out[:, :, 1:] += out[:, :, :-1, -1:].cumsum(2)
    return out.reshape(b, h, n * block, c)[:, :, :w].permute(0, 3, 1, 2)


class SimpleGate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


class SCA(nn.Module):
    """Simplified channel attention: pool -> 1x1 conv. ``window`` (set by TLC) makes the pool local."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        self.window: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window is not None and not self.training:
            pooled = local_avg_pool(x, self.window, self.window)
        else:
            pooled = x.mean(dim=(2, 3), keepdim=True)
        return self.conv(pooled)


class NAFBlock(nn.Module):
    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2, drop_out_rate: float = 0.0) -> None:
        super().__init__()
        dw = c * dw_expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = SCA(dw // 2)
        self.sg = SimpleGate()
        ffn = ffn_expand * c
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.dropout1 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.dropout2 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        x = self.dropout1(self.conv3(x * self.sca(x)))
        y = inp + x * self.beta
        x = self.dropout2(self.conv5(self.sg(self.conv4(self.norm2(y)))))
        return y + x * self.gamma


class NAFNet(HyperParameters, nn.Module):
    """NAFNet. forward(x: (B, 3, H, W) in [0, 1], prior: (B, prior_dim) | None) -> (B, 3, H, W)."""


    def __init__(self, img_channel: int = 3, width: int = 32, middle_blk_num: int = 1,
                 enc_blk_nums: tuple[int, ...] | list[int] = (1, 1, 1, 28),
                 dec_blk_nums: tuple[int, ...] | list[int] = (1, 1, 1, 1),
                 tlc: bool = True, train_size: int = 256, prior_dim: int = 0) -> None:
        super().__init__()
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ConfigError("enc_blk_nums and dec_blk_nums must have the same length")
        self.intro = nn.Conv2d(img_channel, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        self.encoders, self.decoders, self.ups, self.downs = (nn.ModuleList() for _ in range(4))
        self.fusions = nn.ModuleList()
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[self.make_block(chan) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[self.make_block(chan) for _ in range(middle_blk_num)])
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            if prior_dim > 0:
                self.fusions.append(PriorFusion(prior_dim, chan))
            self.decoders.append(nn.Sequential(*[self.make_block(chan) for _ in range(num)]))
        self.size_multiple = 2 ** len(enc_blk_nums)
        self.prior_dim = prior_dim
        if tlc:
            self.set_tlc_windows(train_size)

    def make_block(self, channels: int) -> nn.Module:
        """The block of every level (a subclass may return a conditioned NAFBlock with the same names)."""
        return NAFBlock(channels)

    def set_tlc_windows(self, train_size: int | None) -> None:
        """Window per level = 1.5x the feature size that a train_size crop has at that level (a test-time
        choice; None = the global pools of training, no TLC)."""
        levels = [(self.encoders[i], i) for i in range(len(self.encoders))]
        levels += [(self.middle_blks, len(self.encoders))]
        levels += [(self.decoders[i], len(self.decoders) - 1 - i) for i in range(len(self.decoders))]
        for module, level in levels:
            window = None if train_size is None else max(1, int(train_size * TLC_FACTOR) >> level)
            for m in module.modules():
                if isinstance(m, SCA):
                    m.window = window

    @property
    def tile_context(self) -> int:
        """Input pixels beyond a tile that the output inside it meaningfully depends on (tiled inference
        grows every tile by it, :func:`diffdeblur.tiling.tiled_apply`): :data:`TILE_CONTEXT_FRACTION` of the
        widest TLC window in image pixels (``window << level``), rounded up to ``size_multiple`` so that grown
        tiles need no padding; 0 without TLC (global pools see the whole tile: no margin makes tiles exact).

        The fraction is measured: the shipped default (train_size 128, 192-pixel windows) on a 1280x720
        REDS frame, tiles of 256 overlapping by 32, PSNR tiled vs whole (float): 40.4 dB with no
        context, 44.3 at 32, 49.3 at 48, 53.3 at 64, 56.9 at 80 (its context), 60.1 at 96, 66.2 at 128; on a
        GoPro frame 64 gave only 51.1, so the default keeps 80 (benchmarks/bench/tiled_vs_whole.py)."""
        levels = [(self.encoders[i], i) for i in range(len(self.encoders))]
        levels += [(self.middle_blks, len(self.encoders))]
        levels += [(self.decoders[i], len(self.decoders) - 1 - i) for i in range(len(self.decoders))]
        widest = max((m.window << level for module, level in levels for m in module.modules()
                      if isinstance(m, SCA) and m.window is not None), default=0)
        if widest == 0:
            return 0
        return math.ceil(widest * TILE_CONTEXT_FRACTION / self.size_multiple) * self.size_multiple

    def forward(self, inp: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        x, h, w = pad_to_multiple(inp, self.size_multiple)
        return self.body(self.intro(x), x, prior)[:, :, :h, :w]

    def body(self, x: torch.Tensor, skip_in: torch.Tensor, prior: torch.Tensor | None = None,
             emb: torch.Tensor | None = None) -> torch.Tensor:
        """Encoders, middle, decoders and ending on the intro features ``x``, plus the global residual
        ``skip_in`` (the padded input). ``emb`` (B, E): passed to every block as ``block(x, emb)``
        (time-conditioned subclasses, :mod:`.time_nafnet`); None runs the plain blocks."""
        encs = []
        for encoder, down in zip(self.encoders, self.downs):
            x = _run_blocks(encoder, x, emb)
            encs.append(x)
            x = down(x)
        x = _run_blocks(self.middle_blks, x, emb)
        for i, (decoder, up, enc_skip) in enumerate(zip(self.decoders, self.ups, encs[::-1])):
            x = up(x) + enc_skip
            if self.prior_dim > 0:
                x = self.fusions[i](x, prior)
            x = _run_blocks(decoder, x, emb)
        return self.ending(x) + skip_in

    @restore_options
    def restore(self, blur: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] (+ optional prior (B, D)) -> restored (B, 3, H, W) in [0, 1]."""
        return self.forward(blur, prior).clamp(0, 1)


def _run_blocks(blocks: nn.Sequential, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
    if emb is None:
        return blocks(x)
    for block in blocks:
        x = block(x, emb)
    return x


GOPRO = dict(middle_blk_num=1, enc_blk_nums=(1, 1, 1, 28), dec_blk_nums=(1, 1, 1, 1))
LITE = dict(middle_blk_num=2, enc_blk_nums=(1, 1, 1, 2), dec_blk_nums=(1, 1, 1, 1))
