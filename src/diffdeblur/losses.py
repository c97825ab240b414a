"""Training objectives, registered by name.

An objective is ``fn(model, batch, generator) -> (loss, logs)`` where ``batch`` is a dict with
``"blur"`` and ``"sharp"`` (B, 3, h, w) float in [0, 1] (and optionally ``"partials"``, the
partial-exposure images (B, K, 3, h, w) from blur synthesis), ``generator`` a ``torch.Generator``
(or None) for any randomness the objective draws, ``loss`` a scalar tensor and ``logs`` a dict
of floats for the training log. A model names its default objective in ``model.loss_hint``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .registry import name_registrar

Batch = dict[str, torch.Tensor]
Objective = Callable[[nn.Module, Batch, "torch.Generator | None"], tuple[torch.Tensor, dict[str, float]]]

_OBJECTIVES: dict[str, Objective] = {}
CHARBONNIER_EPS = 1e-3  # as in MIMO-UNet / BlurDM's losses.py
FFT_LOSS_WEIGHT = 0.1  # MIMO-UNet: L1 + 0.1 * frequency L1
PSNR_LOSS_EPS = 1e-8  # NAFNet PSNRLoss


register_objective = name_registrar(_OBJECTIVES, "objective")


def get_objective(name: str) -> Objective:
    if name not in _OBJECTIVES:
        raise KeyError(f"unknown loss '{name}'; known: {', '.join(sorted(_OBJECTIVES))}")
    return _OBJECTIVES[name]


def objective_names() -> list[str]:
    return sorted(_OBJECTIVES)


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


def _pixel_objective(distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Objective:
    def fn(model: nn.Module, batch: Batch, generator: torch.Generator | None = None):
        pred = model(batch["blur"])
        loss = distance(pred, batch["sharp"])
        return loss, {}
    return fn


def with_fft(distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """distance(pred, target) + 0.1 * FFT-L1 (MIMO-UNet's frequency term, on a single-output model)."""
    def fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return distance(pred, target) + FFT_LOSS_WEIGHT * fft_l1(pred, target)
    return fn


register_objective("l1")(_pixel_objective(F.l1_loss))
register_objective("charbonnier")(_pixel_objective(charbonnier))
register_objective("psnr")(_pixel_objective(psnr_loss))
register_objective("l1-fft")(_pixel_objective(with_fft(F.l1_loss)))
register_objective("charbonnier-fft")(_pixel_objective(with_fft(charbonnier)))


@register_objective("mimo")
def _mimo(model: nn.Module, batch: Batch, generator: torch.Generator | None = None):
    outputs = model.forward_multiscale(batch["blur"])
    return mimo_loss(outputs, batch["sharp"])
