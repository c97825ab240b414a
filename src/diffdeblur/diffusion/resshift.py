"""ResShift: residual shifting from the clean image to the degraded one (pure functions).

Yue, Wang & Loy, "ResShift: Efficient Diffusion Model for Image Super-resolution by Residual Shifting",
NeurIPS 2023, arXiv 2307.12348; reference code zsyOAOA/ResShift ``models/gaussian_diffusion.py``.
Notation: x0 = sharp, y = degraded (the blurry image, or a regression estimate for predict-and-refine),
e0 = y - x0, t = 0 .. T-1 indexes the tensors below (paper t = 1 .. T), eta_{-1} = 0 (the clean image).

- Transition (Sec. 2.1, eq. 1):  q(x_t | x_{t-1}, y) = N(x_t; x_{t-1} + alpha_t e0, kappa^2 alpha_t I),
  alpha_t = eta_t - eta_{t-1}.
- Marginal (eq. 2):              q(x_t | x0, y) = N(x_t; x0 + eta_t e0, kappa^2 eta_t I).
- Posterior (Sec. 2.1):          q(x_{t-1} | x_t, x0, y) = N((eta_{t-1}/eta_t) x_t + (alpha_t/eta_t) x0,
                                                         kappa^2 (eta_{t-1}/eta_t) alpha_t I)   (no y term).
- Reverse model: the network f(x_t, y, t) predicts x0 and the posterior is sampled with x0 = f (the
  "x0" / ``xstart`` parameterisation, loss = ||f - x0||^2).
- Start of sampling: x_T = y + kappa sqrt(eta_T) eps (the reference ``prior_sample``).
- Schedule (Sec. 2.2, "noise schedule"): sqrt(eta_t) = sqrt(eta_1) b0^{beta_t},
  beta_t = ((t-1)/(T-1))^p (T-1), b0 = exp(log(eta_T / eta_1) / (2 (T-1))), i.e. sqrt(eta_t) is geometric
  in ((t-1)/(T-1))^p between sqrt(eta_1) and sqrt(eta_T). Values as the reference code
  (``get_named_eta_schedule('exponential')``): sqrt(eta_1) = min(min_noise_level / kappa, min_noise_level),
  sqrt(eta_T) = 0.99; p = 0.3, kappa = 2. T = 15 (min_noise_level 0.04) in the NeurIPS configs, T = 4
  (min_noise_level 0.2) in the journal ones.
[Equation numbers are those of the arXiv version as read; check against the paper before quoting them.]

All of it is the shifting process of :mod:`.shifting` with s_t = eta_t and noise kappa sqrt(eta_t).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import ConfigError
from .process import l1_or_l2, randn
from .shifting import Callback, NoiseFn, X0Fn, shift_chain, shift_marginal
from .schedules import check_timesteps

KAPPA = 2.0  # noise strength (paper, SR configs)
POWER = 0.3  # p of the schedule
MIN_NOISE_LEVEL = 0.04  # sqrt(eta_1) = min(0.04 / kappa, 0.04) at T = 15
SQRT_ETA_END = 0.99  # sqrt(eta_T) in the reference code
INPUT_SCALE_STDS = 3.0  # reference ``_scale_input`` (pixel space): x_t / (3 kappa sqrt(eta_t) + 1)


def resshift_sqrt_etas(num_steps: int, kappa: float = KAPPA, power: float = POWER,
                       min_noise_level: float = MIN_NOISE_LEVEL, sqrt_eta_end: float = SQRT_ETA_END) -> torch.Tensor:
    """sqrt(eta_t), t = 0 .. T-1, of the schedule in the module docstring. (T,) float32, increasing."""
    if num_steps < 2:
        raise ConfigError(f"ResShift needs num_train_steps >= 2, got {num_steps}")
    start = min(min_noise_level / kappa, min_noise_level)
    if not 0 < start < sqrt_eta_end <= 1:
        raise ConfigError(f"ResShift schedule needs 0 < sqrt(eta_1) = {start:g} < sqrt(eta_T) = {sqrt_eta_end:g} <= 1")
    # beta_t = ((t-1)/(T-1))^p (T-1); sqrt(eta_t) = sqrt(eta_1) * b0^beta_t with b0^(T-1) = sqrt(eta_T) / sqrt(eta_1)
    beta = torch.linspace(0, 1, num_steps, dtype=torch.float64) ** power * (num_steps - 1)
    log_b0 = math.log(sqrt_eta_end / start) / (num_steps - 1)
    return (start * torch.exp(beta * log_b0)).float()


def etas_with_clean(sqrt_etas: torch.Tensor, timesteps: Sequence[float]) -> list[float]:
    """eta at each timestep (ints in [0, T-1]) followed by eta = 0 for the clean image (float64 values)."""
    eta = sqrt_etas.double() ** 2
    return [float(eta[int(t)]) for t in timesteps] + [0.0]


def resshift_marginal(x0: torch.Tensor, y: torch.Tensor, eta_t: torch.Tensor | float, kappa: float,
                      eps: torch.Tensor) -> torch.Tensor:
    """A draw of q(x_t | x0, y) = N(x0 + eta_t (y - x0), kappa^2 eta_t I) (eq. 2). eta_t: (B,) or scalar."""
    eta_t = torch.as_tensor(eta_t, dtype=x0.dtype, device=x0.device)
    return shift_marginal(x0, y, eta_t, kappa * eta_t.sqrt(), eps)


def resshift_transition(x_prev: torch.Tensor, x0: torch.Tensor, y: torch.Tensor, alpha_t: float,
                        kappa: float) -> tuple[torch.Tensor, float]:
    """Mean and variance of q(x_t | x_{t-1}, y) = N(x_{t-1} + alpha_t e0, kappa^2 alpha_t I) (eq. 1)."""
    return x_prev + alpha_t * (y - x0), kappa ** 2 * alpha_t


def resshift_posterior(x_t: torch.Tensor, x0: torch.Tensor, eta_t: float, eta_p: float,
                       kappa: float) -> tuple[torch.Tensor, float]:
    """Mean and variance of q(x_p | x_t, x0, y), eta_p < eta_t (the paper's closed form, Sec. 2.1):
    mean = (eta_p / eta_t) x_t + (alpha / eta_t) x0, var = kappa^2 (eta_p / eta_t) alpha, alpha = eta_t - eta_p.
    With eta_p = eta_{t-1} this is the one-step posterior; any earlier eta_p gives a respaced jump."""
    alpha = eta_t - eta_p
    return (eta_p / eta_t) * x_t + (alpha / eta_t) * x0, kappa ** 2 * eta_p / eta_t * alpha


def resshift_prior(y: torch.Tensor, sqrt_eta_T: float, kappa: float, eps: torch.Tensor) -> torch.Tensor:
    """The start of sampling x_T = y + kappa sqrt(eta_T) eps (reference ``prior_sample``)."""
    return y + kappa * sqrt_eta_T * eps


def resshift_input_scale(sqrt_eta: torch.Tensor | float, kappa: float) -> torch.Tensor | float:
    """1 / (3 kappa sqrt(eta_t) + 1): the reference code's normalisation of x_t before the network
    (``_scale_input``, pixel space), so that the network input keeps about the data range at every t."""
    return 1.0 / (INPUT_SCALE_STDS * kappa * sqrt_eta + 1.0)


def resshift_loss(net: X0Fn, x0: torch.Tensor, y: torch.Tensor, cond: torch.Tensor | None, sqrt_etas: torch.Tensor,
                  kappa: float, *, loss_type: str = "l2",
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The x0-prediction objective: t ~ U{0..T-1}, x_t ~ q(x_t | x0, y) (eq. 2), loss = |net(x_t, t, cond) - x0|^p
    (p = 2, the paper's MSE, or 1). x0, y: (B, C, H, W) in the chain's space; net returns the x0 estimate."""
    b = x0.shape[0]
    gen_device = generator.device if generator is not None else torch.device("cpu")
    t = torch.randint(0, len(sqrt_etas), (b,), generator=generator, device=gen_device).to(x0.device)
    eta_t = sqrt_etas.to(x0.device)[t] ** 2
    x_t = resshift_marginal(x0, y, eta_t, kappa, randn(x0.shape, generator, x0.device, x0.dtype))
    loss = l1_or_l2(net(x_t, t.float(), cond).float(), x0.float(), loss_type)
    return loss, {"resshift": float(loss.detach())}


def check_resshift_timesteps(timesteps: Sequence[float] | torch.Tensor, num_train_steps: int) -> list[float]:
    """Strictly decreasing integer timesteps in [0, T-1] (the sampler jumps between them)."""
    ts = check_timesteps(timesteps, num_train_steps)
    if any(t != int(t) for t in ts):
        raise ConfigError("ResShift timesteps must be integers (indices of the eta schedule)")
    return ts


@torch.inference_mode()
def resshift_sample(x0_fn: X0Fn, x_T: torch.Tensor, timesteps: Sequence[float] | torch.Tensor, *,
                    sqrt_etas: torch.Tensor, kappa: float, y: torch.Tensor, cond: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, callback: Callback | None = None,
                    noise: NoiseFn | None = None, eta: float = 1.0) -> torch.Tensor:
    """ResShift's reverse chain over ``timesteps`` (all T = 4..15 of them, or a decreasing subset).

    x_T: the start state, normally :func:`resshift_prior` (y + kappa sqrt(eta_T) eps; samplers never
    draw it themselves); x0_fn(x_t, t, cond) -> x0 estimate. eta = 1 (default): sample the posterior with
    x0 = x0_fn (the paper's sampler); 0 <= eta < 1: the DDIM-like family of :func:`.shifting.shift_step`
    (0 = deterministic). The last step returns the x0 estimate. Callback and noise as :func:`.shifting.shift_chain`.
    """
    ts = check_resshift_timesteps(timesteps, len(sqrt_etas))
    etas = etas_with_clean(sqrt_etas, ts)
    nus = [math.sqrt(e) for e in etas]
    return shift_chain(x0_fn, x_T, y, ts, etas, nus, kappa, eta=eta, cond=cond, generator=generator,
                       callback=callback, noise=noise)

