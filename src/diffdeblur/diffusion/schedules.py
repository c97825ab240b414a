"""Noise schedules and timestep sequences: pure functions returning 1-D tensors.

Notation (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", arXiv 2006.11239):
beta_t is the variance added at forward step t, alpha_t = 1 - beta_t, and
alpha_bar_t = prod_{s<=t} alpha_s, so that q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
(DDPM eq. 4). Index convention everywhere in :mod:`diffdeblur.diffusion`: t = 0 .. T-1 indexes these
1-D tensors (t = 0 is the first, least noisy step, t = T-1 the last). Sampling ends at "t = -1",
the clean image, where alpha_bar = 1.

Schedules are computed in float64 and returned as float32 (as lucidrains'
``denoising_diffusion_pytorch`` does), because the cumulative product loses precision otherwise.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import ConfigError

DDPM_BETA_START = 1e-4  # Ho et al. 2020, Sec. 4: beta_1 = 1e-4 ... beta_T = 0.02 at T = 1000
DDPM_BETA_END = 0.02
DDPM_REFERENCE_T = 1000
COSINE_OFFSET = 0.008  # Nichol & Dhariwal 2021, eq. 17: s = 0.008
MAX_BETA = 0.999  # Nichol & Dhariwal 2021: clip beta_t to 0.999 to avoid a singularity at t = T

SCHEDULES = ("linear", "cosine")
SPACINGS = ("trailing", "leading", "linspace")


def linear_beta_schedule(num_steps: int, beta_start: float | None = None,
                         beta_end: float | None = None) -> torch.Tensor:
    """Linear betas (Ho et al. 2020, Sec. 4). Returns (num_steps,) float32.

    With ``beta_start``/``beta_end`` left as None the DDPM values (1e-4 -> 0.02 at T = 1000) are
    rescaled by 1000 / T (as in lucidrains' ``linear_beta_schedule`` and improved-DDPM's
    ``get_named_beta_schedule``), so that any T gives about the same alpha_bar curve over [0, 1]
    (capped at ``MAX_BETA`` for very short chains, T < 51).
    SR3 (Saharia et al. 2021) uses ``beta_start=1e-6, beta_end=1e-2`` at T = 2000.
    """
    if num_steps < 1:
        raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
    scale = DDPM_REFERENCE_T / num_steps
    start = DDPM_BETA_START * scale if beta_start is None else beta_start
    end = min(DDPM_BETA_END * scale, MAX_BETA) if beta_end is None else beta_end
    if not 0 < start <= end < 1:
        raise ConfigError(f"linear schedule needs 0 < beta_start <= beta_end < 1, got {start}, {end}")
    return torch.linspace(start, end, num_steps, dtype=torch.float64).float()


def cosine_beta_schedule(num_steps: int, s: float = COSINE_OFFSET, max_beta: float = MAX_BETA) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, "Improved DDPM", arXiv 2102.09672, eq. 17).

    alpha_bar(t) = f(t) / f(0) with f(t) = cos(((t / T + s) / (1 + s)) * pi / 2)^2, and
    beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1), clipped to ``max_beta``. Returns (num_steps,) float32.
    """
    if num_steps < 1:
        raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
    steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(0, max_beta).float()


def make_beta_schedule(name: str, num_steps: int, **kwargs: float | None) -> torch.Tensor:
    """Betas by name: ``"linear"`` (:func:`linear_beta_schedule`) or ``"cosine"``. (num_steps,) float32."""
    if name == "linear":
        return linear_beta_schedule(num_steps, kwargs.get("beta_start"), kwargs.get("beta_end"))
    if name == "cosine":
        return cosine_beta_schedule(num_steps)
    raise ConfigError(f"unknown beta schedule '{name}' (known: {', '.join(SCHEDULES)})")


def alpha_bar_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s) (DDPM eq. 4 notation), in float64, returned float32. (T,)."""
    return torch.cumprod(1.0 - betas.double(), dim=0).float()


def alpha_bar_at(alpha_bar: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """alpha_bar at (possibly fractional) steps ``t``; t < 0 gives 1 (the clean image).

    Fractional t interpolates log(alpha_bar) linearly between neighbouring integer steps, so the
    SDE sampler may use any continuous time grid. ``t``: scalar or tensor of any shape; returns
    float32 of the same shape (on ``alpha_bar``'s device).
    """
    t = torch.as_tensor(t, dtype=torch.float64, device=alpha_bar.device)
    log_ab = torch.log(alpha_bar.double())
    last = len(alpha_bar) - 1
    tc = t.clamp(0, last)
    lo = tc.floor().long()
    hi = (lo + 1).clamp(max=last)
    w = tc - lo.double()
    val = torch.exp(log_ab[lo] * (1 - w) + log_ab[hi] * w)
    return torch.where(t < 0, torch.ones_like(val), val).float()


def make_timesteps(num_train_steps: int, num_steps: int, spacing: str = "trailing") -> torch.Tensor:
    """Decreasing integer timesteps for a ``num_steps``-step sampler over a T-step schedule. (K,) int64.

    - ``trailing`` (default): t_i = round(T - i T/K) - 1, i = 0..K-1; always starts at T-1, i.e. from
      pure noise. (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed",
      Table 2; diffusers ``timestep_spacing="trailing"``.)
    - ``leading``: t_i = (K-1-i) * (T // K); the DDIM paper's choice; starts below T-1 when K < T.
    - ``linspace``: round(linspace(T-1, 0, K)).
    K = T gives every step T-1, ..., 0 in all three spacings. The sampler steps from each t_i to
    t_{i+1} and from the last one to the clean image.
    """
    if not 1 <= num_steps <= num_train_steps:
        raise ConfigError(f"steps must be in [1, {num_train_steps}], got {num_steps}")
    if spacing == "trailing":
        ts = torch.round(torch.arange(num_train_steps, 0, -num_train_steps / num_steps, dtype=torch.float64)) - 1
    elif spacing == "leading":
        ts = torch.arange(num_steps - 1, -1, -1, dtype=torch.float64) * (num_train_steps // num_steps)
    elif spacing == "linspace":
        ts = torch.round(torch.linspace(num_train_steps - 1, 0, num_steps, dtype=torch.float64))
    else:
        raise ConfigError(f"unknown timestep spacing '{spacing}' (known: {', '.join(SPACINGS)})")
    return ts[:num_steps].long()


def check_timesteps(timesteps: Sequence[float] | torch.Tensor, num_train_steps: int) -> list[float]:
    """Validate a sampler's timestep sequence (strictly decreasing, within [0, T-1]); return floats."""
    ts = [float(t) for t in (timesteps.tolist() if isinstance(timesteps, torch.Tensor) else timesteps)]
    if not ts:
        raise ConfigError("timesteps is empty")
    if any(b >= a for a, b in zip(ts, ts[1:])):
        raise ConfigError("timesteps must be strictly decreasing")
    if ts[0] > num_train_steps - 1 or ts[-1] < 0:
        raise ConfigError(f"timesteps must lie in [0, {num_train_steps - 1}]")
    return ts
