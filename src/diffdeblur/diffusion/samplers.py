"""Reverse-process samplers: pure functions with one shared signature.

    sampler(denoise_fn, x_T, timesteps, *, alpha_bar, cond=None, generator=None, callback=None,
            noise=None, **sampler_options) -> x_0

- ``denoise_fn(x_t, t, cond) -> Prediction(x0, eps)``: see :func:`.process.make_denoiser`;
  t is a (B,) float tensor of timestep indices.
- ``x_T``: the start state (B, C, H, W), normally N(0, I) noise; samplers never draw it themselves.
- ``timesteps``: strictly decreasing timesteps t_0 > t_1 > ... > t_{K-1} in [0, T-1] (ints, or floats
  for the SDE sampler; see :func:`.schedules.make_timesteps`). Step i goes from t_i to t_{i+1}; the last
  step goes to the clean sample (alpha_bar = 1). Exactly K denoiser calls and K callbacks.
- ``alpha_bar``: the (T,) schedule tensor the network was trained with.
- ``generator``: torch.Generator for the injected noise; ``noise``: alternatively a function
  ``noise(k) -> N(0, I) tensor shaped like x_T`` for k = 1..K (noise injected by step k-1; k = 0 is
  reserved for x_T by convention), used for tiling-consistent noise (see ``NoiseField`` in
  :mod:`diffdeblur.diffusion.noise`).

Callback protocol (shared by every diffusion model in diffdeblur, used by ``diffdeblur trace``):
``callback(info: dict)`` is called once per step, after the step, with
  "i" (int, 0-based step index), "num_steps" (K), "t" (float, timestep of x_t), "t_next" (float, -1 = clean),
  "x_t" (state entering the step), "x0" (predicted clean sample from x_t), "eps" (predicted noise),
  "x_next" (state after the step); tensors are in the sampler's space ([-1, 1] pixels, or latents).
Model-level ``restore(..., callback=...)`` adds "x0_image" and "x_t_image": the same states mapped to
(B, 3, H, W) images in [0, 1] (decoded, for latent models), and "sample" (index among num_samples).

Notation: ab_t = alpha_bar_t, ab_p = alpha_bar at the next (less noisy) timestep.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..errors import ConfigError
from .chain import Callback, NoiseFn, Step, StepFn, run_chain
from .process import DenoiseFn, Prediction
from .schedules import alpha_bar_at, check_timesteps

Timesteps = Sequence[float] | torch.Tensor


# ---- single steps (pure) -------------------------------------------------------------------------

def ddpm_step(x_t: torch.Tensor, pred: Prediction, ab_t: float, ab_p: float, z: torch.Tensor | None) -> torch.Tensor:
    """Ancestral step: sample the posterior q(x_p | x_t, x0_hat) (Ho et al. 2020, eqs. 6-7).

    With a sub-sequence of timesteps, beta' = 1 - ab_t / ab_p is the effective beta of the jump
    (Nichol & Dhariwal 2021, Sec. 4 "respacing"):
      mean = sqrt(ab_p) beta' / (1 - ab_t) * x0 + sqrt(1 - beta') (1 - ab_p) / (1 - ab_t) * x_t   (eq. 7)
      var  = (1 - ab_p) / (1 - ab_t) * beta'        (beta-tilde, eq. 7; "fixed small" variance)
    """
    beta = 1.0 - ab_t / ab_p
    mean = (math.sqrt(ab_p) * beta / (1 - ab_t)) * pred.x0 + (math.sqrt(1 - beta) * (1 - ab_p) / (1 - ab_t)) * x_t
    var = (1 - ab_p) / (1 - ab_t) * beta
    if z is None or var <= 0:
        return mean
    return mean + math.sqrt(var) * z


def ddim_sigma(ab_t: float, ab_p: float, eta: float) -> float:
    """sigma_t(eta) = eta * sqrt((1 - ab_p) / (1 - ab_t)) * sqrt(1 - ab_t / ab_p)  (Song et al. 2021, eq. 16)."""
    return eta * math.sqrt(max(0.0, (1 - ab_p) / (1 - ab_t) * (1 - ab_t / ab_p)))


def ddim_step(x_t: torch.Tensor, pred: Prediction, ab_t: float, ab_p: float, eta: float,
              z: torch.Tensor | None) -> torch.Tensor:
    """Generalised DDIM step (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", eq. 12):

      x_p = sqrt(ab_p) x0_hat + sqrt(1 - ab_p - sigma^2) eps_hat + sigma z,   sigma from eq. 16.
    eta = 0: deterministic DDIM; eta = 1: the DDPM posterior (same mean and variance as :func:`ddpm_step`).
    """
    sigma = ddim_sigma(ab_t, ab_p, eta)
    x_p = math.sqrt(ab_p) * pred.x0 + math.sqrt(max(0.0, 1 - ab_p - sigma ** 2)) * pred.eps
    if sigma > 0 and z is not None:
        x_p = x_p + sigma * z
    return x_p


def sde_step(x_t: torch.Tensor, pred: Prediction, ab_t: float, ab_p: float, z: torch.Tensor | None) -> torch.Tensor:
    """One Euler-Maruyama step of the reverse VP-SDE (Song et al. 2021, "Score-Based Generative Modeling
    through SDEs", eq. 6 with the VP-SDE of eq. 11: dx = -1/2 beta(s) x ds + sqrt(beta(s)) dw).

    Reverse: dx = [-1/2 beta x - beta * score] ds + sqrt(beta) dw_bar, integrated backward over the
    interval (s_p, s_t]. The step uses h = integral of beta(s) ds = log(ab_p / ab_t) for beta * ds, and the
    score from the noise prediction, score = -eps_hat / sqrt(1 - ab_t) (Song et al. 2021, Sec. 3.3 / App. B):
      x_p = x_t + (h / 2) x_t + h * score + sqrt(h) z.
    """
    h = math.log(ab_p / ab_t)
    score = -pred.eps / math.sqrt(1 - ab_t)
    x_p = x_t + (0.5 * h) * x_t + h * score
    if z is not None:
        x_p = x_p + math.sqrt(h) * z
    return x_p


# ---- the Gaussian step functions (run by the one chain loop, :func:`.chain.run_chain`) -------------

GaussianStep = Callable[[torch.Tensor, Prediction, float, float, int, NoiseFn], torch.Tensor]


def gaussian_step_fn(update: GaussianStep, denoise_fn: DenoiseFn, timesteps: Timesteps,
                     alpha_bar: torch.Tensor) -> tuple[StepFn, list[float]]:
    """The :data:`~.chain.StepFn` of a Gaussian sampler and its checked timesteps.

    ``update(x_t, pred, ab_t, ab_p, i, draw) -> x_p`` is the sampler's step (:func:`ddpm_step` etc. with
    their noise); this wraps it with the denoiser call at t_i and the alpha_bar lookups (ab_p = 1 after
    the last step)."""
    ts = check_timesteps(timesteps, len(alpha_bar))
    ab = alpha_bar_at(alpha_bar.cpu(), torch.tensor(ts + [-1.0])).double().tolist()

    def step(i: int, t: float, t_next: float, x: torch.Tensor, cond: torch.Tensor | None, draw: NoiseFn) -> Step:
        t_vec = torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32)
        pred = denoise_fn(x, t_vec, cond)
        return Step(update(x, pred, ab[i], ab[i + 1], i, draw), pred.x0, pred.eps)
    return step, ts


def _sample(update: GaussianStep, denoise_fn: DenoiseFn, x_T: torch.Tensor, timesteps: Timesteps,
            alpha_bar: torch.Tensor, cond: torch.Tensor | None, generator: torch.Generator | None,
            callback: Callback | None, noise: NoiseFn | None) -> torch.Tensor:
    step, ts = gaussian_step_fn(update, denoise_fn, timesteps, alpha_bar)
    return run_chain(step, x_T, ts, cond=cond, noise=noise, generator=generator, callback=callback)


@torch.inference_mode()
def ddpm_sample(denoise_fn: DenoiseFn, x_T: torch.Tensor, timesteps: Timesteps, *, alpha_bar: torch.Tensor,
                cond: torch.Tensor | None = None, generator: torch.Generator | None = None,
                callback: Callback | None = None, noise: NoiseFn | None = None) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2) over ``timesteps`` (all T, or respaced)."""
    n = len(timesteps)

    def update(x, pred, ab_t, ab_p, i, draw):
        return ddpm_step(x, pred, ab_t, ab_p, draw(i + 1) if i + 1 < n else None)
    return _sample(update, denoise_fn, x_T, timesteps, alpha_bar, cond, generator, callback, noise)


@torch.inference_mode()
def ddim_sample(denoise_fn: DenoiseFn, x_T: torch.Tensor, timesteps: Timesteps, *, alpha_bar: torch.Tensor,
                cond: torch.Tensor | None = None, generator: torch.Generator | None = None,
                callback: Callback | None = None, noise: NoiseFn | None = None, eta: float = 0.0) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021, eq. 12) with any number of steps and any eta >= 0."""
    def update(x, pred, ab_t, ab_p, i, draw):
        z = draw(i + 1) if ddim_sigma(ab_t, ab_p, eta) > 0 else None
        return ddim_step(x, pred, ab_t, ab_p, eta, z)
    return _sample(update, denoise_fn, x_T, timesteps, alpha_bar, cond, generator, callback, noise)


@torch.inference_mode()
def sde_sample(denoise_fn: DenoiseFn, x_T: torch.Tensor, timesteps: Timesteps, *, alpha_bar: torch.Tensor,
               cond: torch.Tensor | None = None, generator: torch.Generator | None = None,
               callback: Callback | None = None, noise: NoiseFn | None = None) -> torch.Tensor:
    """Euler-Maruyama on the reverse VP-SDE (:func:`sde_step`); the last step returns the denoised
    estimate x0_hat (Tweedie / "noise removal" step of Song et al. 2021, App. G). Needs many steps:
    the explicit scheme is unstable when one step covers a large change of log(alpha_bar)."""
    n = len(timesteps)

    def update(x, pred, ab_t, ab_p, i, draw):
        if i + 1 == n:
            return pred.x0
        return sde_step(x, pred, ab_t, ab_p, draw(i + 1))
    return _sample(update, denoise_fn, x_T, timesteps, alpha_bar, cond, generator, callback, noise)


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"ddpm": ddpm_sample, "ddim": ddim_sample, "sde": sde_sample}


def check_sampler(name: str) -> str:
    """``name`` if it is a sampler of :data:`SAMPLERS`, else a ConfigError listing them."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler '{name}' (known: {', '.join(SAMPLERS)})")
    return name


def run_sampler(name: str, denoise_fn: DenoiseFn, x_T: torch.Tensor, timesteps: Timesteps, *,
                alpha_bar: torch.Tensor, cond: torch.Tensor | None = None, generator: torch.Generator | None = None,
                callback: Callback | None = None, noise: NoiseFn | None = None, eta: float = 0.0) -> torch.Tensor:
    """Dispatch to a sampler by name (ddpm | ddim | sde); ``eta`` only applies to ddim."""
    check_sampler(name)
    extra = {"eta": eta} if name == "ddim" else {}
    return SAMPLERS[name](denoise_fn, x_T, timesteps, alpha_bar=alpha_bar, cond=cond, generator=generator,
                          callback=callback, noise=noise, **extra)


def average_samples(sample_fn: Callable[[int], torch.Tensor], num_samples: int) -> torch.Tensor:
    """Mean of ``sample_fn(k)`` for k = 0..num_samples-1 (DvSR's sample averaging, "SA").

    Averaging draws moves the output toward the posterior mean: higher PSNR/SSIM, less texture.
    Accumulates in float32 so memory stays at two samples.
    """
    if num_samples < 1:
        raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
    total = sample_fn(0).float()
    for k in range(1, num_samples):
        total = total + sample_fn(k).float()
    return total / num_samples
