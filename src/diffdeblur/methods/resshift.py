"""ResShift deblurring (Yue, Wang & Loy, "ResShift", NeurIPS 2023, arXiv 2307.12348): the wrapper, its loss and
its presets.

The network sees the blurry image through NAFNet's own path (and global residual) and x_t through a
zero-initialised extra input, f(x_t, y, t) ~ x. The anchor y of the chain is the blurry image (``anchor="blur"``)
or the estimate of a frozen regression predictor (``anchor="predictor"``: predict-and-refine, DvSR-style;
``init_from: default`` loads the shipped default into the predictor too). The process is
:mod:`diffdeblur.diffusion.resshift`. docs/methods/resshift.md.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..diffusion.process import to_signed, to_unit
from ..diffusion.resshift import (KAPPA, POWER, SQRT_ETA_END, resshift_input_scale, resshift_loss, resshift_prior,
                                  resshift_sample, resshift_sqrt_etas)
from ..diffusion.schedules import make_timesteps
from ..errors import ConfigError
from ..models.nafnet import LITE
from ..models.time_nafnet import TIME_DIM
from .base import (TIME_SCALE, Batch, Callback, Logs, SamplingOptions, SubmodelFactory, ToImage, frozen_predictor,
                   register_objective, spec)
from .shifting import DEFAULT_TRAIN_SIZE, TINY, FewStepModel

JOURNAL_MIN_NOISE_LEVEL = 0.2  # ResShift's 4-step (journal) configs: sqrt(eta_1) = min(0.2 / kappa, 0.2)


class ResShiftDeblur(FewStepModel):
    """ResShift deblurring (see the module docstring). NAFNet kwargs as :class:`InDIDeblur`. Chain:
    ``num_train_steps`` (T), ``kappa``, ``power`` (p), ``min_noise_level``, ``sqrt_eta_end`` (the schedule of
    :func:`~diffdeblur.diffusion.resshift.resshift_sqrt_etas`); ``anchor`` = "blur" | "predictor", with
    ``predictor`` / ``predictor_kwargs`` a registered regression model (frozen); ``loss_type`` (l2 as the
    paper, or l1); ``freeze_trunk`` as :class:`FewStepModel`; sampling defaults ``default_steps`` (None = T),
    ``default_sampler`` (ddpm | ddim).
    ``submodel``: the registry's factory for the predictor (given by :func:`diffdeblur.build_model`)."""

    def __init__(self, width: int = 16, middle_blk_num: int = 1, enc_blk_nums: Sequence[int] = (1, 1, 1, 28),
                 dec_blk_nums: Sequence[int] = (1, 1, 1, 1), train_size: int = 256, time_dim: int = TIME_DIM,
                 num_train_steps: int = 4, kappa: float = KAPPA, power: float = POWER,
                 min_noise_level: float = JOURNAL_MIN_NOISE_LEVEL, sqrt_eta_end: float = SQRT_ETA_END,
                 anchor: str = "blur", predictor: str = "nafnet-small", predictor_kwargs: dict[str, Any] | None = None,
                 predictor_weights: str = "", loss_type: str = "l2", default_steps: int | None = None, default_sampler: str = "ddpm",
                 freeze_trunk: bool = False, submodel: SubmodelFactory | None = None) -> None:
        super().__init__(width=width, middle_blk_num=middle_blk_num, enc_blk_nums=enc_blk_nums,
                         dec_blk_nums=dec_blk_nums, train_size=train_size, time_dim=time_dim, extra_channels=3,
                         loss_type=loss_type, default_steps=int(default_steps or num_train_steps),
                         default_sampler=default_sampler, freeze_trunk=freeze_trunk)
        if anchor not in ("blur", "predictor"):
            raise ConfigError(f"anchor must be 'blur' or 'predictor', got '{anchor}'")
        self.num_train_steps, self.kappa = num_train_steps, float(kappa)
        self.register_buffer("sqrt_etas", resshift_sqrt_etas(num_train_steps, kappa, power, min_noise_level,
                                                             sqrt_eta_end), persistent=False)  # (T,)
        self.predictor: nn.Module | None = None
        if anchor == "predictor":
            self.predictor = frozen_predictor(self, "predictor", submodel, predictor, predictor_kwargs,
                                              predictor_weights)
            self.init_prefixes = ("unet.", "predictor.")
            self.size_multiple = math.lcm(self.size_multiple, int(getattr(self.predictor, "size_multiple", 1)))

    def train(self, mode: bool = True) -> "ResShiftDeblur":
        super().train(mode)
        if self.predictor is not None:
            self.predictor.eval()  # frozen
        return self

    def net(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """f(x_t, y, t): x_t (B, 3, H, W) in [-1, 1], t (B,) timestep indices in [0, T-1], cond = the
        blurry image (B, 3, H, W) in [0, 1] -> x0 estimate in [-1, 1]. x_t is scaled by
        :func:`~diffdeblur.diffusion.resshift.resshift_input_scale` before the network."""
        scale = resshift_input_scale(self.sqrt_etas[t.long()], self.kappa).to(x_t.dtype)[:, None, None, None]
        return to_signed(self.unet(cond, t.float() * (TIME_SCALE / self.num_train_steps), x_t * scale))

    forward = net

    @torch.no_grad()
    def anchor(self, blur: torch.Tensor) -> torch.Tensor:
        """The chain's y in [-1, 1]: the blurry image, or the frozen predictor's estimate."""
        return to_signed(blur if self.predictor is None else self.predictor(blur).clamp(0, 1))

    def chain_inputs(self, blur: torch.Tensor, sharp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training: (x0, y, network condition = the blurry image)."""
        return to_signed(sharp), self.anchor(blur), blur

    def sampling_context(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], ToImage]:
        cond = torch.cat([x, self.anchor(x)], dim=1)  # (B, 6, H, W): network input [0, 1], anchor y [-1, 1]
        return cond, (x.shape[-2], x.shape[-1]), lambda state, final: to_unit(state)

    def timesteps(self, options: SamplingOptions) -> list[float]:
        steps = int(options.steps or self.default_steps)
        return make_timesteps(self.num_train_steps, steps, options.spacing).tolist()

    def run_chain(self, sampler: str, options: SamplingOptions, ts: list[float], cond: torch.Tensor,
                  draw: Callable[[int], torch.Tensor], callback: Callback | None) -> torch.Tensor:
        blur, y = cond[:, :3], cond[:, 3:]
        x_T = resshift_prior(y, float(self.sqrt_etas[-1]), self.kappa, draw(0))
        return resshift_sample(self.x0_fn, x_T, ts, sqrt_etas=self.sqrt_etas, kappa=self.kappa, y=y, cond=blur,
                               eta=self.chain_eta(sampler, options), noise=draw, callback=callback)

    # restore(blur, steps=, sampler=, eta=, num_samples=, noise=, generator=, callback=, spacing=, timesteps=):
    # the shared ChainModel.restore; steps default to T, fewer respace the chain (spacing as make_timesteps).


# ---- the loss --------------------------------------------------------------------------------------

@register_objective("resshift")
def resshift(model: nn.Module, batch: Batch, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Logs]:
    """ResShift's x0 objective (:func:`diffdeblur.diffusion.resshift.resshift_loss`) on ``model.chain_inputs``."""
    x0, y, cond = model.chain_inputs(batch["input"], batch["target"])
    return resshift_loss(model.net, x0, y, cond, model.sqrt_etas, model.kappa, loss_type=model.loss_type,
                         generator=generator)


# ---- presets ---------------------------------------------------------------------------------------

PRESETS = (
    spec("resshift-nafnet-tiny", ResShiftDeblur, "Tiny ResShift (residual shifting from the blurry image) for "
         "tests: time-conditioned NAFNet width 8, T=4", kind="diffusion", composite=True, loss="resshift", **TINY),
    spec("resshift-nafnet-small", ResShiftDeblur, "ResShift residual shifting from the blurry image, T=4, "
         "kappa 2, p 0.3, on a time-conditioned nafnet-small that also sees x_t (init_from: default)",
         kind="diffusion", composite=True, loss="resshift", **LITE, width=16, train_size=DEFAULT_TRAIN_SIZE),
    spec("resshift-nafnet-small-refine", ResShiftDeblur, "Predict-and-refine ResShift: the chain shifts from the "
         "frozen nafnet-small predictor's estimate (init_from: default fills predictor and network)",
         kind="diffusion", composite=True, loss="resshift", anchor="predictor", predictor="nafnet-small", **LITE, width=16,
         train_size=DEFAULT_TRAIN_SIZE),
)
