"""InDI: Inversion by Direct Iteration (pure functions).

Delbracio & Milanfar, "Inversion by Direct Iteration: An Alternative to Denoising Diffusion for Image
Restoration", TMLR 2023, arXiv 2303.11435. Notation: x = sharp, y = degraded, t in [0, 1].

- Degradation path (eq. 2):  x_t = (1 - t) x + t y, optionally with noise growing along it,
  x_t = (1 - t) x + t y + sigma t eps (the path stays exact at t = 0; sigma = 0 is the plain InDI).
- Training: F(x_t, t) ~ E[x | x_t] by an L2 (or L1) regression, t ~ U(0, 1].
- Inference from x_1 = y (+ sigma eps) with N steps of size d = 1/N:
  x_{t-d} = (d/t) F(x_t, t) + (1 - d/t) x_t; with N = 1 this is F(y, 1), the plain regression.
  It is the Euler step of the ODE dx/dt = (x_t - F(x_t, t)) / t.
[Equation numbers as read in the arXiv version; check before quoting them.]

The path is the shifting process of :mod:`.shifting` with s_t = t and noise sigma t; its eta = 0 step is
exactly the iteration above (the y terms cancel since s_t / nu_t is constant), eta = 1 re-draws the
noise from the posterior (only matters when sigma > 0).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import ConfigError
from .process import l1_or_l2, randn
from .shifting import Callback, NoiseFn, X0Fn, shift_chain, shift_marginal

T_MIN = 1e-3  # training draws t in [T_MIN, 1]: at t -> 0 the input is already the target


def indi_path(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | float, sigma: float = 0.0,
              eps: torch.Tensor | None = None) -> torch.Tensor:
    """x_t = (1 - t) x + t y + sigma t eps. t: (B,) or scalar in [0, 1]; eps needed when sigma > 0."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if sigma > 0 and eps is None:
        raise ValueError("indi_path: sigma > 0 needs eps")
    return shift_marginal(x, y, t, sigma * t, eps if sigma > 0 else torch.zeros_like(x))


def indi_times(num_steps: int) -> list[float]:
    """The N network times 1, 1 - 1/N, ..., 1/N of the uniform N-step iteration (it ends at t = 0)."""
    if num_steps < 1:
        raise ConfigError(f"steps must be >= 1, got {num_steps}")
    return [1.0 - i / num_steps for i in range(num_steps)]


def check_indi_times(times: Sequence[float] | torch.Tensor) -> list[float]:
    """Strictly decreasing times in (0, 1]."""
    ts = [float(t) for t in (times.tolist() if isinstance(times, torch.Tensor) else times)]
    if not ts or any(b >= a for a, b in zip(ts, ts[1:])) or ts[0] > 1 or ts[-1] <= 0:
        raise ConfigError("InDI timesteps must be strictly decreasing values in (0, 1]")
    return ts


def indi_loss(net: X0Fn, x: torch.Tensor, y: torch.Tensor, cond: torch.Tensor | None = None, *, sigma: float = 0.0,
              loss_type: str = "l2", endpoint_prob: float = 0.0,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """t ~ U[T_MIN, 1] per image, x_t = :func:`indi_path`, loss = |net(x_t, t, cond) - x|^p (p = 2 or 1).

    endpoint_prob: the share of images (drawn per image) trained at t = 1 exactly, i.e. on the one-step
    regression F(y, 1) ~ x, so that a chain initialised from a regression model keeps its one-step estimate
    while it learns the rest of the path (0 = the paper's uniform t)."""
    b = x.shape[0]
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((b,), generator=generator, device=gen_device).to(x.device)
    t = 1.0 - (1.0 - T_MIN) * u
    if endpoint_prob > 0:
        at_end = torch.rand((b,), generator=generator, device=gen_device).to(x.device) < endpoint_prob
        t = torch.where(at_end, torch.ones_like(t), t)
    eps = randn(x.shape, generator, x.device, x.dtype) if sigma > 0 else None
    x_t = indi_path(x, y, t, sigma, eps)
    loss = l1_or_l2(net(x_t, t, cond).float(), x.float(), loss_type)
    return loss, {"indi": float(loss.detach())}


def indi_start(y: torch.Tensor, sigma: float, eps: torch.Tensor | None) -> torch.Tensor:
    """x_1 = y + sigma eps (y itself when sigma = 0)."""
    return y + sigma * eps if sigma > 0 and eps is not None else y


@torch.inference_mode()
def indi_sample(x0_fn: X0Fn, x_1: torch.Tensor, times: Sequence[float] | torch.Tensor, *, y: torch.Tensor,
                sigma: float = 0.0, cond: torch.Tensor | None = None, generator: torch.Generator | None = None,
                callback: Callback | None = None, noise: NoiseFn | None = None, eta: float = 0.0) -> torch.Tensor:
    """InDI's iteration from ``x_1`` (:func:`indi_start`) over ``times`` (e.g. :func:`indi_times`), to t = 0.

    Step i: x_{t_{i+1}} = (d/t) F + (1 - d/t) x_t with d = t_i - t_{i+1} (eta = 0; the published
    iteration), or the posterior re-noising of :func:`.shifting.shift_step` (eta > 0, sigma > 0).
    x0_fn(x_t, t, cond) = F; t is given as a (B,) float in (0, 1]. Callback and noise as
    :func:`.shifting.shift_chain`.
    """
    ts = check_indi_times(times)
    path = ts + [0.0]
    return shift_chain(x0_fn, x_1, y, ts, path, path, sigma, eta=eta, cond=cond, generator=generator,
                       callback=callback, noise=noise)
