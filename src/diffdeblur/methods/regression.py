"""Regression restorers (NAFNet, MIMO-UNet, FFTformer, Stripformer, LoFormer): their presets and training objectives.

NAFNet (Chen et al., ECCV 2022, arXiv 2204.04676) is trained with its PSNR loss; MIMO-UNet (Cho et al., ICCV 2021,
arXiv 2108.05054) with its multi-scale content + frequency loss; FFTformer (Kong et al., CVPR 2023), Stripformer (Tsai
et al., ECCV 2022) and LoFormer (Mao et al., ACM MM 2024) are the other backbones of BlurDM's table
(:mod:`diffdeblur.methods.blurdm`). The other pixel objectives (``l1``,
``charbonnier``, ``l1-fft``, ``charbonnier-fft``) fit any single-output network and are chosen with
``train.loss``. docs/methods/regression.md.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import charbonnier, mimo_loss, psnr_loss, with_fft
from ..models import fftformer, loformer, stripformer
from ..models.fftformer import FFTformer
from ..models.loformer import LoFormer
from ..models.mimo_unet import MIMOUNet
from ..models.stripformer import Stripformer
from ..models.nafnet import GOPRO, LITE, NAFNet
from .base import Batch, Logs, Objective, register_objective, spec

# ---- objectives ------------------------------------------------------------------------------------

def pixel_objective(distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Objective:
    """The objective distance(model(blur), sharp) for a single-output model."""
    def fn(model: nn.Module, batch: Batch, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Logs]:
        return distance(model(batch["input"]), batch["target"]), {}
    return fn


# the single-output image losses by objective name (also the image loss of a BlurDM-fused backbone)
PIXEL_DISTANCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss, "charbonnier": charbonnier, "psnr": psnr_loss,
    "l1-fft": with_fft(F.l1_loss), "charbonnier-fft": with_fft(charbonnier),
}
for _name, _distance in PIXEL_DISTANCES.items():
    register_objective(_name)(pixel_objective(_distance))


@register_objective("mimo")
def mimo(model: nn.Module, batch: Batch, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Logs]:
    """MIMO-UNet: :func:`diffdeblur.losses.mimo_loss` on the 1/4, 1/2, 1 outputs."""
    return mimo_loss(model.forward_multiscale(batch["input"]), batch["target"])


# ---- presets ---------------------------------------------------------------------------------------

NAFNET_PRESETS = (
    spec("nafnet-width32", NAFNet, width=32, **GOPRO, loss="psnr",
         description="NAFNet, GoPro configuration, width 32 (paper: 32.87 dB GoPro)"),
    spec("nafnet-width64", NAFNet, width=64, **GOPRO, loss="psnr",
         description="NAFNet, GoPro configuration, width 64 (paper: 33.71 dB GoPro)"),
    spec("nafnet-small", NAFNet, width=16, **LITE, loss="psnr",
         description="CPU-friendly NAFNet: width 16, blocks enc 1,1,1,2 / mid 2 / dec 1,1,1,1"),
    spec("nafnet-tiny", NAFNet, width=8, middle_blk_num=1, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1), loss="psnr",
         description="Tiny NAFNet for tests and quick experiments (width 8, two levels)"),
)

MIMO_PRESETS = (
    spec("mimo-unet", MIMOUNet, num_res=8, loss="mimo",
         description="MIMO-UNet (8 res-blocks per E/DBlock; paper: 31.73 dB GoPro)"),
    spec("mimo-unet-plus", MIMOUNet, num_res=20, dropout=0.1, loss="mimo",
         description="MIMO-UNet+ (20 res-blocks, AFF dropout 0.1; paper: 32.45 dB GoPro)"),
    spec("mimo-unet-tiny", MIMOUNet, num_res=1, base_channel=8, loss="mimo",
         description="Tiny MIMO-UNet for tests and quick experiments (1 res-block, base 8)"),
)
# The transformer backbones of BlurDM's table (issue 27): the published configuration, a CPU-sized one, a tiny one.
# Losses: FFTformer's own (L1 + 0.1 FFT-L1, its GoPro.yml); Stripformer's (Charbonnier + edge + VGG contrastive)
# and LoFormer's need more than pixels, so they get Charbonnier + FFT, the same for every arm of a study.
TRANSFORMERS = (  # (name, class, its module's PUBLISHED / SMALL / TINY configurations, loss, what the published one is)
    ("fftformer", FFTformer, fftformer, "l1-fft",
     "FFTformer, published GoPro configuration (dim 48, blocks 6,6,12, refinement 4; paper: 34.21 dB GoPro)"),
    ("stripformer", Stripformer, stripformer, "charbonnier-fft",
     "Stripformer (12 intra/inter strip blocks at 320 + 6 at 192; paper: 33.08 dB GoPro)"),
    ("loformer", LoFormer, loformer, "charbonnier-fft",
     "LoFormer-S (local frequency transformer, dim 32, LoFT pairs 1-2-3 / 7 / 3-2-2; BlurDM's LoFormer)"),
)
TRANSFORMER_PRESETS = tuple(
    spec(name + suffix, cls, **getattr(module, size), loss=loss,
         description=published if size == "PUBLISHED" else f"{cls.__name__}, {text}: {getattr(module, size)}")
    for name, cls, module, loss, published in TRANSFORMERS
    for suffix, size, text in (("", "PUBLISHED", ""), ("-small", "SMALL", "CPU-sized"), ("-tiny", "TINY", "tiny, for tests")))
PRESETS = NAFNET_PRESETS + MIMO_PRESETS + TRANSFORMER_PRESETS
