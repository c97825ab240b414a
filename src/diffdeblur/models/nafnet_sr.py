"""A super-resolution network of the NAFNet family, CPU-sized: NAFSSR's single-view path.

Chu, Chen, Chen & Lu, "NAFSSR: Stereo Image Super-Resolution Using NAFNet", CVPRW 2022 (arXiv 2204.08714), without
its stereo cross-attention: a 3x3 intro conv, a stack of NAFBlocks at the low resolution (the blocks of
:mod:`.nafnet`, reused as they are), a 3x3 conv to 3 s^2 channels and PixelShuffle(s), plus a global residual, the
bicubic upsampling of the input (:func:`bicubic_upsample`; NAFSSR uses bilinear). The upsampling conv starts at
zero, so that an untrained network is bicubic interpolation exactly. Images are (B, 3, H, W) float in [0, 1] in,
(B, 3, s H, s W) out, s = ``scale`` (2 or 4).

Test-time local statistics (TLC, as :class:`~.nafnet.NAFNet`): with ``tlc=True`` the channel attention's global
average pool becomes, in eval mode, a local mean over a window :data:`~.nafnet.TLC_FACTOR` x ``train_size``
(the side of the low-resolution training crops), so that statistics on a whole photo match those of the crops.
With no down-sampling in the body, the pixels an output depends on are bounded exactly (:func:`stack_reach`):
tiled inference grows tiles by ``tile_context`` (the convolutions' reach; tiles equal the whole image to far
above 45 dB with trained weights) or, with ``exact_tiles``, by the exact reach (equal to float rounding).
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..options import SR_SCALES
from .blocks import pad_to_multiple
from .hparams import HyperParameters
from .nafnet import SCA, TLC_FACTOR, NAFBlock
from .protocol import restore_options

SCALES = SR_SCALES  # the upscaling factors the network is built for
BICUBIC_REACH = 2  # input pixels beyond a point that bicubic interpolation reads (a 4-tap kernel)
CONV_REACH = 1  # a 3x3 convolution reads one pixel beyond


def bicubic_upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, scale H, scale W): PyTorch's bicubic interpolation (align_corners=False, a = -0.75,
    edge pixels replicated), unclamped. The network's global residual and the SR chains' conditioning."""
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h * scale, w * scale), mode="bicubic", align_corners=False)


def block_reach(block: nn.Module) -> int | None:
    """Pixels beyond a point that a NAFBlock's output there depends on: one for its 3x3 depthwise conv plus half
    its local-statistics window (the box is clamped and shifted at a map's edge, never wider); None while the
    block pools globally (no TLC window: the output depends on the whole map)."""
    windows = [m.window for m in block.modules() if isinstance(m, SCA)]
    if any(w is None for w in windows):
        return None
    return CONV_REACH + max((w // 2 for w in windows), default=0)


def stack_reach(blocks: Iterable[nn.Module]) -> int | None:
    """Pixels beyond a point that the output of ``3x3 conv -> blocks -> 3x3 conv`` depends on, at one resolution
    (the reaches add up; NAFBlocks have :func:`block_reach`, other modules none); None when a block pools globally.

    It is at least the widest window, so that a tile grown by it and cut at no more than one image edge is never
    narrower than a window: a narrower map would shrink the window (``local_avg_pool`` clamps it to the map)."""
    total, widest = 2 * CONV_REACH, 0
    for block in blocks:
        if isinstance(block, NAFBlock):
            reach = block_reach(block)
            if reach is None:
                return None
            total += reach
            widest = max([widest] + [m.window for m in block.modules() if isinstance(m, SCA)])
    return max(total, widest)


class NAFNetSR(HyperParameters, nn.Module):
    """NAFNet-family super-resolution (see the module docstring).

    ``scale``: 2 or 4 (anything else is a one-line ConfigError); ``width``: channels of the body; ``num_blocks``:
    NAFBlocks at the low resolution; ``tlc`` / ``train_size``: test-time local statistics windows of
    ``TLC_FACTOR x train_size`` input pixels (``train_size`` = the low-resolution side of the training crops).
    forward(x (B, 3, H, W) in [0, 1]) -> (B, 3, scale H, scale W), unclamped; :meth:`restore` clamps to [0, 1].
    """

    def __init__(self, scale: int = 4, width: int = 48, num_blocks: int = 16, tlc: bool = True,
                 train_size: int = 32) -> None:
        super().__init__()
        if scale not in SCALES:
            raise ConfigError(f"NAFNetSR: scale {scale} is not supported (supported: {', '.join(map(str, SCALES))})")
        if width < 1 or num_blocks < 0 or train_size < 1:
            raise ConfigError(f"NAFNetSR: width and train_size must be >= 1 and num_blocks >= 0, got {width}, "
                              f"{train_size}, {num_blocks}")
        self.scale = scale
        self.intro = nn.Conv2d(3, width, 3, padding=1)
        self.body = nn.Sequential(*[NAFBlock(width) for _ in range(num_blocks)])
        self.up = nn.Sequential(nn.Conv2d(width, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
        nn.init.zeros_(self.up[0].weight)  # untrained: the bicubic residual alone
        nn.init.zeros_(self.up[0].bias)
        self.size_multiple = 1  # no down-sampling: any size runs as it is
        self.set_tlc_window(train_size if tlc else None)

    def set_tlc_window(self, train_size: int | None) -> None:
        """Local-statistics window of every block = TLC_FACTOR x ``train_size`` input pixels (None: the global
        pools of training)."""
        window = None if train_size is None else max(1, int(train_size * TLC_FACTOR))
        for m in self.body.modules():
            if isinstance(m, SCA):
                m.window = window

    exact_tiles = False  # True: tiles grow by the exact reach (equal to the whole image to float rounding)

    @property
    def exact_tile_context(self) -> int:
        """The exact reach of intro conv, blocks and upsampling conv (:func:`stack_reach`, at least the bicubic
        residual's two pixels), rounded up to ``size_multiple``: tiles grown by it equal the whole image. It is wide
        (the x4 preset: 16 blocks of 48-pixel windows, 402 pixels: tiles nearly the whole image); 0 without TLC:
        global pools see the whole tile, so no margin makes tiles exact."""
        reach = stack_reach(self.body)
        if reach is None:
            return 0
        reach = max(reach, BICUBIC_REACH)
        return -(-reach // self.size_multiple) * self.size_multiple

    @property
    def tile_context(self) -> int:
        """Input pixels beyond a tile that tiled inference grows every tile by
        (:func:`diffdeblur.tiling.tiled_apply`): the convolutions' reach alone (intro, one per block's 3x3
        depthwise conv, upsampling conv; at least the bicubic residual's two pixels), leaving out the local
        statistics windows, whose mean over a window barely moves when the window is cut by a tile edge. Measured
        with the shipped sr-x4 (``docs/results/sr_tiling.md``): tiled equals whole to far above 45 dB with
        that context, in bounded memory, where the exact reach (:attr:`exact_tile_context`, used when
        ``exact_tiles`` is set) makes every tile nearly the whole image. 0 without TLC, as the exact one."""
        exact = self.exact_tile_context
        if self.exact_tiles or exact == 0:
            return exact
        convs = 2 * CONV_REACH + CONV_REACH * sum(isinstance(b, NAFBlock) for b in self.body)
        reach = max(convs, BICUBIC_REACH)
        return min(exact, -(-reach // self.size_multiple) * self.size_multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp, h, w = pad_to_multiple(x, self.size_multiple)
        out = self.up(self.body(self.intro(xp))) + bicubic_upsample(xp, self.scale)  # (B, 3, s H', s W')
        return out[..., :h * self.scale, :w * self.scale]

    @restore_options
    def restore(self, blur: torch.Tensor) -> torch.Tensor:
        """Upscale (B, 3, H, W) in [0, 1] (any size) -> (B, 3, scale H, scale W) in [0, 1]."""
        return self.forward(blur).clamp(0, 1)
