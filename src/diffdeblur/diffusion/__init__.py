"""The maths of the processes: schedules, the Gaussian forward process and parameterisations, the one reverse-chain
loop (:mod:`.chain`) and each process's step functions (Gaussian samplers, shifting chains, BlurDM's dual chain).

Pure functions shared by every method in diffdeblur, and the tiling-consistent noise field (:mod:`.noise`).
Nothing here knows a model.
"""
from .process import (Prediction, diffusion_loss, make_denoiser, q_sample, to_signed, to_unit)  # noqa: F401
from .chain import Step, run_chain  # noqa: F401
from .samplers import (SAMPLERS, average_samples, ddim_sample, ddpm_sample, run_sampler,  # noqa: F401
                       sde_sample)
from .schedules import (alpha_bar_at, alpha_bar_from_betas, cosine_beta_schedule, linear_beta_schedule,  # noqa: F401
                        make_beta_schedule, make_timesteps)
