"""The diffusion-model base shared by the pixel (:mod:`.sr3_unet`) and latent (:mod:`.latent_denoiser`) models.

Written once here: the schedule buffer, the network call with its time scaling, the
parameterisation (through :func:`diffdeblur.diffusion.process.make_denoiser`), the noise field and
its tile slices, sampling with any sampler of :data:`diffdeblur.diffusion.samplers.SAMPLERS`, and
sample averaging. A subclass provides the UNet (``self.unet``) and two hooks:

- ``diffusion_inputs(blur, sharp) -> (x0, cond, aux_loss | None)`` for training (what is diffused,
  in the diffusion range, and the condition the network sees);
- ``sampling_context(x) -> (cond, (h, w), to_image)`` for sampling a padded input x (B, 3, H, W):
  the condition, the spatial size of the diffused state, and ``to_image(state, final) -> (B, 3, H, W)``
  mapping a state (a sample, x_t or an x0 estimate) to an unclamped image in [0, 1].
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..diffusion.noise import NoiseField, new_noise_field, scaled_box
from ..diffusion.process import DenoiseFn, check_objective, make_denoiser
from ..diffusion.samplers import SamplingOptions, average_samples, check_sampler, run_sampler
from ..diffusion.schedules import alpha_bar_from_betas, make_beta_schedule, make_timesteps
from ..errors import ConfigError
from .blocks import pad_to_multiple

TIME_SCALE = 1000.0  # the network sees t * 1000 / T, so embeddings span the same range for any T
LOSS_TYPES = ("l1", "l2")
Callback = Callable[[dict[str, Any]], None]
ToImage = Callable[[torch.Tensor, bool], torch.Tensor]


class DiffusionModel(nn.Module):
    """Base of the registered diffusion models (see the module docstring).

    ``noise_channels``: channels of the diffused state; ``noise_scale``: image pixels per pixel of
    the diffused state (1 in pixel space, 8 for latents); ``clip``: |x0| bound of the estimates
    while sampling (None = no clamp).
    """

    stochastic = True
    unet: nn.Module

    def __init__(self, *, num_train_steps: int, schedule: str, objective: str, loss_type: str,
                 default_steps: int, default_sampler: str, noise_channels: int, noise_scale: int = 1,
                 beta_start: float | None = None, beta_end: float | None = None) -> None:
        super().__init__()
        check_objective(objective)
        check_sampler(default_sampler)
        if loss_type not in LOSS_TYPES:
            raise ConfigError(f"unknown loss_type '{loss_type}' (known: {', '.join(LOSS_TYPES)})")
        self.objective, self.loss_type = objective, loss_type
        self.num_train_steps = num_train_steps
        self.default_steps, self.default_sampler = default_steps, default_sampler
        self.noise_channels, self.noise_scale = noise_channels, noise_scale
        self.clip: float | None = None
        betas = make_beta_schedule(schedule, num_train_steps, beta_start=beta_start, beta_end=beta_end)
        self.register_buffer("alpha_bar", alpha_bar_from_betas(betas), persistent=False)  # (T,)

    # -- the network and its parameterisation --
    def net(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Raw UNet output (eps | x0 | v | x0-precond) for timestep indices t (B,) float in [0, T-1]."""
        return self.unet(x_t, t.float() * (TIME_SCALE / self.num_train_steps), cond)

    forward = net

    def denoiser(self) -> DenoiseFn:
        """The samplers' ``denoise_fn(x_t, t, cond) -> Prediction`` for this model."""
        return make_denoiser(self.net, self.alpha_bar, self.objective, self.clip)

    # -- hooks of the subclasses --
    def diffusion_inputs(self, blur: torch.Tensor, sharp: torch.Tensor) -> tuple:
        raise NotImplementedError

    def sampling_context(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], ToImage]:
        raise NotImplementedError

    # -- noise (registry protocol) --
    def noise_like(self, blur: torch.Tensor, generator: torch.Generator | None = None) -> NoiseField:
        """Noise for the full image ``blur`` (B, 3, H, W): a lazily generated :class:`NoiseField`."""
        return new_noise_field(blur.shape[0], generator, channels=self.noise_channels)

    def slice_noise(self, noise: NoiseField, box: tuple[int, int, int, int]) -> NoiseField:
        """The noise of the pixel tile box = (y0, y1, x0, x1), on the diffused state's grid."""
        return noise.crop(scaled_box(box, self.noise_scale))

    # -- sampling --
    def sample_image(self, blur: torch.Tensor, options: SamplingOptions, noise: NoiseField | None = None,
                     generator: torch.Generator | None = None, callback: Callback | None = None,
                     **context: Any) -> torch.Tensor:
        """Deblur (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in [0, 1] by sampling the reverse process.

        ``noise``: a :class:`NoiseField` (tiling passes the slice for this tile) or None to draw one
        from ``generator``; ``callback``: per-step hook, see :mod:`diffdeblur.diffusion.samplers`
        (adds "x0_image", "x_t_image", "sample"); ``context`` goes to :meth:`sampling_context`.
        ``options.num_samples`` draws are averaged in the diffused space (DvSR's sample averaging).
        """
        sampler = options.sampler or self.default_sampler
        ts, noise = self.sampling_inputs(blur, options, noise, generator)
        x, h, w = pad_to_multiple(blur, self.size_multiple)
        cond, (sh, sw), to_image = self.sampling_context(x, **context)
        denoise = self.denoiser()

        def one_sample(k: int) -> torch.Tensor:
            def hook(info: dict[str, Any]) -> None:
                callback(dict(info, sample=k, x0_image=to_image(info["x0"], True)[..., :h, :w].clamp(0, 1),
                              x_t_image=to_image(info["x_t"], False)[..., :h, :w].clamp(0, 1)))
            x_T = noise.sample(k, 0, sh, sw, dtype=cond.dtype)
            return run_sampler(sampler, denoise, x_T, ts, alpha_bar=self.alpha_bar, cond=cond, eta=options.eta,
                               noise=lambda i: noise.sample(k, i, sh, sw, dtype=cond.dtype),
                               callback=hook if callback is not None else None)

        state = average_samples(one_sample, options.num_samples).to(cond.dtype)
        return to_image(state, True)[..., :h, :w].clamp(0, 1)

    def sampling_inputs(self, blur: torch.Tensor, options: SamplingOptions, noise: NoiseField | None,
                        generator: torch.Generator | None) -> tuple[list[float], NoiseField]:
        """The timesteps and the noise field of one restore call.

        ``options.timesteps`` (explicit) win over ``options.steps`` spaced by ``options.spacing``;
        ``noise`` (a tile's slice) wins over a fresh field from ``generator``. ConfigError when the
        field's batch differs from ``blur``'s. The field is moved to ``blur``'s device.
        """
        timesteps: Sequence[float] | None = options.timesteps
        ts = (list(timesteps) if timesteps is not None else
              make_timesteps(self.num_train_steps, int(options.steps or self.default_steps), options.spacing).tolist())
        if noise is None:
            noise = self.noise_like(blur, generator)
        if len(noise.seeds) != blur.shape[0]:
            raise ConfigError(f"noise field has {len(noise.seeds)} images, input batch has {blur.shape[0]}")
        return ts, noise.to(blur.device)
