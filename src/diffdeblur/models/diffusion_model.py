"""The diffusion-model base shared by the pixel (:mod:`.sr3_unet`) and latent (:mod:`.latent_denoiser`) models,
and, one level up, by the few-step chains that start from the degraded image (:mod:`.fewstep`).

:class:`ChainModel` writes once what every sampled model needs: the noise field and its tile slices,
padding, sample averaging, the per-step trace hook, and the check of the sampler name. Its subclasses
provide ``run_chain`` (one sample of their reverse chain) and ``timesteps`` (the chain's times for a
restore call). :class:`DiffusionModel` is the Gaussian (alpha_bar) case: the schedule buffer, the network
call with its time scaling, the parameterisation (through
:func:`diffdeblur.diffusion.process.make_denoiser`), and sampling with any sampler of
:data:`diffdeblur.diffusion.samplers.SAMPLERS`. A subclass provides the UNet (``self.unet``) and two hooks:

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
from ..diffusion.samplers import SAMPLER_NAMES, SamplingOptions, average_samples, check_sampler, run_sampler
from ..diffusion.schedules import alpha_bar_from_betas, make_beta_schedule, make_timesteps
from ..errors import ConfigError
from .blocks import pad_to_multiple
from .protocol import restore_options

TIME_SCALE = 1000.0  # the network sees t * 1000 / T, so embeddings span the same range for any T
LOSS_TYPES = ("l1", "l2")
Callback = Callable[[dict[str, Any]], None]
ToImage = Callable[[torch.Tensor, bool], torch.Tensor]


class ChainModel(nn.Module):
    """Base of every model that restores by sampling a reverse chain (see the module docstring).

    ``noise_channels``: channels of the chain's state; ``noise_scale``: image pixels per pixel of the
    state (1 in pixel space, 8 for latents); ``samplers``: the sampler names this chain accepts.
    Subclasses implement :meth:`sampling_context`, :meth:`run_chain` and :meth:`timesteps`.
    """

    stochastic = True
    samplers: tuple[str, ...] = SAMPLER_NAMES

    def __init__(self, *, default_steps: int, default_sampler: str, noise_channels: int,
                 noise_scale: int = 1) -> None:
        super().__init__()
        self.default_steps, self.default_sampler = default_steps, self.check_sampler(default_sampler)
        self.noise_channels, self.noise_scale = noise_channels, noise_scale

    def check_sampler(self, name: str) -> str:
        """``name`` if this chain accepts it, else a ConfigError listing the ones it does."""
        check_sampler(name)
        if name not in self.samplers:
            raise ConfigError(f"{type(self).__name__}: sampler '{name}' does not apply to this chain "
                              f"(available: {', '.join(self.samplers)})")
        return name

    def sampling_context(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], ToImage]:
        raise NotImplementedError

    def run_chain(self, sampler: str, options: SamplingOptions, ts: list[float], cond: torch.Tensor,
                  draw: Callable[[int], torch.Tensor], callback: Callback | None) -> torch.Tensor:
        """One sample of the reverse chain: ``draw(i)`` is the state-shaped noise of step index i
        (0 = the start state); returns the final state (in the space ``to_image`` maps from)."""
        raise NotImplementedError

    def timesteps(self, options: SamplingOptions) -> list[float]:
        """The chain's times for ``options`` (explicit ``options.timesteps`` are used as given)."""
        raise NotImplementedError

    @restore_options
    @torch.inference_mode()
    def restore(self, blur: torch.Tensor, steps: int | None = None, sampler: str | None = None, eta: float = 0.0,
                num_samples: int = 1, noise: NoiseField | None = None, generator: torch.Generator | None = None,
                callback: Any = None, spacing: str = "trailing",
                timesteps: Sequence[float] | None = None) -> torch.Tensor:
        """Deblur (B,3,H,W) in [0,1] -> (B,3,H,W) in [0,1] by sampling the reverse chain.

        steps: number of network calls (default ``default_steps``), timesteps spaced by ``spacing``
        (or give ``timesteps`` explicitly); sampler: one of the chain's ``samplers``; eta: DDIM noise
        (0 = deterministic); num_samples: draws averaged (DvSR's sample averaging); noise: a
        :class:`NoiseField` (tiling passes the slice for this tile) or None to draw one from
        ``generator``; callback: per-step hook, see :mod:`diffdeblur.diffusion.samplers` (adds
        "x0_image", "x_t_image", "sample"). A model with other options declares its own ``restore``.
        """
        options = SamplingOptions(steps, sampler, eta, num_samples, spacing, timesteps)
        return self.sample_image(blur, options, noise, generator, callback)

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
        sampler = self.check_sampler(options.sampler or self.default_sampler)
        ts, noise = self.sampling_inputs(blur, options, noise, generator)
        x, h, w = pad_to_multiple(blur, self.size_multiple)
        cond, (sh, sw), to_image = self.sampling_context(x, **context)

        def one_sample(k: int) -> torch.Tensor:
            def hook(info: dict[str, Any]) -> None:
                callback(dict(info, sample=k, x0_image=to_image(info["x0"], True)[..., :h, :w].clamp(0, 1),
                              x_t_image=to_image(info["x_t"], False)[..., :h, :w].clamp(0, 1)))
            return self.run_chain(sampler, options, ts, cond, lambda i: noise.sample(k, i, sh, sw, dtype=cond.dtype),
                                  hook if callback is not None else None)

        state = average_samples(one_sample, options.num_samples).to(cond.dtype)
        return to_image(state, True)[..., :h, :w].clamp(0, 1)

    def sampling_inputs(self, blur: torch.Tensor, options: SamplingOptions, noise: NoiseField | None,
                        generator: torch.Generator | None) -> tuple[list[float], NoiseField]:
        """The timesteps (:meth:`timesteps`) and the noise field of one restore call.

        ``noise`` (a tile's slice) wins over a fresh field from ``generator``. ConfigError when the
        field's batch differs from ``blur``'s. The field is moved to ``blur``'s device.
        """
        ts = list(options.timesteps) if options.timesteps is not None else self.timesteps(options)
        if noise is None:
            noise = self.noise_like(blur, generator)
        if len(noise.seeds) != blur.shape[0]:
            raise ConfigError(f"noise field has {len(noise.seeds)} images, input batch has {blur.shape[0]}")
        return ts, noise.to(blur.device)


class DiffusionModel(ChainModel):
    """Base of the registered Gaussian diffusion models (see the module docstring).

    ``clip``: |x0| bound of the estimates while sampling (None = no clamp).
    """

    unet: nn.Module

    def __init__(self, *, num_train_steps: int, schedule: str, objective: str, loss_type: str,
                 default_steps: int, default_sampler: str, noise_channels: int, noise_scale: int = 1,
                 beta_start: float | None = None, beta_end: float | None = None) -> None:
        super().__init__(default_steps=default_steps, default_sampler=default_sampler,
                         noise_channels=noise_channels, noise_scale=noise_scale)
        check_objective(objective)
        if loss_type not in LOSS_TYPES:
            raise ConfigError(f"unknown loss_type '{loss_type}' (known: {', '.join(LOSS_TYPES)})")
        self.objective, self.loss_type = objective, loss_type
        self.num_train_steps = num_train_steps
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

    def run_chain(self, sampler: str, options: SamplingOptions, ts: list[float], cond: torch.Tensor,
                  draw: Callable[[int], torch.Tensor], callback: Callback | None) -> torch.Tensor:
        """One sample: ``sampler`` of :data:`~diffdeblur.diffusion.samplers.SAMPLERS` from x_T = draw(0)."""
        return run_sampler(sampler, self.denoiser(), draw(0), ts, alpha_bar=self.alpha_bar, cond=cond,
                           eta=options.eta, noise=draw, callback=callback)

    def timesteps(self, options: SamplingOptions) -> list[float]:
        """``options.steps`` (default ``default_steps``) timesteps of the T-step schedule, spaced by
        ``options.spacing`` (:func:`~diffdeblur.diffusion.schedules.make_timesteps`)."""
        steps = int(options.steps or self.default_steps)
        return make_timesteps(self.num_train_steps, steps, options.spacing).tolist()
