"""A mask-conditioned inpainting network of the NAFNet family (object removal).

The network sees the image with the hole blanked (or prefilled by pull-push interpolation, ``prefill``) and the
mask, ``[x * (1 - m); m]`` (4 channels), through a
NAFNet U-shape (:class:`~.nafnet.NAFNet`'s blocks, down / up convs, skips and global residual, reused by
subclassing). A hole needs context from far away, so the bottleneck at 1/2^levels scale runs NAFBlocks whose
depthwise 3x3 conv is dilated (1, 2, 4, ...: a 3x3 conv of dilation d at 1/16 scale spans 32 d pixels), and
the blocks' channel attention pools globally in training (test-time local statistics in eval, as NAFNet).
The output is composited, ``out = where(m, net(...), x)``: pixels outside the mask are bit-exact copies of
the input (:func:`keep_unmasked`), whole or tiled. Images are (B, 3, H, W) float in [0, 1]; masks
(B, 1, H, W) in {0, 1} with 1 = remove (fill). Training objective: ``inpaint`` (:mod:`diffdeblur.methods.inpainting`).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ImageError
from ..options import MASK_THRESHOLD
from .blocks import pad_to_multiple
from .nafnet import NAFBlock, NAFNet
from .protocol import restore_options



PREFILLS = ("zero", "pull-push")  # what the network sees in the hole (InpaintNAFNet's ``prefill``)


def pull_push(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The hole of ``x`` filled by pull-push interpolation (Gortler et al., "The Lumigraph", SIGGRAPH 1996): pull
    the known pixels down a pyramid by mask-weighted 2x2 means until every coarse cell has some, then push back up,
    each level's hole taking the bilinear upsampling of the coarser filled level. x (B, C, H, W), mask (B, 1, H, W)
    in {0, 1} (1 = hole) -> (B, C, H, W), ``x`` unchanged outside the hole; smooth, close to OpenCV's Telea on
    photos' holes (docs/results/removal_peers.md); an all-hole image stays as it is."""
    known = 1 - mask
    if min(x.shape[-2:]) <= 1 or not bool((known > 0).any()):
        return x
    sums = F.avg_pool2d(x * known, 2, ceil_mode=True)
    weights = F.avg_pool2d(known, 2, ceil_mode=True)
    coarse = pull_push(sums / weights.clamp_min(1e-8), (weights <= 0).to(x.dtype))
    up = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return x * known + up * mask


def keep_unmasked(filled: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``filled`` inside the mask, ``image`` outside, bit for bit: filled, image (B, C, H, W); mask
    (B, 1, H, W) in {0, 1} (1 = hole). A select, not ``m * filled + (1 - m) * image``, so unmasked pixels
    are exact copies of ``image`` (float32 when ``filled`` is bf16)."""
    return torch.where(mask > MASK_THRESHOLD, filled, image)


def binary_mask(mask: torch.Tensor | None, image: torch.Tensor, owner: str) -> torch.Tensor:
    """``mask`` (B or 1, K, H, W) as a (B, 1, H, W) {0, 1} tensor of ``image``'s dtype (a pixel is a hole when
    any channel exceeds :data:`MASK_THRESHOLD`). None: ConfigError "a mask is required"; a mask off the
    image's grid: ImageError. Both one line, naming ``owner``."""
    if mask is None:
        raise ConfigError(f"{owner}: a mask is required (mask=(B, 1, H, W) tensor in {{0, 1}}, 1 = remove)")
    if not isinstance(mask, torch.Tensor) or mask.ndim != 4 or mask.shape[0] not in (1, image.shape[0]):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ImageError(f"{owner}: mask must be a (B, 1, H, W) tensor, got {shape}")
    if mask.shape[-2:] != image.shape[-2:]:
        raise ImageError(f"{owner}: mask is {mask.shape[-1]}x{mask.shape[-2]} but the image is "
                         f"{image.shape[-1]}x{image.shape[-2]}")
    m = (mask.amax(dim=1, keepdim=True) > MASK_THRESHOLD).to(device=image.device, dtype=image.dtype)
    return m.expand(image.shape[0], -1, -1, -1)


class DilatedNAFBlock(NAFBlock):
    """A NAFBlock whose depthwise 3x3 conv is dilated by ``dilation`` (same tensors and names as NAFBlock)."""

    def __init__(self, c: int, dilation: int) -> None:
        super().__init__(c)
        dw = self.conv2.in_channels
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=dilation, dilation=dilation, groups=dw)
        self.dilation = dilation


class InpaintNAFNet(NAFNet):
    """Mask-conditioned NAFNet (see the module docstring). forward(x (B, 3, H, W) in [0, 1], mask (B, 1, H, W)
    in {0, 1}) -> composited (B, 3, H, W), unclamped; :meth:`fill` is the raw prediction (every pixel).

    ``width``, ``enc_blk_nums``, ``dec_blk_nums``, ``tlc``, ``train_size`` as :class:`~.nafnet.NAFNet`;
    ``dilations``: one bottleneck block per entry, its depthwise conv dilated by it (the middle blocks);
    ``prefill``: what the network sees in the hole and adds its residual to, ``zero`` (blanked) or ``pull-push``
    (:func:`pull_push`, a smooth classical fill: the network starts from an inpainting as good as Telea's and
    learns the detail on top of it)."""

    extra_inputs = ("mask",)  # per-pixel inputs of restore, sliced with every tile (diffdeblur.inference)

    def __init__(self, width: int = 16, enc_blk_nums: Sequence[int] = (1, 1, 1, 1),
                 dec_blk_nums: Sequence[int] = (1, 1, 1, 1), dilations: Sequence[int] = (1, 2, 4),
                 tlc: bool = True, train_size: int = 128, prefill: str = "zero") -> None:
        if not dilations or any(d < 1 for d in dilations):
            raise ConfigError(f"dilations must be one or more integers >= 1, got {list(dilations)}")
        if prefill not in PREFILLS:
            raise ConfigError(f"prefill must be one of {', '.join(PREFILLS)}, got {prefill!r}")
        super().__init__(3, width, len(dilations), tuple(enc_blk_nums), tuple(dec_blk_nums), False, train_size)
        self.intro = nn.Conv2d(4, width, 3, padding=1)  # [x * (1 - m); m]
        chan = width << len(enc_blk_nums)
        self.middle_blks = nn.Sequential(*[DilatedNAFBlock(chan, int(d)) for d in dilations])
        self.dilations = tuple(int(d) for d in dilations)
        self.prefill = prefill
        if tlc:
            self.set_tlc_windows(train_size)

    def receptive_radius(self) -> int:
        """Input pixels on each side that an output pixel's convolutions reach: intro and ending 3x3 (1 each),
        at level l every block's 3x3 depthwise conv and the 2x2 down conv (2^l each), at the bottleneck
        level L each dilated conv (d 2^L). The channel attention's pools are not counted (see
        :attr:`tile_context`)."""
        levels = len(self.encoders)
        radius = 2
        for level in range(levels):
            radius += (len(self.encoders[level]) + 1 + len(self.decoders[levels - 1 - level])) << level
        return radius + (sum(self.dilations) << levels)

    @property
    def tile_context(self) -> int:
        """Input pixels beyond a tile that the output inside it depends on: the convolutions' receptive
        radius (:meth:`receptive_radius`, rounded up to ``size_multiple``) plus NAFNet's measured margin
        for the test-time local pools (:attr:`.nafnet.NAFNet.tile_context`). Inside a hole wider than the
        tile, tiled output may still differ a little from the whole image's (what fills a hole depends on
        everything around it); pixels outside the mask are exact copies of the input either way."""
        m = self.size_multiple
        return math.ceil(self.receptive_radius() / m) * m + super().tile_context

    def fill(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The raw prediction at every pixel: x (B, 3, H, W) in [0, 1], mask (B, 1, H, W) in {0, 1} ->
        (B, 3, H, W), unclamped (the training loss also scores it outside the hole)."""
        xp, h, w = pad_to_multiple(x, self.size_multiple)
        mp = pad_to_multiple(mask.to(x.dtype), self.size_multiple)[0]
        holed = xp * (1 - mp)  # the hole's content is never seen
        if self.prefill == "pull-push":
            holed = pull_push(holed, mp)
        return self.body(self.intro(torch.cat([holed, mp], dim=1)), holed)[:, :, :h, :w]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return keep_unmasked(self.fill(x, mask), x, mask)

    @restore_options
    def restore(self, blur: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Fill the hole: blur (B, 3, H, W) in [0, 1] (the photo; what lies under the mask is ignored), mask
        (B, 1, H, W) in {0, 1}, 1 = remove -> (B, 3, H, W) in [0, 1], equal to ``blur`` outside the mask bit
        for bit. Any size (padded to ``size_multiple`` and cropped back). No mask: a one-line ConfigError."""
        m = binary_mask(mask, blur, type(self).__name__)
        return keep_unmasked(self.fill(blur, m).clamp(0, 1), blur, m)
