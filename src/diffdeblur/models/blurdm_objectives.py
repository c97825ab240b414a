"""Training objectives of BlurDM's three stages (BLURDM.md section 7), registered by name.

- ``blurdm-stage1``: prior = SE(blur, sharp); the backbone's own image loss (below).
- ``blurdm-stage2``: SE frozen; the whole T-step reverse chain runs inside the step and
  loss = Charbonnier(z_0, Z^S) in latent space (no per-step target, as in the reference).
- ``blurdm-stage3``: prior = BlurDM(blur) with fresh start noise; the stage-1 image loss.

Image loss by backbone (its ``loss_hint``): NAFNet ("psnr") -> NAFNet's PSNR loss; MIMO-UNet
("mimo") -> sum over the 1/4, 1/2, 1 outputs of Charbonnier(eps 1e-3) + 0.1 x L1 between 2-D FFTs.
The reference stage scripts use a 1-D FFT along the height (their ``torch.fft.fft`` fallback) and
clamp the outputs to the pixel range before the loss; we deliberately keep the original
MIMO-UNet's 2-D FFT and unclamped outputs (:func:`diffdeblur.losses.mimo_loss`), so that the
BlurDM and plain backbones are trained with the same loss.

Extension, not the published method (``partials_weight > 0`` on the model, or the keyword of
:func:`stage2`): when a batch carries true partial exposures ``batch["partials"]`` (B, K, 3, h, w)
from blur synthesis, the blur residuals e_hat_t of the chain are also supervised. Latent targets
of the exposure trajectory are z*_0 = Z^S, z*_k = SE(blur, P_k) for 0 < k < T and z*_T = Z^B
(detached), with P_k the partial exposure covering the fraction k/T of the exposure; the target
residual is the latent analogue of e_t = alpha_t B_t - alpha_{t-1} B_{t-1}:
e*_t = alpha_t z*_t - alpha_{t-1} z*_{t-1}, and the term is the mean over t of Charbonnier(e_hat_t, e*_t).
Because SE is non-linear, e*_t is an approximation of "the light of the added exposure slice".
"""
from __future__ import annotations

import torch
from torch import nn

from ..losses import Batch, charbonnier, mimo_loss, psnr_loss, register_objective


def _blurdm(model: nn.Module) -> nn.Module:
    """The BlurDMNet behind an optional DDP / compile wrapper."""
    inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None) or model
    if not hasattr(inner, "blurdm") or not hasattr(inner, "sharp_encoder"):
        raise ValueError(f"the blurdm-stage* objectives need a BlurDM model, got {type(inner).__name__}")
    return inner


def image_loss(backbone: nn.Module, blur: torch.Tensor, sharp: torch.Tensor,
               prior: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
    """The backbone's own image loss for restoring ``blur`` with ``prior`` (None = no prior).

    blur, sharp: (B, 3, h, w) in [0, 1] (h, w multiples of 4 for MIMO-UNet); prior (B, D).
    """
    hint = getattr(backbone, "loss_hint", "")
    if hint == "mimo":
        return mimo_loss(backbone.forward_multiscale(blur, prior), sharp, pixel=charbonnier)
    pred = backbone(blur, prior)
    if hint == "psnr":
        return psnr_loss(pred, sharp), {}
    return charbonnier(pred, sharp), {}


def partial_exposure_images(partials: torch.Tensor, timesteps: int) -> dict[int, torch.Tensor]:
    """{k: P_k} for 0 < k < T from cumulative partial exposures (B, K, 3, h, w).

    Assumes ``partials[:, j]`` averages the first (j + 1) / K of the exposure (so the last one is
    the blurred image); P_k is the one nearest to the fraction k / T. The batch does not carry the
    sub-frame counts, so ask the ``synth`` source for evenly spaced ones, ideally K = T: with
    ``subframes: 10`` and T = 5, ``partials: [2, 4, 6, 8, 10]`` makes P_k exactly the first k/T of
    the exposure. Uneven lists (e.g. [1, 3, 6, 11]) are matched by position only, approximately.
    """
    if partials.ndim != 5:
        raise ValueError(f"batch['partials'] must be (B, K, 3, h, w), got {tuple(partials.shape)}")
    K = partials.shape[1]
    return {k: partials[:, min(K - 1, max(0, round(k * K / timesteps) - 1))] for k in range(1, timesteps)}


def partials_residual_loss(model: nn.Module, blur: torch.Tensor, partials: torch.Tensor,
                           z_sharp: torch.Tensor, states: dict) -> torch.Tensor:
    """Mean over t of Charbonnier(e_hat_t, alpha_t z*_t - alpha_{t-1} z*_{t-1}) (see the module docstring)."""
    sched = model.blurdm.schedule
    T = sched.timesteps
    targets = {0: z_sharp.detach(), T: states["z_b"].detach()}
    with torch.no_grad():
        for k, p_k in partial_exposure_images(partials, T).items():
            targets[k] = model.sharp_prior(blur, p_k)
    terms = []
    for idx, t in enumerate(range(T, 0, -1)):  # states["e_hat"][idx] is e_hat at step t
        e_star = sched.alpha(t) * targets[t] - sched.alpha(t - 1) * targets[t - 1]
        terms.append(charbonnier(states["e_hat"][idx], e_star))
    return torch.stack(terms).mean()


@register_objective("blurdm-stage1")
def stage1(model: nn.Module, batch: Batch, generator: torch.Generator | None = None):
    """Backbone + sharp encoder: image loss with prior Z^S = SE(blur, sharp)."""
    m = _blurdm(model)
    prior = m.sharp_prior(batch["blur"], batch["sharp"])
    loss, logs = image_loss(m.backbone, batch["blur"], batch["sharp"], prior)
    return loss, {**logs, "prior_norm": float(prior.detach().norm(dim=1).mean())}


@register_objective("blurdm-stage2")
def stage2(model: nn.Module, batch: Batch, generator: torch.Generator | None = None,
           partials_weight: float | None = None):
    """BlurDM alone: Charbonnier(z_0, Z^S) after the full reverse chain; SE frozen (no gradient)."""
    m = _blurdm(model)
    blur = batch["blur"]
    with torch.no_grad():
        z_sharp = m.sharp_prior(blur, batch["sharp"])
    z0, states = m.diffusion_prior(blur, generator=generator, return_states=True)
    loss = charbonnier(z0, z_sharp)
    logs = {"latent": float(loss.detach())}
    weight = m.partials_weight if partials_weight is None else float(partials_weight)
    if weight > 0 and "partials" in batch:
        extra = partials_residual_loss(m, blur, batch["partials"], z_sharp, states)
        loss = loss + weight * extra
        logs["partials"] = float(extra.detach())
    return loss, logs


@register_objective("blurdm-stage3")
def stage3(model: nn.Module, batch: Batch, generator: torch.Generator | None = None):
    """Backbone + BlurDM jointly: image loss with prior z_0 = BlurDM(blur) (fresh start noise)."""
    m = _blurdm(model)
    prior = m.diffusion_prior(batch["blur"], generator=generator)
    return image_loss(m.backbone, batch["blur"], batch["sharp"], prior)
