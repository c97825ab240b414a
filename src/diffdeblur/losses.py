"""Pure loss functions on image tensors (no model, no registry).

The registered training objectives of :mod:`diffdeblur.objectives` are thin adapters over these.
Images are (B, C, h, w) float tensors; every loss returns a scalar tensor.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

CHARBONNIER_EPS = 1e-3  # as in MIMO-UNet / BlurDM's losses.py
FFT_LOSS_WEIGHT = 0.1  # MIMO-UNet: L1 + 0.1 * frequency L1
PSNR_LOSS_EPS = 1e-8  # NAFNet PSNRLoss


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = CHARBONNIER_EPS) -> torch.Tensor:
    return torch.sqrt((pred - target) ** 2 + eps ** 2).mean()


def psnr_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """NAFNet's PSNRLoss: (10 / ln 10) * mean_i log(MSE_i + 1e-8) = -mean per-image PSNR + const."""
    mse = ((pred - target) ** 2).flatten(1).mean(1)
    return (10.0 / math.log(10.0)) * torch.log(mse + PSNR_LOSS_EPS).mean()


def fft_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between 2-D FFTs (real and imaginary parts), as in original MIMO-UNet's train.py."""
    fp, ft = torch.fft.fft2(pred.float()), torch.fft.fft2(target.float())
    return F.l1_loss(torch.view_as_real(fp), torch.view_as_real(ft))


def multiscale_targets(sharp: torch.Tensor, n: int = 3) -> list[torch.Tensor]:
    """[sharp down 4, sharp down 2, sharp] for n = 3 (bilinear, as MIMO-UNet's training)."""
    return [F.interpolate(sharp, scale_factor=0.5 ** (n - 1 - i), mode="bilinear", align_corners=False)
            if i < n - 1 else sharp for i in range(n)]


def mimo_loss(outputs: list[torch.Tensor], sharp: torch.Tensor, pixel=F.l1_loss) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum over scales of pixel(out_s, gt_s) + 0.1 * sum over scales of L1 between their 2-D FFTs."""
    targets = multiscale_targets(sharp, len(outputs))
    content = sum(pixel(o, t) for o, t in zip(outputs, targets))
    freq = sum(fft_l1(o, t) for o, t in zip(outputs, targets))
    loss = content + FFT_LOSS_WEIGHT * freq
    return loss, {"content": float(content.detach()), "fft": float(freq.detach())}


def with_fft(distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """distance(pred, target) + 0.1 * FFT-L1 (MIMO-UNet's frequency term, on a single-output model)."""
    def fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return distance(pred, target) + FFT_LOSS_WEIGHT * fft_l1(pred, target)
    return fn
