"""The autoencoders of latent diffusion as a trainable method: reconstruction loss and presets.

The networks are in :mod:`diffdeblur.models.autoencoder`; ``restore`` of an autoencoder is its reconstruction.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.autoencoder import AE_LATENT_NOISE, AE_TINY, TAEF2, TAEF2_ENV, TinyAutoencoder
from .base import Batch, Logs, register_objective, spec


@register_objective("autoencoder")
def autoencoder(model: nn.Module, batch: Batch, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Logs]:
    """Reconstruct both the sharp and the blurry crops (the latent model encodes both).

    L1(decode(encode(x) + n), x) with n ~ N(0, 0.1^2) in unit-latent scale: the noise makes the
    decoder tolerant of the small latent errors a diffusion sampler leaves.
    """
    x = torch.cat([batch["target"], batch["input"]], dim=0)
    z = model.encode(x)
    noise = torch.randn(z.shape, generator=generator, device="cpu").to(z) * AE_LATENT_NOISE
    loss = F.l1_loss(model.decode(z + noise), x)
    return loss, {"l1": float(loss.detach())}

PRESETS = (
    spec("taef2", TAEF2, kind="autoencoder", loss="autoencoder",
         description="TAEF2 tiny autoencoder (FLUX.2 latents, 32 ch, 8x down); weights from "
                     f"weights_dir or ${TAEF2_ENV}, never downloaded. restore() = reconstruction"),
    spec(AE_TINY, TinyAutoencoder, kind="autoencoder", loss="autoencoder",
         description="The project's ~1M-parameter conv autoencoder (32 ch, 8x down, no full-res convs); "
                     "restore() = reconstruction"),
)
