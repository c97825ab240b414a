"""The Gaussian diffusion process: forward noising, parameterisations, and the training loss.

Notation (Ho et al. 2020, DDPM, arXiv 2006.11239; Salimans & Ho 2022, arXiv 2202.00512):
x0 = clean sample, eps ~ N(0, I), alpha_bar = alpha_bar_t (see :mod:`.schedules`), and
x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps                     (DDPM eq. 4)
v   = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0                     (Salimans & Ho, Sec. 4)
The network's output is one of eps / x0 / v / x0-precond (``objective``); every conversion between
them lives here, so samplers only ever see a :class:`Prediction` with both x0 and eps.
``x0-precond`` is x0 prediction with the output preconditioning of Karras et al. 2022 (EDM, arXiv
2206.00364, Table 1) written for the VP process: with sigma^2 = (1 - ab) / ab and x_t / sqrt(ab) = x0 + sigma eps,
x0_hat = c_skip x_t / sqrt(ab) + c_out F, c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
sd = :data:`SIGMA_DATA`. At low noise the estimate defaults to x_t itself (c_skip -> 1), at high noise to
the network's output (c_skip -> 0), and F's training target has unit scale at every t.

Diffusion runs on tensors in [-1, 1] (:func:`to_signed`); images at the API boundary are
(B, 3, H, W) float in [0, 1] (:func:`to_unit` maps back).

The registered training objectives ``"diffusion"`` and ``"latent-diffusion"`` (:mod:`diffdeblur.objectives`)
are thin adapters over :func:`diffusion_terms` / :func:`diffusion_loss`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ..errors import ConfigError
from .schedules import alpha_bar_at

OBJECTIVES = ("eps", "x0", "v", "x0-precond")
SIGMA_DATA = 0.5  # EDM: std of the data in [-1, 1]
LOSS_TYPES = ("l1", "l2")
# Denoiser input: (x_t (B,C,H,W), t (B,) float timestep indices, cond (B,Cc,H,W) | None) -> raw network output
NetFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class Prediction(NamedTuple):
    """A denoiser's estimate at one step: x0 (clean sample) and eps (noise), both shaped like x_t."""

    x0: torch.Tensor
    eps: torch.Tensor


DenoiseFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], Prediction]


def to_signed(img: torch.Tensor) -> torch.Tensor:
    """Image range [0, 1] -> diffusion range [-1, 1] (lucidrains' ``normalize_to_neg_one_to_one``)."""
    return img * 2.0 - 1.0


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Diffusion range [-1, 1] -> image range [0, 1] (not clamped)."""
    return (x + 1.0) * 0.5


def _bcast(ab: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """alpha_bar as (B,) / scalar -> broadcastable to ``like`` (B, C, H, W), same dtype and device."""
    ab = torch.as_tensor(ab, dtype=like.dtype, device=like.device)
    return ab.reshape(-1, *([1] * (like.ndim - 1))) if ab.ndim else ab


def randn(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
          device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, then moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device(device)
    return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)


# ---- forward process and parameterisations ------------------------------------------------------

def q_sample(x0: torch.Tensor, ab: torch.Tensor | float, eps: torch.Tensor) -> torch.Tensor:
    """Sample q(x_t | x0) = N(sqrt(ab) x0, (1 - ab) I) (DDPM eq. 4). ab: (B,) or scalar alpha_bar_t."""
    a = _bcast(ab, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor | float) -> torch.Tensor:
    """x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab)   (DDPM eq. 4 solved for x0; DDIM eq. 9)."""
    a = _bcast(ab, x_t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, ab: torch.Tensor | float) -> torch.Tensor:
    """eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab)."""
    a = _bcast(ab, x_t)
    return (x_t - a.sqrt() * x0) / (1 - a).sqrt()


def v_from_x0_eps(x0: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor | float) -> torch.Tensor:
    """v = sqrt(ab) eps - sqrt(1 - ab) x0   (Salimans & Ho 2022, Sec. 4 / Appendix D)."""
    a = _bcast(ab, x0)
    return a.sqrt() * eps - (1 - a).sqrt() * x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, ab: torch.Tensor | float) -> torch.Tensor:
    """x0 = sqrt(ab) x_t - sqrt(1 - ab) v."""
    a = _bcast(ab, x_t)
    return a.sqrt() * x_t - (1 - a).sqrt() * v


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, ab: torch.Tensor | float) -> torch.Tensor:
    """eps = sqrt(1 - ab) x_t + sqrt(ab) v."""
    a = _bcast(ab, x_t)
    return (1 - a).sqrt() * x_t + a.sqrt() * v


def check_objective(objective: str) -> str:
    """``objective`` if it is one of :data:`OBJECTIVES`, else a ValueError naming the known ones."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown diffusion objective '{objective}' (known: {', '.join(OBJECTIVES)})")
    return objective


def precond_coefficients(ab: torch.Tensor | float,
                         like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, sigma) of the ``x0-precond`` objective, broadcast to ``like``'s shape."""
    a = _bcast(ab, like)
    sigma = ((1 - a) / a).sqrt()
    c_skip = SIGMA_DATA ** 2 / (sigma ** 2 + SIGMA_DATA ** 2)
    c_out = sigma * SIGMA_DATA / (sigma ** 2 + SIGMA_DATA ** 2).sqrt()
    return c_skip, c_out, sigma


def training_target(x0: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor | float, objective: str) -> torch.Tensor:
    """What the network regresses for ``objective`` in eps | x0 | v | x0-precond."""
    check_objective(objective)
    if objective == "eps":
        return eps
    if objective == "x0":
        return x0
    if objective == "v":
        return v_from_x0_eps(x0, eps, ab)
    c_skip, c_out, sigma = precond_coefficients(ab, x0)  # x0-precond: F = (x0 - c_skip (x0 + sigma eps)) / c_out
    return ((1 - c_skip) * x0 - c_skip * sigma * eps) / c_out


def prediction_from_output(out: torch.Tensor, x_t: torch.Tensor, ab: torch.Tensor | float, objective: str,
                           clip: float | None = None) -> Prediction:
    """Turn the network output (eps | x0 | v | x0-precond) into a :class:`Prediction`.

    ``clip`` > 0 clamps x0 to [-clip, clip] (DDPM/SR3 "clip_denoised") and re-derives eps from the
    clamped x0, so that x0 and eps stay consistent with x_t (as diffusers' DDIM does with clipping).
    """
    check_objective(objective)
    if objective == "eps":
        x0 = x0_from_eps(x_t, out, ab)
    elif objective == "x0":
        x0 = out
    elif objective == "v":
        x0 = x0_from_v(x_t, out, ab)
    else:  # x0-precond
        c_skip, c_out, _ = precond_coefficients(ab, x_t)
        x0 = c_skip * x_t / _bcast(ab, x_t).sqrt() + c_out * out
    if clip:
        x0 = x0.clamp(-clip, clip)
    elif objective == "eps":
        return Prediction(x0, out)
    return Prediction(x0, eps_from_x0(x_t, x0, ab))


def make_denoiser(net: NetFn, alpha_bar: torch.Tensor, objective: str = "eps",
                  clip: float | None = 1.0) -> DenoiseFn:
    """Wrap a network into the samplers' ``denoise_fn(x_t, t, cond) -> Prediction``.

    net(x_t, t, cond) returns the raw eps / x0 / v output; t is a (B,) float tensor of timestep
    indices in [0, T-1] (fractional values are allowed; alpha_bar is interpolated in log space).
    """
    def denoise(x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> Prediction:
        ab = alpha_bar_at(alpha_bar, t).to(x_t.dtype)
        return prediction_from_output(net(x_t, t, cond).to(x_t.dtype), x_t, ab, objective, clip)
    return denoise


# ---- training -----------------------------------------------------------------------------------

class DiffusionTerms(NamedTuple):
    """One draw of the training loss: the scalar ``loss`` and what an extra term may reuse:
    the raw network ``out``, the noisy input ``x_t``, and ``ab`` = alpha_bar_t (B,)."""

    loss: torch.Tensor
    out: torch.Tensor
    x_t: torch.Tensor
    ab: torch.Tensor


def diffusion_terms(net: NetFn, x0: torch.Tensor, cond: torch.Tensor | None, alpha_bar: torch.Tensor, *,
                    objective: str = "eps", loss_type: str = "l1",
                    generator: torch.Generator | None = None) -> DiffusionTerms:
    """The simplified DDPM loss (Ho et al. 2020, Algorithm 1 / eq. 14) for any parameterisation.

    t ~ Uniform{0, ..., T-1} per sample, eps ~ N(0, I), x_t = q_sample(x0, alpha_bar_t, eps), and
    loss = mean |net(x_t, t, cond) - target|^p with target from :func:`training_target` and p = 1 (``l1``,
    as SR3's reference code) or 2 (``l2``, DDPM). x0: (B, C, H, W) in the diffusion range.
    """
    if loss_type not in LOSS_TYPES:
        raise ConfigError(f"unknown loss_type '{loss_type}' (known: {', '.join(LOSS_TYPES)})")
    b, num_t = x0.shape[0], len(alpha_bar)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    t = torch.randint(0, num_t, (b,), generator=generator, device=gen_device).to(x0.device)
    eps = randn(x0.shape, generator, x0.device, x0.dtype)
    ab = alpha_bar.to(x0.device)[t]
    x_t = q_sample(x0, ab, eps)
    out = net(x_t, t.float(), cond)
    loss = l1_or_l2(out.float(), training_target(x0, eps, ab, objective).float(), loss_type)
    return DiffusionTerms(loss, out, x_t, ab)


def diffusion_loss(net: NetFn, x0: torch.Tensor, cond: torch.Tensor | None, alpha_bar: torch.Tensor, *,
                   objective: str = "eps", loss_type: str = "l1",
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`diffusion_terms` as (scalar loss, logs)."""
    terms = diffusion_terms(net, x0, cond, alpha_bar, objective=objective, loss_type=loss_type, generator=generator)
    return terms.loss, {"diffusion": float(terms.loss.detach())}


def l1_or_l2(pred: torch.Tensor, target: torch.Tensor, loss_type: str) -> torch.Tensor:
    """Mean absolute (l1) or squared (l2) error."""
    err = pred - target
    return err.abs().mean() if loss_type == "l1" else err.pow(2).mean()
