"""A few-step latent chain that starts where the regression ends: ResShift in an autoencoder's latent space, from
the default's estimate (predict-and-refine in latent space). The wrapper, its loss and its presets.

Pipeline for a blurry image y (B, 3, H, W) in [0, 1] (docs/methods/latent_chain.md):

1. d = g(y): the frozen regression predictor (the shipped default), clamped to [0, 1];
2. z_d = E(d), z_y = E(y): the frozen autoencoder's latents (B, C, H/8, W/8), ~unit std
   (:mod:`diffdeblur.models.autoencoder`: ae-tiny, or TAEF2 from a user-given folder);
3. ResShift (Yue, Wang & Loy, NeurIPS 2023, arXiv 2307.12348; :mod:`diffdeblur.diffusion.resshift`) in latent space
   from the anchor z_d towards z_x = E(sharp): x_t = z_x + eta_t (z_d - z_x) + kappa sqrt(eta_t) eps (its eq. 2),
   a few steps (T = 4) from x_T = z_d + kappa sqrt(eta_T) eps. The latent SR3 UNet
   (:class:`~diffdeblur.models.sr3_unet.SR3UNet`) sees [x_t scaled ; z_y ; z_d] and predicts the correction of
   the anchor, x0_hat = z_d + f(...): its last convolution starts at zero, so the untrained chain ends on z_d;
4. the pixel head: out = d + h([delta ; d ; y]) with delta = D(x0_hat) - D(z_d), the chain's proposal in
   pixels; h is a small convolutional head on pixel-unshuffled inputs whose last convolution starts at zero, so
   it decides how much of the proposal to take (a first design added delta itself, out = d + delta + h(...):
   the decoded proposal's errors then reached the output unless h learnt to cancel them, and REDS val fell
   from 27.14 to 26.52 dB in 1000 steps).

So the untrained model returns the default's estimate d exactly (delta = 0, h = 0), and training moves it only
where the latent chain and the head learn something. Training (objective ``latent-shift``): ResShift's x0 loss on
the latents plus ``head_weight`` x Charbonnier(out, sharp), the head seeing D of the (detached) x0 estimate at the
sampled t. Tiling: noise on the latent grid (a :class:`~diffdeblur.diffusion.noise.NoiseField`, 8 pixels per latent
pixel), as :mod:`.latent`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion.resshift import (POWER, SQRT_ETA_END, resshift_input_scale, resshift_loss, resshift_prior,
                                  resshift_sample, resshift_sqrt_etas)
from ..diffusion.schedules import make_timesteps
from ..diffusion.shifting import SHIFT_SAMPLERS
from ..errors import ConfigError
from ..losses import charbonnier
from ..models.autoencoder import DOWNSCALE, TAEF2, LatentAutoencoder, build_autoencoder
from ..models.protocol import exclude_from_state
from ..models.sr3_unet import SR3UNet
from .base import (LOSS_TYPES, TIME_SCALE, Batch, Callback, ChainModel, Logs, SamplingOptions, SubmodelFactory,
                   ToImage, frozen_predictor, register_objective, spec)

JOURNAL_MIN_NOISE_LEVEL = 0.2  # ResShift's 4-step configs: sqrt(eta_1) = min(0.2 / kappa, 0.2)


class PixelHead(nn.Module):
    """h([delta ; d ; y]) -> a correction (B, 3, H, W): three 3x3 convolutions on 2x pixel-unshuffled inputs
    (27 s^2 -> width -> width -> 3 s^2 channels, s = ``unshuffle``), then pixel-shuffled back. The last
    convolution starts at zero, so the untrained head adds nothing."""

    def __init__(self, width: int = 32, unshuffle: int = 2) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        c_in = 9 * unshuffle ** 2
        self.body = nn.Sequential(nn.Conv2d(c_in, width, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(width, 3 * unshuffle ** 2, 3, padding=1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)
        self.size_multiple = unshuffle
        self.receptive_radius = 3 * unshuffle  # input pixels one output pixel sees on each side

    def forward(self, delta: torch.Tensor, estimate: torch.Tensor, blur: torch.Tensor) -> torch.Tensor:
        x = torch.cat([delta, estimate, blur], dim=1)
        if self.unshuffle > 1:
            return F.pixel_shuffle(self.body(F.pixel_unshuffle(x, self.unshuffle)), self.unshuffle)
        return self.body(x)


class LatentShiftDeblur(ChainModel):
    """The latent chain from the default's estimate (see the module docstring).

    Autoencoder: ``autoencoder`` ("tiny" = ae-tiny, stored in checkpoints; "taef2" = pretrained, rebuilt from
    ``autoencoder_weights`` or ``$DIFFDEBLUR_TAEF2_DIR``, not stored), ``autoencoder_weights`` as
    :func:`~diffdeblur.models.autoencoder.build_autoencoder`. Predictor: ``predictor`` / ``predictor_kwargs`` /
    ``predictor_weights`` (a registered regression model and shipped weights; "default" = the shipped default),
    frozen. Latent UNet: ``base_channels, channel_mults, num_res_blocks, norm_groups``. Chain (ResShift schedule):
    ``num_train_steps`` (T), ``kappa``, ``power``, ``min_noise_level``, ``sqrt_eta_end``; ``loss_type`` of the latent
    x0 loss (l1 | l2). Head: ``head_width``, ``head_unshuffle``, ``head_weight`` (its loss weight). Sampling
    defaults: ``default_steps`` (None = T), ``default_sampler`` (ddim | ddpm). ``submodel``: the registry's factory.
    """

    samplers = SHIFT_SAMPLERS

    def __init__(self, autoencoder: str = "tiny", autoencoder_weights: str = "", predictor: str = "nafnet-small",
                 predictor_kwargs: dict[str, Any] | None = None, predictor_weights: str = "default",
                 base_channels: int = 32, channel_mults: Sequence[int] = (1, 2), num_res_blocks: int = 1,
                 norm_groups: int = 16, num_train_steps: int = 4, kappa: float = 1.0, power: float = POWER,
                 min_noise_level: float = JOURNAL_MIN_NOISE_LEVEL, sqrt_eta_end: float = SQRT_ETA_END,
                 loss_type: str = "l1", head_width: int = 32, head_unshuffle: int = 2, head_weight: float = 1.0,
                 default_steps: int | None = None, default_sampler: str = "ddim",
                 submodel: SubmodelFactory | None = None) -> None:
        ae = build_autoencoder(autoencoder, autoencoder_weights)
        super().__init__(default_steps=int(default_steps or num_train_steps), default_sampler=default_sampler,
                         noise_channels=ae.latent_channels, noise_scale=DOWNSCALE)
        if loss_type not in LOSS_TYPES:
            raise ConfigError(f"unknown loss_type '{loss_type}' (known: {', '.join(LOSS_TYPES)})")
        self.autoencoder: LatentAutoencoder = ae
        self.autoencoder.requires_grad_(False)
        if isinstance(ae, TAEF2):  # pretrained, rebuilt from its files: keep it out of checkpoints
            exclude_from_state(self, "autoencoder", lambda m: m.autoencoder.ensure_weights())
        self.predictor = frozen_predictor(self, "predictor", submodel, predictor, predictor_kwargs, predictor_weights)
        c = ae.latent_channels
        self.unet = SR3UNet(c, 2 * c, c, base_channels, channel_mults, num_res_blocks, (), False, 1, 0.0, norm_groups)
        self.head = PixelHead(head_width, head_unshuffle)
        self.num_train_steps, self.kappa = num_train_steps, float(kappa)
        self.loss_type, self.head_weight = loss_type, float(head_weight)
        self.register_buffer("sqrt_etas", resshift_sqrt_etas(num_train_steps, kappa, power, min_noise_level,
                                                             sqrt_eta_end), persistent=False)  # (T,)
        self.size_multiple = math.lcm(DOWNSCALE * self.unet.size_multiple,
                                      int(getattr(self.predictor, "size_multiple", 1)), self.head.size_multiple)
        self.init_prefixes = ("predictor.",)  # train.init_from: default fills the predictor

    def train(self, mode: bool = True) -> "LatentShiftDeblur":
        super().train(mode)
        self.autoencoder.eval()
        self.predictor.eval()  # frozen
        return self

    # -- the pieces --
    def net(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """x0 estimate of the latent chain: x_t (B, C, h, w), t (B,) indices in [0, T-1], cond = [z_y ; z_d]
        (B, 2C, h, w) -> z_d + the UNet's correction (B, C, h, w); x_t scaled as ResShift's reference."""
        scale = resshift_input_scale(self.sqrt_etas[t.long()], self.kappa).to(x_t.dtype)[:, None, None, None]
        c = x_t.shape[1]
        return cond[:, c:] + self.unet(x_t * scale, t.float() * (TIME_SCALE / self.num_train_steps), cond)

    forward = net

    @torch.no_grad()
    def anchors(self, blur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(d, z_y, z_d): the predictor's estimate (B, 3, H, W) in [0, 1] and the latents of y and d."""
        d = self.predictor(blur).clamp(0, 1)
        return d, self.autoencoder.encode(blur), self.autoencoder.encode(d)

    def finish(self, z0: torch.Tensor, decoded_anchor: torch.Tensor, d: torch.Tensor,
               blur: torch.Tensor) -> torch.Tensor:
        """The pixel head: d + h([delta ; d ; y]), delta = D(z0) - D(z_d) (B, 3, H, W), unclamped."""
        with torch.no_grad():
            delta = self.autoencoder.decode(z0) - decoded_anchor
        return d + self.head(delta, d, blur)

    # -- the chain protocol --
    def sampling_context(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], ToImage]:
        d, z_y, z_d = self.anchors(x)
        decoded_anchor = self.autoencoder.decode(z_d)

        def to_image(state: torch.Tensor, final: bool) -> torch.Tensor:
            return self.finish(state, decoded_anchor, d, x) if final else self.autoencoder.decode(state)

        return torch.cat([z_y, z_d], dim=1), (z_y.shape[-2], z_y.shape[-1]), to_image

    def timesteps(self, options: SamplingOptions) -> list[float]:
        return make_timesteps(self.num_train_steps, int(options.steps or self.default_steps), options.spacing).tolist()

    def run_chain(self, sampler: str, options: SamplingOptions, ts: list[float], cond: torch.Tensor,
                  draw: Callable[[int], torch.Tensor], callback: Callback | None) -> torch.Tensor:
        z_d = cond[:, self.noise_channels:]
        x_T = resshift_prior(z_d, float(self.sqrt_etas[-1]), self.kappa, draw(0))
        eta = 1.0 if sampler == "ddpm" else float(options.eta)
        return resshift_sample(self.net, x_T, ts, sqrt_etas=self.sqrt_etas, kappa=self.kappa, y=z_d, cond=cond,
                               eta=eta, noise=draw, callback=callback)


# ---- the loss --------------------------------------------------------------------------------------

@register_objective("latent-shift")
def latent_shift(model: LatentShiftDeblur, batch: Batch, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, Logs]:
    """ResShift's x0 loss in latent space (x0 = E(target), anchor E(g(input))) + ``head_weight`` x Charbonnier of the
    head's output, the head seeing D of the detached x0 estimate at the sampled t. Crop sides: multiples of
    ``model.size_multiple``."""
    blur, sharp = batch["input"], batch["target"]
    d, z_y, z_d = model.anchors(blur)
    with torch.no_grad():
        z_x = model.autoencoder.encode(sharp)
    cond = torch.cat([z_y, z_d], dim=1)
    seen: dict[str, torch.Tensor] = {}

    def net(x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        seen["x0"] = model.net(x_t, t, c)
        return seen["x0"]

    loss, logs = resshift_loss(net, z_x, z_d, cond, model.sqrt_etas, model.kappa, loss_type=model.loss_type,
                               generator=generator)
    if model.head_weight > 0:
        with torch.no_grad():
            decoded_anchor = model.autoencoder.decode(z_d)
        head = charbonnier(model.finish(seen["x0"].detach(), decoded_anchor, d, blur), sharp)
        loss = loss + model.head_weight * head
        logs["head"] = float(head.detach())
    return loss, logs


# ---- presets ---------------------------------------------------------------------------------------

def _preset(name: str, description: str, **kwargs: Any):
    return spec(name, LatentShiftDeblur, description, kind="latent-diffusion", composite=True, loss="latent-shift",
                **kwargs)


PRESETS = (
    _preset("latent-shift-tiny", "Tiny latent chain for tests: random ae-tiny, random nafnet-tiny predictor, latent "
            "UNet base 8", autoencoder_weights="random", predictor="nafnet-tiny", predictor_weights="",
            base_channels=8, channel_mults=(1,), norm_groups=4, head_width=8),
    _preset("latent-shift-small", "Latent ResShift (T=4) in ae-tiny latents from the shipped default's estimate, "
            "latent UNet base 32 (1,2), pixel head width 32; untrained it returns the default exactly"),
    _preset("latent-shift-taef2-small", "As latent-shift-small in TAEF2 latents (weights from autoencoder_weights "
            "or $DIFFDEBLUR_TAEF2_DIR; not stored in checkpoints)", autoencoder="taef2"),
)
