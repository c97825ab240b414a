"""Multiscale structure guided diffusion (Ren, Delbracio, Talebi, Gerig, Milanfar, "Multiscale Structure Guided
Diffusion for Image Deblurring", ICCV 2023, arXiv 2212.01789): the wrappers, their objective and their presets.

A guided model is one of our chains plus the guidance module of :mod:`diffdeblur.models.guidance`: per scale s
(a factor 2, 4, 8 of an encoder level of the denoiser), the blurry image's BT.601 luma, area-downsampled, goes
through a small residual network that predicts the grayscale, downsampled sharp image; its last feature enters the
denoiser's encoder blocks at that resolution through zero-initialised 1x1 convs (guided blocks). Two bases:

- :class:`StructureGuidedDiffusion`: the SR3-style image-conditioned DPM (:mod:`.sr3`; the paper's icDPM);
- :class:`StructureGuidedInDI`, :class:`StructureGuidedResShift`: the few-step chains (:mod:`.indi`,
  :mod:`.resshift`) on the time-conditioned NAFNet, initialised from the shipped default (``init_from: default``).

The guidance runs once per image (per tile), not once per step: :meth:`StructureGuided.sample_image` computes
the features and binds them (:meth:`StructureGuided.guided_by`) for the whole chain, and the denoiser calls of
the base's own sampler read them. Training (objective ``structure-guided``) binds the batch's features the same
way around the base method's own objective and adds ``guidance_lambda`` x L_guide (the sum over the enabled
scales of the mean L1 between prediction and grayscale, downsampled sharp image). With no scale enabled, or with
fresh (zero) projections, a guided model computes exactly its unguided twin; the twin's checkpoint loads into
it by name and shape (``train.init_from``: only ``guidance.*`` and the ``guide`` projections are new).
docs/methods/structure_guided.md (the paper: Ren et al., "Multiscale Structure Guided Diffusion for Image Deblurring",
ICCV 2023; what is read from it and what is reconstructed).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..diffusion.noise import NoiseField
from ..diffusion.process import to_signed, to_unit
from ..diffusion.resshift import KAPPA, POWER, SQRT_ETA_END, resshift_input_scale
from ..errors import ConfigError
from ..models.blocks import pad_to_multiple
from ..models.guidance import Features, StructureGuidance, check_scales, encoder_factors
from ..models.nafnet import LITE
from ..models.protocol import CONTEXT_HOLDERS, tile_context
from ..models.time_nafnet import TIME_DIM
from .base import (OBJECTIVES, TIME_SCALE, Batch, Callback, Logs, SamplingOptions, SubmodelFactory,
                   register_objective, spec)
from .indi import InDIDeblur
from .resshift import JOURNAL_MIN_NOISE_LEVEL, ResShiftDeblur
from .shifting import DEFAULT_TRAIN_SIZE, TINY as FEWSTEP_TINY
from .sr3 import SMALL as SR3_SMALL, TINY as SR3_TINY, ConditionalDiffusion

GUIDANCE_WIDTH = 32   # feature channels C of each branch (the design note suggests 64 for the paper's UNet)
GUIDANCE_BLOCKS = 2   # residual blocks N per branch (4-8 in the note; 2 keeps the CPU presets cheap)


class StructureGuided:
    """What the guided wrappers share (a mixin before the base chain class): the guidance module, the binding of
    its features for one chain or one loss, guided sampling, the auxiliary loss and an honest tile context.

    Options (the presets' keyword arguments): ``guidance_scales`` (factors of the denoiser's encoder levels;
    None = every level below full resolution), ``guidance_enabled`` (one bool per scale; None = all),
    ``guidance_lambda`` (weight of L_guide, >= 0), ``guidance_width`` (C), ``guidance_blocks`` (N).
    """

    base_objective = ""  # the objective of the unguided method, which ``structure-guided`` calls
    unet: nn.Module
    size_multiple: int
    guidance: StructureGuidance

    def add_structure_guidance(self, scales: Sequence[int] | None, enabled: Sequence[bool] | None, lam: float,
                               width: int, blocks: int) -> None:
        """Build the guidance module and make the denoiser's matching encoder blocks guided (after the base's
        constructor, so the base's tensors are drawn exactly as in the unguided twin). One-line ConfigErrors
        name the key: ``guidance_scales`` not encoder levels, ``guidance_width`` < 1, ``guidance_lambda`` < 0, ..."""
        if lam < 0:
            raise ConfigError(f"guidance_lambda must be >= 0, got {lam}")
        factors = encoder_factors(len(self.unet.downs))  # SR3UNet levels / NAFNet encoder levels
        scales = check_scales(factors[1:] if scales is None else scales, factors, "guidance_scales")
        self.guidance = StructureGuidance(scales, width, blocks, enabled)
        if scales:
            self.unet.add_guidance(width, scales)
        self.guidance_lambda = float(lam)
        self._bound: Features | None = None

    # -- the features of one chain / one batch --
    def guidance_features(self, blur: torch.Tensor) -> tuple[Features, Features]:
        """(features, predictions) of the enabled scales for blur (B, 3, H, W) in [0, 1], computed on blur padded
        (reflect) to the denoiser's size multiple, the grid its encoder levels run on."""
        return self.guidance(pad_to_multiple(blur, self.unet.size_multiple)[0])

    @contextmanager
    def guided_by(self, features: Features) -> Iterator[None]:
        """Inside the block, the denoiser calls of this model take ``features`` (one model instance runs one chain
        or one loss at a time, as the engines' private copies and the training loop do)."""
        previous, self._bound = self._bound, features
        try:
            yield
        finally:
            self._bound = previous

    def bound_guidance(self) -> Features:
        """The features bound by :meth:`guided_by`; a one-line ConfigError when scales are enabled but none are
        bound (the network was called outside ``restore`` and the ``structure-guided`` objective)."""
        if self._bound is None:
            if self.guidance.enabled:
                raise ConfigError(f"{type(self).__name__}: the denoiser ran without its guidance features; "
                                  "sample with restore() and train with the 'structure-guided' objective")
            return {}
        return self._bound

    def sample_image(self, blur: torch.Tensor, options: SamplingOptions, noise: NoiseField | None = None,
                     generator: torch.Generator | None = None, callback: Callback | None = None,
                     **context: Any) -> torch.Tensor:
        """The base's sampling (:meth:`~.base.ChainModel.sample_image`) with the guidance of the padded input
        computed once and bound for every step of every sample."""
        features, _ = self.guidance_features(pad_to_multiple(blur, self.size_multiple)[0])
        with self.guided_by(features):
            return super().sample_image(blur, options, noise, generator, callback, **context)  # type: ignore[misc]

    def guidance_loss(self, predictions: Features, sharp: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        """L_guide of ``predictions`` against sharp (B, 3, H, W) in [0, 1] padded like the blurry input."""
        return self.guidance.loss(predictions, pad_to_multiple(sharp, self.unet.size_multiple)[0])

    @property
    def tile_context(self) -> int:
        """The denoiser's (or predictor's) context plus the guidance's reach (:attr:`StructureGuidance.reach`),
        rounded up to ``size_multiple``: the guidance of a tile sees the tile and this margin."""
        held = [getattr(self, name, None) for name in CONTEXT_HOLDERS]
        base = max((tile_context(m) for m in held if isinstance(m, nn.Module)), default=0)
        reach = self.guidance.reach
        return base if reach == 0 else -(-(base + reach) // self.size_multiple) * self.size_multiple


# ---- the two bases ---------------------------------------------------------------------------------

class StructureGuidedDiffusion(StructureGuided, ConditionalDiffusion):
    """The SR3-style icDPM (:class:`~.sr3.ConditionalDiffusion`, all its keyword arguments) with multiscale
    structure guidance (options as :class:`StructureGuided`); guidance enters the SR3 UNet's encoder blocks."""

    base_objective = "diffusion"

    def __init__(self, base_channels: int = 64, channel_mults: Sequence[int] = (1, 2, 4, 8, 8),
                 num_res_blocks: int = 2, attn_levels: Sequence[int] = (3,), mid_attn: bool = True,
                 attn_heads: int = 1, dropout: float = 0.0, norm_groups: int = 32,
                 num_train_steps: int = 1000, schedule: str = "linear", beta_start: float | None = None,
                 beta_end: float | None = None, objective: str = "eps", loss_type: str = "l1",
                 clip_x0: bool = True, mode: str = "sr3", predictor: str = "nafnet-tiny",
                 predictor_kwargs: dict[str, Any] | None = None, residual_scale: float = 1.0,
                 predictor_weight: float = 0.0, default_steps: int = 50, default_sampler: str = "ddim",
                 guidance_scales: Sequence[int] | None = None, guidance_enabled: Sequence[bool] | None = None,
                 guidance_lambda: float = 1.0, guidance_width: int = GUIDANCE_WIDTH,
                 guidance_blocks: int = GUIDANCE_BLOCKS, submodel: SubmodelFactory | None = None) -> None:
        super().__init__(base_channels=base_channels, channel_mults=channel_mults, num_res_blocks=num_res_blocks,
                         attn_levels=attn_levels, mid_attn=mid_attn, attn_heads=attn_heads, dropout=dropout,
                         norm_groups=norm_groups, num_train_steps=num_train_steps, schedule=schedule,
                         beta_start=beta_start, beta_end=beta_end, objective=objective, loss_type=loss_type,
                         clip_x0=clip_x0, mode=mode, predictor=predictor, predictor_kwargs=predictor_kwargs,
                         residual_scale=residual_scale, predictor_weight=predictor_weight,
                         default_steps=default_steps, default_sampler=default_sampler, submodel=submodel)
        self.add_structure_guidance(guidance_scales, guidance_enabled, guidance_lambda, guidance_width,
                                    guidance_blocks)

    def net(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """:meth:`~.base.DiffusionModel.net` with the bound guidance features."""
        return self.unet(x_t, t.float() * (TIME_SCALE / self.num_train_steps), cond, guidance=self.bound_guidance())

    forward = net


class StructureGuidedInDI(StructureGuided, InDIDeblur):
    """InDI (:class:`~.indi.InDIDeblur`, all its keyword arguments) with multiscale structure guidance in the
    time-conditioned NAFNet's encoder blocks (options as :class:`StructureGuided`)."""

    base_objective = "indi"

    def __init__(self, width: int = 16, middle_blk_num: int = 1, enc_blk_nums: Sequence[int] = (1, 1, 1, 28),
                 dec_blk_nums: Sequence[int] = (1, 1, 1, 1), train_size: int = 256, time_dim: int = TIME_DIM,
                 sigma: float = 0.0, loss_type: str = "l2", endpoint_prob: float = 0.0, default_steps: int = 4,
                 default_sampler: str = "ddim", freeze_trunk: bool = False,
                 guidance_scales: Sequence[int] | None = None, guidance_enabled: Sequence[bool] | None = None,
                 guidance_lambda: float = 1.0, guidance_width: int = GUIDANCE_WIDTH,
                 guidance_blocks: int = GUIDANCE_BLOCKS) -> None:
        super().__init__(width=width, middle_blk_num=middle_blk_num, enc_blk_nums=enc_blk_nums,
                         dec_blk_nums=dec_blk_nums, train_size=train_size, time_dim=time_dim, sigma=sigma,
                         loss_type=loss_type, endpoint_prob=endpoint_prob, default_steps=default_steps,
                         default_sampler=default_sampler, freeze_trunk=freeze_trunk)
        self.add_structure_guidance(guidance_scales, guidance_enabled, guidance_lambda, guidance_width,
                                    guidance_blocks)

    def net(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """:meth:`~.indi.InDIDeblur.net` with the bound guidance features."""
        return to_signed(self.unet(to_unit(x_t), t.float() * TIME_SCALE, guidance=self.bound_guidance()))

    forward = net


class StructureGuidedResShift(StructureGuided, ResShiftDeblur):
    """ResShift (:class:`~.resshift.ResShiftDeblur`, all its keyword arguments, from the blurry image or a frozen
    predictor's estimate) with multiscale structure guidance from the blurry image (options as
    :class:`StructureGuided`)."""

    base_objective = "resshift"

    def __init__(self, width: int = 16, middle_blk_num: int = 1, enc_blk_nums: Sequence[int] = (1, 1, 1, 28),
                 dec_blk_nums: Sequence[int] = (1, 1, 1, 1), train_size: int = 256, time_dim: int = TIME_DIM,
                 num_train_steps: int = 4, kappa: float = KAPPA, power: float = POWER,
                 min_noise_level: float = JOURNAL_MIN_NOISE_LEVEL, sqrt_eta_end: float = SQRT_ETA_END,
                 anchor: str = "blur", predictor: str = "nafnet-small", predictor_kwargs: dict[str, Any] | None = None,
                 predictor_weights: str = "", loss_type: str = "l2", default_steps: int | None = None,
                 default_sampler: str = "ddpm", freeze_trunk: bool = False,
                 guidance_scales: Sequence[int] | None = None, guidance_enabled: Sequence[bool] | None = None,
                 guidance_lambda: float = 1.0, guidance_width: int = GUIDANCE_WIDTH,
                 guidance_blocks: int = GUIDANCE_BLOCKS, submodel: SubmodelFactory | None = None) -> None:
        super().__init__(width=width, middle_blk_num=middle_blk_num, enc_blk_nums=enc_blk_nums,
                         dec_blk_nums=dec_blk_nums, train_size=train_size, time_dim=time_dim,
                         num_train_steps=num_train_steps, kappa=kappa, power=power, min_noise_level=min_noise_level,
                         sqrt_eta_end=sqrt_eta_end, anchor=anchor, predictor=predictor,
                         predictor_kwargs=predictor_kwargs, predictor_weights=predictor_weights, loss_type=loss_type,
                         default_steps=default_steps, default_sampler=default_sampler, freeze_trunk=freeze_trunk,
                         submodel=submodel)
        self.add_structure_guidance(guidance_scales, guidance_enabled, guidance_lambda, guidance_width,
                                    guidance_blocks)

    def net(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """:meth:`~.resshift.ResShiftDeblur.net` with the bound guidance features."""
        scale = resshift_input_scale(self.sqrt_etas[t.long()], self.kappa).to(x_t.dtype)[:, None, None, None]
        return to_signed(self.unet(cond, t.float() * (TIME_SCALE / self.num_train_steps), x_t * scale,
                                   guidance=self.bound_guidance()))

    forward = net


# ---- the loss --------------------------------------------------------------------------------------

@register_objective("structure-guided")
def structure_guided(model: nn.Module, batch: Batch, generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, Logs]:
    """The base method's own objective (``model.base_objective``: diffusion | indi | resshift) with this batch's
    guidance features bound, plus ``guidance_lambda`` x L_guide (:meth:`StructureGuided.guidance_loss`); the
    guidance runs once per batch. Logs: the base's, ``guide`` (L_guide) and ``guide_<s>`` per scale."""
    features, predictions = model.guidance_features(batch["input"])
    with model.guided_by(features):
        loss, logs = OBJECTIVES[model.base_objective](model, batch, generator)
    if not predictions:
        return loss, logs
    aux, per_scale = model.guidance_loss(predictions, batch["target"])
    return loss + model.guidance_lambda * aux, {**logs, "guide": float(aux.detach()), **per_scale}


# ---- presets ---------------------------------------------------------------------------------------

GUIDE_TINY = dict(guidance_scales=(2,), guidance_width=8, guidance_blocks=1)  # the tiny twins: guidance at 1/2 only (two levels)
# guidance at 1/2, 1/4, 1/8; its width is the denoiser's full-resolution width, so that it stays a small share of
# one denoiser call: at 1280x720, width 16 costs 2.9 GMACs against 24.3 for one call of the nafnet-small chains
GUIDE_SMALL = dict(guidance_scales=(2, 4, 8), guidance_width=16, guidance_blocks=GUIDANCE_BLOCKS)
GUIDE_SR3_SMALL = dict(GUIDE_SMALL, guidance_width=32)  # sr3-small: base 32 channels

PRESETS = (
    spec("sg-sr3-tiny", StructureGuidedDiffusion, "Tiny structure-guided SR3 for tests: sr3-tiny plus guidance at "
         "1/2 (width 8, 1 block)", kind="diffusion", composite=True, loss="structure-guided", **SR3_TINY,
         **GUIDE_TINY),
    spec("sg-sr3-small", StructureGuidedDiffusion, "Multiscale structure guided diffusion (Ren et al. 2023) on "
         "sr3-small: grayscale guidance at 1/2, 1/4, 1/8 into the encoder", kind="diffusion", composite=True,
         loss="structure-guided", **SR3_SMALL, **GUIDE_SR3_SMALL),
    spec("sg-indi-nafnet-tiny", StructureGuidedInDI, "Tiny structure-guided InDI for tests: indi-nafnet-tiny plus "
         "guidance at 1/2", kind="diffusion", loss="structure-guided", **FEWSTEP_TINY, **GUIDE_TINY),
    spec("sg-indi-nafnet-small", StructureGuidedInDI, "Structure-guided InDI on nafnet-small: guidance at 1/2, "
         "1/4, 1/8 (init_from: default or an indi-nafnet-small run)", kind="diffusion", loss="structure-guided",
         **LITE, width=16, train_size=DEFAULT_TRAIN_SIZE, **GUIDE_SMALL),
    spec("sg-resshift-nafnet-tiny", StructureGuidedResShift, "Tiny structure-guided ResShift for tests: "
         "resshift-nafnet-tiny plus guidance at 1/2", kind="diffusion", composite=True, loss="structure-guided",
         **FEWSTEP_TINY, **GUIDE_TINY),
    spec("sg-resshift-nafnet-small-refine", StructureGuidedResShift, "Structure-guided predict-and-refine "
         "ResShift: resshift-nafnet-small-refine plus guidance at 1/2, 1/4, 1/8 (init_from: default)",
         kind="diffusion", composite=True, loss="structure-guided", anchor="predictor", predictor="nafnet-small",
         **LITE, width=16, train_size=DEFAULT_TRAIN_SIZE, **GUIDE_SMALL),
)
