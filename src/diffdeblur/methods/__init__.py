"""The methods of diffdeblur, one file each: a method's wrapper (network + process), its training loss and its
presets. Adding a method is one new file here plus one entry in :data:`METHODS`; the registry
(:mod:`diffdeblur.registry`) reads every module's ``PRESETS`` and each module registers its objectives.

====================  ==================================================================================
module                method
====================  ==================================================================================
``regression``        NAFNet and MIMO-UNet (single-pass regression; the shipped default is nafnet-small)
``autoencoder``       the latent autoencoders (ae-tiny, TAEF2), trained by reconstruction
``sr3``               conditional pixel diffusion: SR3 and DvSR's predict-and-refine (DDPM / DDIM / SDE)
``latent``            latent diffusion on the autoencoder's latents, with a pixel refiner
``blurdm``            BlurDM: a dual noise-and-blur latent prior fused into a regression backbone
``indi``              InDI: direct iteration from the blurry image (few steps)
``resshift``          ResShift: residual shifting from the blurry image or a predictor's estimate (few steps)
``latent_chain``      a few-step ResShift chain in latent space from the default's estimate, with a pixel head
``structure_guided``  multiscale structure guidance (Ren et al. 2023) on SR3 and the few-step chains
``super_resolution``  x2 / x4 super-resolution: a NAFNet-family network and a few-step ResShift chain on it
``inpainting``        object removal: a mask-conditioned NAFNet and a few-step InDI chain on its fill
====================  ==================================================================================

docs/methods/<method>.md describes each in the project's words, with the papers' equation numbers.
"""
from __future__ import annotations

from . import (autoencoder, blurdm, indi, inpainting, latent, latent_chain, regression, resshift, sr3,
               structure_guided, super_resolution)

METHODS = (regression, autoencoder, sr3, latent, blurdm, indi, resshift, latent_chain, structure_guided,
           super_resolution, inpainting)
