"""Conditional pixel-space diffusion (SR3, DvSR): the wrapper, its loss and its presets.

SR3 (Saharia et al. 2021, "Image Super-Resolution via Iterative Refinement", arXiv 2104.07636): the sharp image
is diffused, conditioned on the blurry one, by the SR3 UNet (:class:`diffdeblur.models.sr3_unet.SR3UNet`).
``mode="residual"``: predict-and-refine (DvSR, Whang et al. CVPR 2022, arXiv 2112.02475): a deterministic
predictor g (a small NAFNet) gives an initial estimate, diffusion generates the residual sharp - g(blur),
conditioned on blur and g(blur); both are trained jointly by the single diffusion loss. Images at the
boundary are (B, 3, H, W) float in [0, 1]; diffusion runs in [-1, 1]. Sampling: DDPM / DDIM / SDE of
:mod:`diffdeblur.diffusion.samplers` through :class:`~.base.DiffusionModel`. docs/methods/sr3.md.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion.process import to_signed, to_unit
from ..errors import ConfigError
from ..models.sr3_unet import SR3UNet
from .base import Batch, DiffusionModel, Logs, SubmodelFactory, ToImage, register_objective, spec


# ---- the registered diffusion model --------------------------------------------------------------

class ConditionalDiffusion(DiffusionModel):
    """SR3 / DvSR conditional diffusion deblurring model (see the module docstring).

    UNet kwargs: ``base_channels, channel_mults, num_res_blocks, attn_levels, mid_attn, attn_heads, dropout,
    norm_groups``. Diffusion kwargs: ``num_train_steps`` (T), ``schedule`` (linear | cosine), ``beta_start``,
    ``beta_end`` (linear only; None = DDPM values scaled to T), ``objective`` (eps | x0 | v | x0-precond), ``loss_type``
    (l1 | l2), ``clip_x0`` (clamp x0 estimates to the data range while sampling). Conditioning: ``mode``
    (sr3 | residual), ``predictor`` / ``predictor_kwargs`` (registered regression model for residual mode, or
    ``"identity"`` to diffuse the residual sharp - blur over the blurry image itself),
    ``residual_scale`` (residual multiplied by this before diffusion), ``predictor_weight`` (optional extra
    L1 on the predictor; 0 = the single diffusion loss). Sampling defaults: ``default_steps``,
    ``default_sampler``. ``submodel``: the registry's factory that builds the named predictor
    (given by :func:`diffdeblur.build_model`; the network never imports the registry).
    """

    def __init__(self, base_channels: int = 64, channel_mults: Sequence[int] = (1, 2, 4, 8, 8),
                 num_res_blocks: int = 2, attn_levels: Sequence[int] = (3,), mid_attn: bool = True,
                 attn_heads: int = 1, dropout: float = 0.0, norm_groups: int = 32,
                 num_train_steps: int = 1000, schedule: str = "linear", beta_start: float | None = None,
                 beta_end: float | None = None, objective: str = "eps", loss_type: str = "l1",
                 clip_x0: bool = True, mode: str = "sr3", predictor: str = "nafnet-tiny",
                 predictor_kwargs: dict[str, Any] | None = None, residual_scale: float = 1.0,
                 predictor_weight: float = 0.0, default_steps: int = 50, default_sampler: str = "ddim",
                 submodel: SubmodelFactory | None = None) -> None:
        if mode not in ("sr3", "residual"):
            raise ConfigError(f"mode must be 'sr3' or 'residual', got '{mode}'")
        super().__init__(num_train_steps=num_train_steps, schedule=schedule, beta_start=beta_start,
                         beta_end=beta_end, objective=objective, loss_type=loss_type, default_steps=default_steps,
                         default_sampler=default_sampler, noise_channels=3)
        self.mode = mode
        self.residual_scale = float(residual_scale)
        self.predictor_weight = float(predictor_weight)
        cond_channels = 6 if mode == "residual" else 3  # residual: [blur, g(blur)]
        self.unet = SR3UNet(3, cond_channels, 3, base_channels, channel_mults, num_res_blocks, attn_levels,
                            mid_attn, attn_heads, dropout, norm_groups)
        self.predictor: nn.Module | None = None
        if mode == "residual":  # "identity": diffuse sharp - blur (the blurry image is the initial estimate)
            self.predictor = nn.Identity() if predictor == "identity" else self._build_predictor(
                submodel, predictor, predictor_kwargs)
        multiple = self.unet.size_multiple
        if self.predictor is not None:
            multiple = math.lcm(multiple, int(getattr(self.predictor, "size_multiple", 1)))
        self.size_multiple = multiple
        # clamp range of x0 estimates in diffusion space: images in [-1, 1]; residuals in [-2, 2] * scale
        self.clip = (1.0 if mode == "sr3" else 2.0 * self.residual_scale) if clip_x0 else None

    @staticmethod
    def _build_predictor(submodel: SubmodelFactory | None, name: str, kwargs: dict[str, Any] | None) -> nn.Module:
        if submodel is None:
            raise ConfigError("a residual ConditionalDiffusion builds its predictor by name: "
                              "build it with diffdeblur.build_model")
        return submodel(name, kinds=("regression",), **(kwargs or {}))

    def condition(self, blur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """blur (B,3,H,W) in [0,1] -> (cond for the UNet, base estimate in [-1,1] or None for sr3)."""
        y = to_signed(blur)
        if self.predictor is None:
            return y, None
        base = to_signed(self.predictor(blur))
        return torch.cat([y, base], dim=1), base

    def to_image(self, x: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
        """A sample (or x_t) in diffusion space -> image in [0, 1] (not clamped)."""
        return to_unit(x if base is None else base + x / self.residual_scale)

    def diffusion_inputs(self, blur: torch.Tensor, sharp: torch.Tensor):
        """Training: (x0 to diffuse, condition, auxiliary loss or None); see :mod:`diffdeblur.objectives`."""
        cond, base = self.condition(blur)
        target = to_signed(sharp)
        if base is None:
            return target, cond, None
        aux = self.predictor_weight * F.l1_loss(to_unit(base), sharp) if self.predictor_weight > 0 else None
        return (target - base) * self.residual_scale, cond, aux

    def sampling_context(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], ToImage]:
        cond, base = self.condition(x)
        return cond, (x.shape[-2], x.shape[-1]), lambda state, final: self.to_image(state, base)

    # restore(blur, steps=, sampler=, eta=, num_samples=, noise=, generator=, callback=, spacing=, timesteps=):
    # the shared ChainModel.restore (sampler: ddim | ddpm | sde).


# ---- presets -------------------------------------------------------------------------------------

TINY = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn_levels=(), mid_attn=False,
            norm_groups=8, num_train_steps=100, default_steps=10)
SMALL = dict(base_channels=32, channel_mults=(1, 2, 4, 4), num_res_blocks=2, attn_levels=(), mid_attn=True,
             norm_groups=16, num_train_steps=1000, default_steps=20)
BASE = dict(base_channels=64, channel_mults=(1, 2, 4, 8, 8), num_res_blocks=2, attn_levels=(3,), mid_attn=True,
            dropout=0.2, norm_groups=32, num_train_steps=2000, beta_start=1e-6, beta_end=1e-2, default_steps=100)


def _preset(name: str, description: str, **kwargs: Any):
    return spec(name, ConditionalDiffusion, description, kind="diffusion", composite=True, loss="diffusion", **kwargs)


PRESETS = (
    _preset("sr3-tiny", "Tiny SR3 conditional diffusion for tests (base 8, 2 levels, no attention, T=100)", **TINY),
    _preset("sr3-small", "CPU-sized SR3 conditional diffusion (base 32, mults 1,2,4,4, attention in the middle "
            "only)", **SMALL),
    _preset("sr3-base", "SR3 as published (base 64, mults 1,2,4,8,8, attention at level 3 = 16x16 on 128 crops, "
            "dropout 0.2, linear betas 1e-6..1e-2, T=2000)", **BASE),
    _preset("sr3-small-residual", "sr3-small diffusing the residual sharp - blur (identity predictor, no extra "
            "parameters): the blurry image is the starting estimate", mode="residual", predictor="identity", **SMALL),
    _preset("dvsr-tiny", "Tiny predict-and-refine diffusion (DvSR) for tests: nafnet-tiny + sr3-tiny residual",
            mode="residual", predictor="nafnet-tiny", **TINY),
    _preset("dvsr-small", "Predict-and-refine diffusion (DvSR): nafnet-small predictor + sr3-small residual "
            "denoiser", mode="residual", predictor="nafnet-small", **SMALL),
    _preset("dvsr-base", "DvSR-like: NAFNet width 32 predictor + SR3 base-32 residual denoiser, T=2000",
            mode="residual", predictor="nafnet-small", predictor_kwargs={"width": 32}, **dict(BASE, base_channels=32)),
)


# ---- the loss --------------------------------------------------------------------------------------

@register_objective("diffusion")
def diffusion(model: nn.Module, batch: Batch, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Logs]:
    """Pixel diffusion (SR3 / DvSR): :meth:`~.base.DiffusionModel.loss_terms` (the diffusion loss on
    ``model.diffusion_inputs(input, target)``, plus the model's auxiliary term if any)."""
    loss, logs, _, _ = model.loss_terms(batch, generator)
    return loss, logs
