"""InDI deblurring (Delbracio & Milanfar, "Inversion by Direct Iteration", TMLR 2023, arXiv 2303.11435): the
wrapper, its loss and its presets.

The network sees x_t only, F(x_t, t) ~ x; at t = 1, x_1 = y is the blurry image, exactly the default's input, so
one step is the regression estimate and more steps move along the perception-distortion curve. The process is
:mod:`diffdeblur.diffusion.indi` (a shifting chain, :mod:`diffdeblur.diffusion.shifting`). docs/methods/indi.md.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..diffusion.indi import indi_loss, indi_sample, indi_start, indi_times
from ..diffusion.noise import NoiseField
from ..diffusion.process import to_signed, to_unit
from ..errors import ConfigError
from ..models.nafnet import LITE
from ..models.protocol import restore_options
from ..models.time_nafnet import TIME_DIM
from .base import TIME_SCALE, Batch, Callback, Logs, SamplingOptions, ToImage, register_objective, spec
from .shifting import DEFAULT_TRAIN_SIZE, TINY, FewStepModel


class InDIDeblur(FewStepModel):
    """InDI deblurring (see the module docstring). NAFNet kwargs: ``width, middle_blk_num, enc_blk_nums,
    dec_blk_nums, train_size``; ``time_dim``: time embedding width; ``sigma``: noise of the path
    x_t = (1 - t) x + t y + sigma t eps (in [-1, 1] units; 0 = deterministic InDI); ``loss_type`` (l2 as the
    paper, or l1); ``endpoint_prob``: share of training images at t = 1 (:func:`~diffdeblur.diffusion.indi.indi_loss`);
    ``freeze_trunk`` as :class:`FewStepModel`; sampling defaults ``default_steps``, ``default_sampler`` (ddim | ddpm)."""

    def __init__(self, width: int = 16, middle_blk_num: int = 1, enc_blk_nums: Sequence[int] = (1, 1, 1, 28),
                 dec_blk_nums: Sequence[int] = (1, 1, 1, 1), train_size: int = 256, time_dim: int = TIME_DIM,
                 sigma: float = 0.0, loss_type: str = "l2", endpoint_prob: float = 0.0, default_steps: int = 4,
                 default_sampler: str = "ddim", freeze_trunk: bool = False) -> None:
        super().__init__(width=width, middle_blk_num=middle_blk_num, enc_blk_nums=enc_blk_nums,
                         dec_blk_nums=dec_blk_nums, train_size=train_size, time_dim=time_dim, extra_channels=0,
                         loss_type=loss_type, default_steps=default_steps, default_sampler=default_sampler,
                         freeze_trunk=freeze_trunk)
        if sigma < 0:
            raise ConfigError(f"sigma must be >= 0, got {sigma}")
        if not 0 <= endpoint_prob <= 1:
            raise ConfigError(f"endpoint_prob must be in [0, 1], got {endpoint_prob}")
        self.sigma = float(sigma)
        self.endpoint_prob = float(endpoint_prob)
        self.stochastic = self.sigma > 0

    def net(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """F(x_t, t): x_t (B, 3, H, W) in [-1, 1], t (B,) in [0, 1] -> x0 estimate in [-1, 1]."""
        return to_signed(self.unet(to_unit(x_t), t.float() * TIME_SCALE))

    forward = net

    def chain_inputs(self, blur: torch.Tensor, sharp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Training: (x0, y, network condition) in the chain's space (see :mod:`diffdeblur.objectives`)."""
        return to_signed(sharp), to_signed(blur), None

    def sampling_context(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], ToImage]:
        return to_signed(x), (x.shape[-2], x.shape[-1]), lambda state, final: to_unit(state)

    def timesteps(self, options: SamplingOptions) -> list[float]:
        return indi_times(int(options.steps or self.default_steps))

    def run_chain(self, sampler: str, options: SamplingOptions, ts: list[float], cond: torch.Tensor,
                  draw: Callable[[int], torch.Tensor], callback: Callback | None) -> torch.Tensor:
        x_1 = indi_start(cond, self.sigma, draw(0) if self.sigma > 0 else None)
        return indi_sample(self.x0_fn, x_1, ts, y=cond, sigma=self.sigma, eta=self.chain_eta(sampler, options),
                           noise=draw, callback=callback)

    @restore_options
    @torch.inference_mode()
    def restore(self, blur: torch.Tensor, steps: int | None = None, sampler: str | None = None, eta: float = 0.0,
                num_samples: int = 1, noise: NoiseField | None = None, generator: torch.Generator | None = None,
                callback: Any = None, timesteps: Sequence[float] | None = None,
                options: SamplingOptions | None = None) -> torch.Tensor:
        """Deblur (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in [0, 1] by ``steps`` InDI steps from t = 1.

        steps: network calls, uniform in t (default ``default_steps``), or explicit ``timesteps`` in (0, 1];
        sampler: ddim (eta = 0: the published iteration) | ddpm (posterior re-noising; only with sigma > 0);
        num_samples: draws averaged (only differ with sigma > 0); noise / generator / callback as
        :meth:`ChainModel.sample_image`; ``options``: a :class:`SamplingOptions` replacing the keyword options.
        """
        options = options or SamplingOptions(steps, sampler, eta, num_samples, "trailing", timesteps)
        return self.sample_image(blur, options, noise, generator, callback)


# ---- the loss --------------------------------------------------------------------------------------

@register_objective("indi")
def indi(model: nn.Module, batch: Batch, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Logs]:
    """InDI (:func:`diffdeblur.diffusion.indi.indi_loss`) on ``model.chain_inputs(blur, sharp)``."""
    x0, y, cond = model.chain_inputs(batch["input"], batch["target"])
    return indi_loss(model.net, x0, y, cond, sigma=model.sigma, loss_type=model.loss_type,
                     endpoint_prob=model.endpoint_prob, generator=generator)


# ---- presets ---------------------------------------------------------------------------------------

PRESETS = (
    spec("indi-nafnet-tiny", InDIDeblur, "Tiny InDI (direct iteration from the blurry image) for tests: "
         "time-conditioned NAFNet width 8, two levels", kind="diffusion", loss="indi", **TINY),
    spec("indi-nafnet-small", InDIDeblur, "InDI direct iteration from the blurry image on a time-conditioned "
         "nafnet-small (init_from: default makes one step the shipped default)",
         kind="diffusion", loss="indi", **LITE, width=16, train_size=DEFAULT_TRAIN_SIZE),
)
