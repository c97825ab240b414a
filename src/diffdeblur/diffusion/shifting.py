"""Chains that start from the degraded image: the shared Gaussian algebra of "shifting" processes.

Both few-step chains of diffdeblur move the clean image x0 towards the degraded image y (the blurry
image, or a regression estimate of the sharp one) while adding noise:

    q(x_t | x0, y) = N(x_t; x0 + s_t (y - x0), (sigma nu_t)^2 I),   0 = s_0 <= s_t <= 1,

with a shift schedule s_t and a noise profile nu_t (non-decreasing, so that the process is Markov with
independent Gaussian increments). The two instances:

- ResShift (Yue, Wang & Loy, NeurIPS 2023, arXiv 2307.12348, eq. 2): s_t = eta_t, sigma nu_t = kappa sqrt(eta_t)
  (:mod:`.resshift`);
- InDI (Delbracio & Milanfar, TMLR 2023, arXiv 2303.11435, eq. 2 with the optional noise term):
  s_t = t, sigma nu_t = sigma t (:mod:`.indi`).

Written once here: the marginal, the posterior q(x_p | x_t, x0, y) for any earlier time p < t (a jump
over several steps is a valid transition because the increments are independent), and one generalised
reverse step whose ``eta`` runs from deterministic (eta = 0, DDIM-like, Song et al. 2021 eq. 12) to the
posterior sample (eta = 1, ResShift's sampler). For InDI, eta = 0 is exactly its iteration
x_{t-d} = (d/t) F + (1 - d/t) x_t. Notation: ``p`` = the next, less degraded time; ``r = nu_p / nu_t``.
Tensors are (B, C, H, W) in the chain's space ([-1, 1] images); schedule values are Python floats.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .chain import Callback, NoiseFn, Step, StepFn, run_chain
from .process import _bcast
# x0 estimate of a chain's network: (x_t (B,C,H,W), t (B,) float, cond | None) -> x0_hat (B,C,H,W)
SHIFT_SAMPLERS = ("ddpm", "ddim")  # the posterior sample (eta = 1) / the eta family (eta = 0: deterministic)
X0Fn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def shift_marginal(x0: torch.Tensor, y: torch.Tensor, s: float | torch.Tensor, n: float | torch.Tensor,
                   eps: torch.Tensor) -> torch.Tensor:
    """A draw of q(x_t | x0, y) = N(x0 + s (y - x0), n^2 I); s, n scalars or (B,) tensors."""
    s, n = _bcast(s, x0), _bcast(n, x0)
    return x0 + s * (y - x0) + n * eps


def shift_posterior(x_t: torch.Tensor, x0: torch.Tensor, y: torch.Tensor, s_t: float, n_t: float, s_p: float,
                    n_p: float) -> tuple[torch.Tensor, float]:
    """Mean and variance of q(x_p | x_t, x0, y), p < t, by Gaussian algebra.

    Prior x_p ~ N(x0 + s_p e0, n_p^2), transition x_t | x_p ~ N(x_p + (s_t - s_p) e0, n_t^2 - n_p^2),
    e0 = y - x0. Product of the two Gaussians in x_p (Bishop 2006, eq. 2.116), with r^2 = n_p^2 / n_t^2:
      mean = r^2 x_t + (1 - r^2) x0 + (s_p - r^2 s_t) e0,     var = n_p^2 (1 - r^2).
    The e0 term vanishes when s_t / n_t^2 is constant (ResShift), not for InDI with noise.
    """
    r2 = (n_p / n_t) ** 2 if n_t > 0 else 0.0
    mean = r2 * x_t + (1 - r2) * x0 + (s_p - r2 * s_t) * (y - x0)
    return mean, n_p ** 2 * (1 - r2)


def shift_step(x_t: torch.Tensor, x0_hat: torch.Tensor, y: torch.Tensor, s_t: float, s_p: float, nu_t: float,
               nu_p: float, sigma: float, eta: float, z: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One reverse step t -> p with the x0 estimate ``x0_hat``; returns (x_p, eps_hat).

    eps_hat = (x_t - x0_hat - s_t (y - x0_hat)) / (sigma nu_t) is the noise the estimate implies, and
      x_p = x0_hat + s_p (y - x0_hat) + sqrt(n_p^2 - c^2) eps_hat + c z,   c = eta sqrt(var_post),
    with n = sigma nu and var_post from :func:`shift_posterior` (the DDIM family of Song et al. 2021,
    eq. 12, written for this process). eta = 1: the posterior sample (same mean and variance as
    :func:`shift_posterior` at x0 = x0_hat); eta = 0: deterministic. The eps_hat term is computed as
    r sqrt(1 - eta^2 (1 - r^2)) (x_t - x0_hat - s_t (y - x0_hat)), so sigma = 0 (noise-free InDI) is allowed.
    """
    r = nu_p / nu_t if nu_t > 0 else 0.0
    d = x_t - x0_hat - s_t * (y - x0_hat)  # = sigma nu_t eps_hat
    keep = r * math.sqrt(max(0.0, 1 - eta ** 2 * (1 - r ** 2)))
    x_p = x0_hat + s_p * (y - x0_hat) + keep * d
    c = eta * sigma * nu_p * math.sqrt(max(0.0, 1 - r ** 2))
    if c > 0 and z is not None:
        x_p = x_p + c * z
    eps_hat = d / (sigma * nu_t) if sigma * nu_t > 0 else torch.zeros_like(d)
    return x_p, eps_hat


def shift_step_fn(x0_fn: X0Fn, y: torch.Tensor, shifts: Sequence[float], nus: Sequence[float], sigma: float, *,
                  eta: float) -> StepFn:
    """The :data:`~.chain.StepFn` of a shifting chain: x0 = ``x0_fn(x_t, t, cond)``, then :func:`shift_step`
    from step i's (s, nu) to step i + 1's. ``shifts`` / ``nus``: s and nu at the K network times plus the final
    0 (K + 1 values each); noise is drawn only when the step injects some (eta > 0, sigma > 0, not the last)."""
    k_steps = len(shifts) - 1

    def step(i: int, t: float, t_next: float, x: torch.Tensor, cond: torch.Tensor | None, draw: NoiseFn) -> Step:
        t_vec = torch.full((x.shape[0],), float(t), device=x.device, dtype=torch.float32)
        x0_hat = x0_fn(x, t_vec, cond).to(x.dtype)
        last = i + 1 == k_steps
        z = draw(i + 1) if eta > 0 and sigma > 0 and not last else None
        x_next, eps_hat = shift_step(x, x0_hat, y, shifts[i], shifts[i + 1], nus[i], nus[i + 1], sigma, eta, z)
        return Step(x_next, x0_hat, eps_hat)
    return step


def shift_chain(x0_fn: X0Fn, x_T: torch.Tensor, y: torch.Tensor, times: Sequence[float], shifts: Sequence[float],
                nus: Sequence[float], sigma: float, *, eta: float, cond: torch.Tensor | None = None,
                generator: torch.Generator | None = None, callback: Callback | None = None,
                noise: NoiseFn | None = None) -> torch.Tensor:
    """Run K reverse steps from ``x_T`` with the one chain loop (:func:`.chain.run_chain`); the last one lands
    on the clean image (s = nu = 0).

    ``times``: the K network times (decreasing); ``shifts`` / ``nus``: s and nu at those times plus
    the final 0 (K + 1 values each). ``noise(k)`` (k = 1..K, k = 0 being x_T's) or ``generator``
    give the injected noise; ``callback`` as :func:`.chain.run_chain`.
    """
    if len(shifts) != len(times) + 1 or len(nus) != len(times) + 1:
        raise ValueError("shifts and nus need one value per time plus the final 0")
    return run_chain(shift_step_fn(x0_fn, y, shifts, nus, sigma, eta=eta), x_T, times, cond=cond, noise=noise,
                     generator=generator, callback=callback)
