"""Gaussian diffusion building blocks: schedules, the forward process and parameterisations, samplers.

Pure functions shared by every diffusion model in diffdeblur (pixel-space SR3/DvSR, latent diffusion,
BlurDM), and the tiling-consistent noise field (:mod:`.noise`). Nothing here knows a model.
"""
from .process import (Prediction, diffusion_loss, make_denoiser, q_sample, to_signed, to_unit)  # noqa: F401
from .samplers import (SAMPLER_NAMES, average_samples, ddim_sample, ddpm_sample, run_sampler,  # noqa: F401
                       sde_sample)
from .schedules import (alpha_bar_at, alpha_bar_from_betas, cosine_beta_schedule, linear_beta_schedule,  # noqa: F401
                        make_beta_schedule, make_timesteps)
