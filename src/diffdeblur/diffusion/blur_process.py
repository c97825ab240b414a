"""BlurDM's dual noise-and-blur diffusion: schedules, forward process and reverse step.

He et al., "BlurDM: A Blur Diffusion Model for Image Deblurring", NeurIPS 2025 (arXiv 2512.03979);
reference code Jin-Ting-He/BlurDM ``src/MIMO_UNet/models/LatentBlurDM.py`` (read at the fork
suxh19/BlurDM @ a198412). Design notes: ``docs/methods/blurdm.md`` sections 2-4.

Notation (t = 1..T, all functions take an integer t):
- alpha_t  exposure length, alpha_0 < ... < alpha_T; ``alphas`` has T+1 entries (index = t).
- B_t      the image averaged over the exposure [0, alpha_t]; B_0 = sharp, B_T = the blurred image.
- e_t      blur residual, the light gathered during (alpha_{t-1}, alpha_t]: e_t = alpha_t B_t - alpha_{t-1} B_{t-1}.
- beta_t   noise schedule (T entries, ``betas[t-1]``); beta_bar_t the total noise std of state t
           (``beta_bars`` has T+1 entries, beta_bar_0 = 0).
- sigma_t  std of the noise injected by forward step t; c_t the reverse-step noise coefficient.

Forward step (paper eq. for the dual diffusion):
    I_t = (alpha_{t-1} / alpha_t) I_{t-1} + e_t / alpha_t + sigma_t eps_t,          eps_t ~ N(0, I)
The first two terms turn the mean over [0, alpha_{t-1}] into the mean over [0, alpha_t]; noise injected
at step i is scaled by alpha_i / alpha_t by the later steps, hence the closed form
    I_t = B_t + beta_bar_t eps,   beta_bar_t^2 = sum_{i<=t} (alpha_i / alpha_t)^2 sigma_i^2.
Reverse step (substitute the closed form and B_{t-1} = (alpha_t B_t - e_t) / alpha_{t-1}):
    z_{t-1} = (alpha_t z_t - e_hat_t) / alpha_{t-1} - c_t eps_hat_t,   c_t = alpha_t beta_bar_t / alpha_{t-1} - beta_bar_{t-1}
deterministic (DDIM-like): no fresh noise is drawn during the reverse loop.

Paper vs reference code (``parameterization``):
- ``"paper"``: beta_t is the std of the injected noise (sigma_t = beta_t), so
  beta_bar_t = sqrt(sum_i (alpha_i / alpha_t)^2 beta_i^2), and c_1 follows the formula with beta_bar_0 = 0.
- ``"code"`` (default; ``get_beta_bar`` of the reference code): beta_t is a *variance* and the weight is
  index-shifted, beta_bar_t = sqrt(sum_i (alpha_{i-1} / alpha_t)^2 beta_i), and c_1 is set to beta_bar_1.
  The forward step that has exactly this closed form injects the noise *before* the exposure is
  extended: I_t = (alpha_{t-1}/alpha_t)(I_{t-1} + sqrt(beta_t) eps_t) + e_t / alpha_t, i.e.
  sigma_t = (alpha_{t-1} / alpha_t) sqrt(beta_t). Only the schedule's reparameterisation differs, but
  the numbers do: with the defaults (T = 5, beta_1 = 0) beta_bar = [0, .0606, .1023, .1419, .1803]
  and c = [0, .0707, .0563, .0573, .0585] (code) against beta_bar_T = .0257 (paper).
  With beta_1 = 0 (the default) both choices of c_1 give 0 and the reverse chain is exact.

Everything here is a pure function of tensors; schedules are computed in float64 and stored in
float32. Tensors z_t / I_t may have any shape (latent vectors (B, D) or images (B, 3, H, W)).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import ConfigError
from .chain import NoiseFn, Step, StepFn, run_chain

DEFAULT_TIMESTEPS = 5  # total_timestamps of the reference code (also the Stripformer predictor)
EXPOSURE_START, EXPOSURE_END = 1.0, 2.0  # alpha = linspace(1, 2, T + 1): the exposure doubles
BETA_END = 0.02  # beta = linspace(0, 0.02, T), so beta_1 = 0
PARAMETERIZATIONS = ("code", "paper")

# estimate(z_t, t) -> (e_hat_t, eps_hat_t): the two residual estimators at reverse step t
DUAL_SAMPLERS = ("dual",)  # the deterministic dual denoising-and-deblurring step (the chain is not respaced)
Estimator = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
StepCallback = Callable[[dict[str, Any]], None]


def exposure_schedule(timesteps: int = DEFAULT_TIMESTEPS, start: float = EXPOSURE_START,
                      end: float = EXPOSURE_END) -> torch.Tensor:
    """alpha_0..alpha_T = linspace(start, end, T + 1), float64 (T+1,). Reference: ``LatentExposureDiffusion``."""
    if timesteps < 1 or not 0 < start < end:
        raise ConfigError(f"need timesteps >= 1 and 0 < start < end, got {timesteps}, {start}, {end}")
    return torch.linspace(start, end, timesteps + 1, dtype=torch.float64)


def noise_schedule(timesteps: int = DEFAULT_TIMESTEPS, beta_end: float = BETA_END) -> torch.Tensor:
    """beta_1..beta_T = linspace(0, beta_end, T), float64 (T,) (so beta_1 = 0). Reference: ``LatentExposureDiffusion``."""
    if beta_end < 0:
        raise ConfigError(f"beta_end must be >= 0, got {beta_end}")
    return torch.linspace(0.0, beta_end, timesteps, dtype=torch.float64)


def _check_parameterization(parameterization: str) -> None:
    if parameterization not in PARAMETERIZATIONS:
        raise ConfigError(f"parameterization must be one of {PARAMETERIZATIONS}, got '{parameterization}'")


def step_noise_std(alphas: torch.Tensor, betas: torch.Tensor, parameterization: str = "code") -> torch.Tensor:
    """sigma_1..sigma_T (T,): std of the noise that forward step t injects (see module docstring)."""
    _check_parameterization(parameterization)
    if parameterization == "paper":
        return betas.clone()
    return alphas[:-1] / alphas[1:] * betas.clamp_min(0).sqrt()


def beta_bar_schedule(alphas: torch.Tensor, betas: torch.Tensor, parameterization: str = "code") -> torch.Tensor:
    """beta_bar_0..beta_bar_T (T+1,), beta_bar_0 = 0: the noise std of state t in the closed form.

    Equals sqrt(sum_{i<=t} (alpha_i / alpha_t)^2 sigma_i^2) for both parameterisations; for "code" this is
    the reference ``get_beta_bar``: sqrt(sum_{i<=t} (alpha_{i-1} / alpha_t)^2 beta_i).
    """
    sigmas = step_noise_std(alphas, betas, parameterization)
    out = torch.zeros_like(alphas)
    for t in range(1, len(alphas)):
        out[t] = ((alphas[1:t + 1] / alphas[t]) ** 2 * sigmas[:t] ** 2).sum().sqrt()
    return out


def reverse_coefficients(alphas: torch.Tensor, beta_bars: torch.Tensor, parameterization: str = "code") -> torch.Tensor:
    """c_1..c_T (T,): c_t = alpha_t beta_bar_t / alpha_{t-1} - beta_bar_{t-1}; "code" sets c_1 = beta_bar_1."""
    _check_parameterization(parameterization)
    c = alphas[1:] * beta_bars[1:] / alphas[:-1] - beta_bars[:-1]
    if parameterization == "code":
        c[0] = beta_bars[1]
    return c


@dataclass(frozen=True)
class BlurSchedule:
    """All coefficients of one BlurDM chain (float32 CPU tensors; index them with integer t)."""

    alphas: torch.Tensor  # (T+1,) exposure lengths alpha_0..alpha_T
    betas: torch.Tensor  # (T,) beta_1..beta_T as configured (std for "paper", variance for "code")
    sigmas: torch.Tensor  # (T,) std of the noise injected by forward step t
    beta_bars: torch.Tensor  # (T+1,) total noise std of state t, beta_bar_0 = 0
    c: torch.Tensor  # (T,) reverse-step noise coefficients c_1..c_T
    parameterization: str = "code"

    def __post_init__(self) -> None:
        # the scalars as Python floats, read once here: a chain traced for ONNX export then sees constants,
        # not data-dependent reads of tensor elements
        if self.alphas.is_meta:  # a model built on the meta device (parameter / MAC counts) never samples
            floats = {}
        else:
            floats = {k: tuple(float(v) for v in getattr(self, k)) for k in ("alphas", "sigmas", "beta_bars", "c")}
        object.__setattr__(self, "_floats", floats)

    @property
    def timesteps(self) -> int:
        return len(self.betas)

    def alpha(self, t: int) -> float:
        return self._floats["alphas"][t]

    def beta_bar(self, t: int) -> float:
        return self._floats["beta_bars"][t]

    def sigma(self, t: int) -> float:
        return self._floats["sigmas"][t - 1]

    def coef(self, t: int) -> float:
        return self._floats["c"][t - 1]


def make_schedule(timesteps: int = DEFAULT_TIMESTEPS, exposure_start: float = EXPOSURE_START,
                  exposure_end: float = EXPOSURE_END, beta_end: float = BETA_END,
                  parameterization: str = "code") -> BlurSchedule:
    """Build the schedule of docs/methods/blurdm.md section 3 (defaults: T = 5, alpha 1 -> 2, beta 0 -> 0.02, code form)."""
    alphas = exposure_schedule(timesteps, exposure_start, exposure_end)
    betas = noise_schedule(timesteps, beta_end)
    sigmas = step_noise_std(alphas, betas, parameterization)
    beta_bars = beta_bar_schedule(alphas, betas, parameterization)
    c = reverse_coefficients(alphas, beta_bars, parameterization)
    f32 = lambda x: x.to(torch.float32)  # noqa: E731 - compute in float64, store in float32
    return BlurSchedule(f32(alphas), f32(betas), f32(sigmas), f32(beta_bars), f32(c), parameterization)


def _check_t(t: int, schedule: BlurSchedule) -> None:
    if not 1 <= t <= schedule.timesteps:
        raise ValueError(f"t must be in 1..{schedule.timesteps}, got {t}")


def blur_residual(b_prev: torch.Tensor, b_t: torch.Tensor, t: int, schedule: BlurSchedule) -> torch.Tensor:
    """e_t = alpha_t B_t - alpha_{t-1} B_{t-1}: the light collected during (alpha_{t-1}, alpha_t]."""
    _check_t(t, schedule)
    return schedule.alpha(t) * b_t - schedule.alpha(t - 1) * b_prev


def forward_step(i_prev: torch.Tensor, e_t: torch.Tensor, t: int, schedule: BlurSchedule,
                 eps: torch.Tensor) -> torch.Tensor:
    """One forward step: I_t = (alpha_{t-1}/alpha_t) I_{t-1} + e_t / alpha_t + sigma_t eps."""
    _check_t(t, schedule)
    a_prev, a_t = schedule.alpha(t - 1), schedule.alpha(t)
    return (a_prev / a_t) * i_prev + e_t / a_t + schedule.sigma(t) * eps


def q_sample(b_t: torch.Tensor, t: int, schedule: BlurSchedule, eps: torch.Tensor) -> torch.Tensor:
    """Closed form of the forward process: I_t = B_t + beta_bar_t eps (t = 0 gives B_0 = the sharp image)."""
    if not 0 <= t <= schedule.timesteps:
        raise ValueError(f"t must be in 0..{schedule.timesteps}, got {t}")
    return b_t + schedule.beta_bar(t) * eps


def equivalent_noise(step_eps: list[torch.Tensor], schedule: BlurSchedule) -> torch.Tensor:
    """The single eps with I_t = B_t + beta_bar_t eps after iterating ``forward_step`` with eps_1..eps_t.

    eps = sum_i (alpha_i / alpha_t) sigma_i eps_i / beta_bar_t (unit variance); needs beta_bar_t > 0.
    """
    t = len(step_eps)
    _check_t(t, schedule)
    if schedule.beta_bar(t) <= 0:
        raise ValueError(f"beta_bar_{t} is 0: the state holds no noise")
    total = sum((schedule.alpha(i) / schedule.alpha(t)) * schedule.sigma(i) * e
                for i, e in enumerate(step_eps, start=1))
    return total / schedule.beta_bar(t)


def start_state(z_blur: torch.Tensor, schedule: BlurSchedule, noise: torch.Tensor) -> torch.Tensor:
    """z_T = B_T + beta_bar_T n: the reverse chain starts from the blurred state plus noise, not from N(0, I)."""
    return z_blur + schedule.beta_bar(schedule.timesteps) * noise


def reverse_step(z_t: torch.Tensor, e_hat: torch.Tensor, eps_hat: torch.Tensor, t: int,
                 schedule: BlurSchedule) -> torch.Tensor:
    """Dual denoising-and-deblurring step: z_{t-1} = (alpha_t z_t - e_hat_t) / alpha_{t-1} - c_t eps_hat_t."""
    _check_t(t, schedule)
    return (schedule.alpha(t) * z_t - e_hat) / schedule.alpha(t - 1) - schedule.coef(t) * eps_hat


def dual_step_fn(estimate: Estimator, schedule: BlurSchedule) -> StepFn:
    """The :data:`~.chain.StepFn` of BlurDM's reverse chain: (e_hat_t, eps_hat_t) = estimate(z_t, t), then
    :func:`reverse_step`. BlurDM has no one-step prediction of the clean end, so the step's ``x0`` is the state
    after the step z_{t-1}; extra keys ``e_hat`` (blur residual estimate) and ``denoised``
    (z_{t-1} - beta_bar_{t-1} eps_hat_t: the new state with its estimated noise removed)."""
    def step(i: int, t: float, t_next: float, z: torch.Tensor, cond: torch.Tensor | None, draw: NoiseFn) -> Step:
        e_hat, eps_hat = estimate(z, int(t))
        z_prev = reverse_step(z, e_hat, eps_hat, int(t), schedule)
        return Step(z_prev, z_prev, eps_hat, {"e_hat": e_hat,
                                              "denoised": z_prev - schedule.beta_bar(int(t) - 1) * eps_hat})
    return step


def dual_timesteps(schedule: BlurSchedule) -> list[float]:
    """BlurDM's chain times T, T-1, ..., 1 (every step; the chain is not respaced)."""
    return [float(t) for t in range(schedule.timesteps, 0, -1)]


def sample_chain(estimate: Estimator, z_T: torch.Tensor, schedule: BlurSchedule, *,
                 callback: StepCallback | None = None, return_states: bool = False):
    """Run the deterministic reverse chain t = T..1 from z_T with the one chain loop
    (:func:`.chain.run_chain`, step :func:`dual_step_fn`); returns z_0 (or (z_0, states)).

    estimate(z_t, t) -> (e_hat_t, eps_hat_t). Not wrapped in inference mode on purpose: BlurDM's
    stage 2 back-propagates through the whole chain; inference entry points wrap the call.
    callback: the loop's per-step protocol plus ``e_hat`` and ``denoised`` (:func:`dual_step_fn`).
    ``states``: dict of lists ``z`` (z_T..z_0), ``e_hat`` and ``eps_hat`` (for steps T..1).
    """
    states: dict[str, list[torch.Tensor]] = {"z": [z_T], "e_hat": [], "eps_hat": []}

    def record(info: dict) -> None:
        states["z"].append(info["x_next"])
        states["e_hat"].append(info["e_hat"])
        states["eps_hat"].append(info["eps"])
        if callback is not None:
            callback(info)
    z = run_chain(dual_step_fn(estimate, schedule), z_T, dual_timesteps(schedule), callback=record)
    return (z, states) if return_states else z
