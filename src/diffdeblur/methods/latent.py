"""Latent diffusion deblurring, with a pixel-space refiner that lifts the autoencoder ceiling.

Pipeline for a blurry image y (B, 3, H, W) in [0, 1]:

1. z_y = E(y): the frozen autoencoder's latent (B, C, H/8, W/8), ~unit std (:mod:`diffdeblur.models.autoencoder`).
2. Conditional diffusion in latent space (Rombach et al. 2022, "High-Resolution Image Synthesis with
   Latent Diffusion Models", arXiv 2112.10752) on the latent *residual* r = (E(x) - E(y)) * s: the
   SR3 UNet (:class:`~diffdeblur.models.sr3_unet.SR3UNet`) sees [r_t ; z_y] and the samplers of
   :mod:`diffdeblur.diffusion.samplers` run unchanged, at 1/64 of the pixels.
3. Decode: d = D(z_y + r_0 / s). On its own d can never beat the ceiling D(E(x)) (see
   docs/latent_diffusion.md and docs/results/ae_ceiling.md): the decoder invents the detail it lost.
4. Refine: a small NAFNet sees [d ; y] at full resolution and returns d + a correction, so detail
   that is still present in y (edges the blur only smeared, exact colours, text) comes back through
   this skip path rather than through the 8x bottleneck (cf. UID-Diff's refined VAE, or fine-tuning
   the decoder with skip features from y).

Training (objective ``"latent-diffusion"``, the autoencoder frozen): the diffusion loss of
:func:`diffdeblur.diffusion.process.diffusion_terms` on r, plus ``refine_weight`` x Charbonnier
between the refiner's output and the sharp crop, where the refiner's input d is decoded from the
(detached) one-step estimate r_0 at the sampled noise level. Seeing estimates at every noise level
teaches the refiner how much to trust d versus y.

Tiled inference: noise lives on the latent grid (a :class:`~diffdeblur.diffusion.noise.NoiseField`
with C channels); a tile's pixel box (y0, y1, x0, x1) maps to latent (y0 // 8, x0 // 8). Boxes whose
origin is a multiple of 8 (tile sizes and image sides multiples of 8, e.g. 720p and 4K) see exactly
the full image's noise; other boxes are shifted by less than one latent pixel.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion.noise import NoiseField
from ..diffusion.process import Prediction, prediction_from_output
from ..losses import charbonnier
from ..models.autoencoder import DOWNSCALE, TAEF2, LatentAutoencoder, build_autoencoder
from ..models.nafnet import NAFNet
from ..models.protocol import exclude_from_state, restore_options
from ..models.sr3_unet import SR3UNet
from .base import Batch, DiffusionModel, Logs, SamplingOptions, ToImage, register_objective, spec

# residual_scale = ~1 / std(E(sharp) - E(blur)), so that the diffused residual has ~unit std; the stds
# are measured on the GoPro sample's val pairs by benchmarks/studies/ae_ceiling.py (docs/results/ae_ceiling.md).
TAEF2_RESIDUAL_SCALE = 1.25  # residual std 0.77
AE_TINY_RESIDUAL_SCALE = 1.8  # residual std 0.46 (val frames) to 0.54 (train crops)


class PixelRefiner(nn.Module):
    """NAFNet on [decoded ; blur] -> decoded + correction. decoded, blur: (B, 3, H, W) -> (B, 3, H, W).

    ``unshuffle`` = s > 1 runs the NAFNet on pixel-unshuffled inputs (6 s^2 channels at H/s x W/s) and
    shuffles its output back: every pixel is still seen, but the convolutions run at 1/s^2 of the
    positions (at 720p the refiner otherwise costs more than all latent sampling steps together).
    NAFNet's global residual adds its input, so the decoded image's channels come out as
    ``decoded + f([decoded ; blur])``; the blur channels of the output are unused.
    """

    def __init__(self, width: int = 16, middle_blk_num: int = 1, enc_blk_nums: Sequence[int] = (1, 1, 1),
                 dec_blk_nums: Sequence[int] = (1, 1, 1), train_size: int = 128, unshuffle: int = 1) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        self.net = NAFNet(img_channel=6 * unshuffle ** 2, width=width, middle_blk_num=middle_blk_num,
                          enc_blk_nums=tuple(enc_blk_nums), dec_blk_nums=tuple(dec_blk_nums), tlc=True,
                          train_size=max(1, train_size // unshuffle))
        self.size_multiple = self.net.size_multiple * unshuffle

    def forward(self, decoded: torch.Tensor, blur: torch.Tensor) -> torch.Tensor:
        x = torch.cat([decoded, blur], dim=1)  # (B, 6, H, W); decoded first
        if self.unshuffle > 1:
            # pixel_unshuffle keeps input channel c in output channels [c s^2, (c+1) s^2), so the decoded
            # image stays in the first 3 s^2 channels and pixel_shuffle puts it back in channels 0-2
            return F.pixel_shuffle(self.net(F.pixel_unshuffle(x, self.unshuffle)), self.unshuffle)[:, :3]
        return self.net(x)[:, :3]


class LatentDiffusionDeblur(DiffusionModel):
    """Latent diffusion deblurring model (see the module docstring).

    Autoencoder: ``autoencoder`` = "tiny" (the project AE, its weights stored in this model's state
    so checkpoints need no other file) or "taef2" (pretrained; NOT stored: rebuilt from
    ``autoencoder_weights``, a folder, or ``$DIFFDEBLUR_TAEF2_DIR``). ``autoencoder_weights`` for
    "tiny": a trained ae-tiny .safetensors, '' = the shipped one; "random" = random weights (tests).
    UNet (latent space): ``base_channels, channel_mults, num_res_blocks, attn_levels, mid_attn,
    norm_groups, dropout``. Diffusion: ``num_train_steps, schedule, objective, loss_type,
    residual_scale`` (s above), ``clip_x0`` (|r_0| bound while sampling, in residual-std units; 0 =
    none). The default objective is x0: with CPU-sized training budgets, eps prediction sampled poorly
    in the project's pixel-diffusion trials, and x0 gives the refiner a usable r0 estimate at every t. Refiner:
    ``refiner_width`` (0 = no refiner: plain latent diffusion, ceiling-bound), ``refiner_blocks``
    (encoder/decoder blocks per level), ``refiner_unshuffle`` (run the refiner at 1/s resolution on
    pixel-unshuffled inputs, see :class:`PixelRefiner`), ``refine_weight`` (loss weight), ``train_size`` (crop size, for
    NAFNet's test-time local statistics). Sampling defaults: ``default_steps, default_sampler``.
    """

    def __init__(self, autoencoder: str = "tiny", autoencoder_weights: str = "",
                 base_channels: int = 32, channel_mults: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2,
                 attn_levels: Sequence[int] = (), mid_attn: bool = True, norm_groups: int = 16,
                 dropout: float = 0.0, num_train_steps: int = 1000, schedule: str = "cosine",
                 objective: str = "x0", loss_type: str = "l1", residual_scale: float = 1.0, clip_x0: float = 0.0,
                 refiner_width: int = 16, refiner_blocks: Sequence[int] = (1, 1, 1), refiner_unshuffle: int = 1,
                 refine_weight: float = 1.0,
                 train_size: int = 128, default_steps: int = 20, default_sampler: str = "ddim") -> None:
        ae = build_autoencoder(autoencoder, autoencoder_weights)
        super().__init__(num_train_steps=num_train_steps, schedule=schedule, objective=objective,
                         loss_type=loss_type, default_steps=default_steps, default_sampler=default_sampler,
                         noise_channels=ae.latent_channels, noise_scale=DOWNSCALE)
        self.autoencoder: LatentAutoencoder = ae
        self.autoencoder.requires_grad_(False)
        self.store_autoencoder = not isinstance(self.autoencoder, TAEF2)
        if not self.store_autoencoder:  # pretrained, rebuilt from its files: keep it out of checkpoints
            exclude_from_state(self, "autoencoder", lambda m: m.autoencoder.ensure_weights())
        c = self.autoencoder.latent_channels
        self.latent_channels = c
        self.residual_scale = float(residual_scale)
        self.clip = float(clip_x0) * self.residual_scale if clip_x0 else None
        self.refine_weight = float(refine_weight)
        self.unet = SR3UNet(c, c, c, base_channels, channel_mults, num_res_blocks, attn_levels, mid_attn, 1,
                            dropout, norm_groups)
        self.refiner = (PixelRefiner(refiner_width, 1, refiner_blocks, refiner_blocks, train_size, refiner_unshuffle)
                        if refiner_width > 0 else None)
        multiple = DOWNSCALE * self.unet.size_multiple
        if self.refiner is not None:
            multiple = math.lcm(multiple, self.refiner.size_multiple)
        self.size_multiple = multiple

    def train(self, mode: bool = True) -> "LatentDiffusionDeblur":
        super().train(mode)
        self.autoencoder.eval()  # frozen: never update its running statistics
        return self

    # -- pieces shared by training and sampling --
    @torch.no_grad()
    def encode(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], sides multiples of 8 -> latent (B, C, H/8, W/8) (frozen AE)."""
        return self.autoencoder.encode(img)

    def decode_residual(self, z_blur: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Latent of the blurry image + a residual in diffusion scale -> decoded image (B, 3, H, W)."""
        with torch.no_grad():
            return self.autoencoder.decode(z_blur + r / self.residual_scale)

    def refine(self, decoded: torch.Tensor, blur: torch.Tensor) -> torch.Tensor:
        """Pixel-space refinement (identity when the model has no refiner). (B, 3, H, W)."""
        return decoded if self.refiner is None else self.refiner(decoded, blur)

    def diffusion_inputs(self, blur: torch.Tensor, sharp: torch.Tensor):
        """Training: (latent residual r0 = (E(sharp) - E(blur)) * s, condition z_blur, no auxiliary loss)."""
        z_blur, z_sharp = self.encode(blur), self.encode(sharp)
        return (z_sharp - z_blur) * self.residual_scale, z_blur, None

    def sampling_context(self, x: torch.Tensor, refine: bool = True) -> tuple[torch.Tensor, tuple[int, int], ToImage]:
        z_blur = self.encode(x)

        def to_image(r: torch.Tensor, final: bool) -> torch.Tensor:
            d = self.decode_residual(z_blur, r)
            return self.refine(d, x) if refine and final else d

        return z_blur, (z_blur.shape[-2], z_blur.shape[-1]), to_image

    @restore_options
    @torch.inference_mode()
    def restore(self, blur: torch.Tensor, steps: int | None = None, sampler: str | None = None, eta: float = 0.0,
                num_samples: int = 1, noise: NoiseField | None = None, generator: torch.Generator | None = None,
                callback: Any = None, spacing: str = "trailing",
                timesteps: Sequence[float] | None = None, refine: bool = True,
                options: SamplingOptions | None = None) -> torch.Tensor:
        """Deblur (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in [0, 1].

        Sampling options as :meth:`ConditionalDiffusion.restore` (steps, sampler ddim|ddpm|sde, eta,
        num_samples averaged in latent space, noise field, generator, callback, spacing, timesteps).
        ``refine=False`` returns the plain decoded latent (the autoencoder-ceiling-bound output).
        Callback infos carry latent tensors plus "x0_image" (what the output would be if sampling
        stopped here: decoded and refined) and "x_t_image" (the decoded noisy state), in [0, 1].
        """
        options = options or SamplingOptions(steps, sampler, eta, num_samples, spacing, timesteps)
        return self.sample_image(blur, options, noise, generator, callback, refine=refine)


# ---- the loss --------------------------------------------------------------------------------------

@register_objective("latent-diffusion")
def latent_diffusion(model: nn.Module, batch: Batch,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, Logs]:
    """Diffusion loss on the latent residual + ``refine_weight`` x Charbonnier of the refined pixels.

    DDPM's simplified loss (Ho et al. 2020, Algorithm 1) on r = (E(sharp) - E(blur)) * s. The refiner
    sees D(z_y + r0_hat / s) with r0_hat from the same (detached) network output, and the blurry
    crop. Crop sides must be multiples of ``model.size_multiple``.
    """
    loss, logs, terms, z_blur = model.loss_terms(batch, generator)
    if model.refiner is not None and model.refine_weight > 0:
        pred: Prediction = prediction_from_output(terms.out.detach(), terms.x_t, terms.ab, model.objective, model.clip)
        decoded = model.decode_residual(z_blur, pred.x0)
        ref = charbonnier(model.refiner(decoded, batch["input"]), batch["target"])
        loss = loss + model.refine_weight * ref
        logs["refine"] = float(ref.detach())
        logs["decoded_l1"] = float(F.l1_loss(decoded, batch["target"]))
    return loss, logs


# ---- presets ---------------------------------------------------------------------------------------

def _preset(name: str, description: str, **kwargs: Any):
    return spec(name, LatentDiffusionDeblur, description, kind="latent-diffusion", loss="latent-diffusion", **kwargs)


PRESETS = (
    _preset("latent-tiny", "Tiny latent diffusion for tests: ae-tiny latents, UNet base 16 (1,2), T=100, "
            "refiner NAFNet width 8", autoencoder="tiny", residual_scale=AE_TINY_RESIDUAL_SCALE, base_channels=16,
            channel_mults=(1, 2), num_res_blocks=1, norm_groups=8, num_train_steps=100, refiner_width=8,
            refiner_blocks=(1, 1), default_steps=10),
    _preset("latent-small", "CPU latent diffusion: residual diffusion in ae-tiny latents (32 ch, 8x down), SR3 UNet "
            "base 32 (1,2,4), T=1000 cosine, x0 objective, + NAFNet width-16 refiner on pixel-unshuffled "
            "[decoded, blur]", autoencoder="tiny", residual_scale=AE_TINY_RESIDUAL_SCALE, refiner_unshuffle=2),
    _preset("latent-taef2-small", "As latent-small in TAEF2 latents (weights from autoencoder_weights or "
            "$DIFFDEBLUR_TAEF2_DIR; not stored in checkpoints)", autoencoder="taef2",
            residual_scale=TAEF2_RESIDUAL_SCALE, refiner_unshuffle=2),
)
