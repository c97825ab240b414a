"""Multiscale structure guidance (Ren et al., "Multiscale Structure Guided Diffusion for Image Deblurring",
ICCV 2023, arXiv 2212.01789): small regression networks that predict the coarse, grayscale structure of the
sharp image from the blurry one, whose features enter a denoiser's encoder.

Per scale s (a downsampling factor: 2 = half resolution, matching the denoiser's encoder level at 1/s), the
blurry image (B, 3, H, W) in [0, 1] is converted to BT.601 luma, area-downsampled to (ceil(H/s), ceil(W/s)) and
passed through a branch: conv3x3 (1 -> C) -> N residual blocks (conv3x3-SiLU-conv3x3 + skip) -> the *feature*
(B, C, H/s, W/s), and a 1-channel head conv3x3 (C -> 1) whose output, added to the downsampled luma (a residual
prediction: our choice), is the predicted grayscale sharp image at that scale. The feature (the output of the
last residual block, before the head) is what the denoiser receives (the paper's Fig. 12 caption); the
prediction is supervised by L1 against the grayscale, downsampled sharp image (:meth:`StructureGuidance.loss`).

Reconstruction choices (docs/methods/structure_guided.md; Ren et al., ICCV 2023, do not fix them): one
separate branch per scale; no normalisation layers (the branch is local: its receptive field is bounded, so
tiles see what the whole image sees, :attr:`StructureGuidance.reach`); every branch exists whether its scale
is enabled or not (``enabled`` only chooses which run), so toggling scales keeps checkpoints compatible.

The denoisers (:class:`~.sr3_unet.SR3UNet`, :class:`~.time_nafnet.TimeNAFNet`) take the features through
:func:`guide_projection`: a zero-initialised 1x1 conv whose output is added to the input of every encoder block
at the feature's resolution, so that a guided denoiser with fresh projections equals the unguided one.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # BT.601 luma of RGB (as diffdeblur.perception uses it)
Features = dict[int, torch.Tensor]  # downsampling factor -> (B, C, H/factor, W/factor)


def to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """BT.601 luma: (B, 3, H, W) -> (B, 1, H, W), same range as the input."""
    w = torch.tensor(GRAY_WEIGHTS, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * w).sum(dim=1, keepdim=True)


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Area downsampling by an integer factor: (B, C, H, W) -> (B, C, ceil(H/f), ceil(W/f)); each output pixel is
    the mean of the input pixels it covers (PyTorch's adaptive average pool: exact f x f means when f divides H, W)."""
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(-(-h // factor), -(-w // factor)), mode="area")


def guidance_target(sharp: torch.Tensor, factor: int) -> torch.Tensor:
    """What the branch of scale ``factor`` learns to predict: the grayscale, downsampled sharp image
    (B, 3, H, W) in [0, 1] -> (B, 1, ceil(H/f), ceil(W/f))."""
    return downsample(to_gray(sharp), factor)


def guide_projection(guide_channels: int, channels: int) -> nn.Conv2d:
    """The entry of a guided encoder block: a 1x1 conv (guide_channels -> channels), zero-initialised, whose
    output is added to the block's input (a fresh guided block is the unguided block)."""
    conv = nn.Conv2d(guide_channels, channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def check_scales(scales: Iterable[int], levels: Sequence[int], key: str) -> tuple[int, ...]:
    """``scales`` as a tuple if each is one of the denoiser's encoder ``levels`` (their downsampling factors) and
    none repeats; else a one-line ConfigError naming ``key``."""
    out = tuple(scales)
    for s in out:
        if isinstance(s, bool) or not isinstance(s, int) or s not in levels:
            raise ConfigError(f"{key}: {s!r} is not an encoder level of the denoiser "
                              f"(its levels are at factors {', '.join(map(str, levels))})")
    if len(set(out)) != len(out):
        raise ConfigError(f"{key}: scales repeat ({', '.join(map(str, out))})")
    return out


class ResidualBlock(nn.Module):
    """conv3x3 - SiLU - conv3x3, plus the input. (B, C, h, w) -> (B, C, h, w)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GuidanceBranch(nn.Module):
    """One scale's network: gray (B, 1, h, w) -> (feature (B, C, h, w), prediction (B, 1, h, w) = gray + head)."""

    def __init__(self, width: int, blocks: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        self.head = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.blocks(self.stem(gray))
        return feature, gray + self.head(feature)


class StructureGuidance(nn.Module):
    """The guidance module: one :class:`GuidanceBranch` per scale (see the module docstring).

    ``scales``: downsampling factors (2, 4, 8 = the encoder levels at 1/2, 1/4, 1/8); ``width`` (C): feature
    channels; ``blocks`` (N): residual blocks per branch; ``enabled``: one bool per scale (None = all), the
    scales that run. ``forward(blur (B, 3, H, W) in [0, 1]) -> (features, predictions)``, dicts keyed by the
    enabled factors: features (B, C, ceil(H/s), ceil(W/s)), predictions (B, 1, ceil(H/s), ceil(W/s)) in about [0, 1].
    Bad values are one-line ConfigErrors naming the key (``guidance_width``, ...).
    """

    def __init__(self, scales: Sequence[int] = (2, 4, 8), width: int = 32, blocks: int = 4,
                 enabled: Sequence[bool] | None = None) -> None:
        super().__init__()
        self.scales = tuple(int(s) for s in scales)
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in scales):
            raise ConfigError(f"guidance_scales: each scale must be an integer factor >= 1, got {list(scales)}")
        if width < 1:
            raise ConfigError(f"guidance_width must be >= 1, got {width}")
        if blocks < 0:
            raise ConfigError(f"guidance_blocks must be >= 0, got {blocks}")
        flags = tuple(enabled) if enabled is not None else (True,) * len(self.scales)
        if len(flags) != len(self.scales):
            raise ConfigError(f"guidance_enabled: {len(flags)} flags for {len(self.scales)} guidance_scales "
                              f"({', '.join(map(str, self.scales))})")
        self.enabled = tuple(s for s, on in zip(self.scales, flags) if on)
        self.width, self.num_blocks = width, blocks
        self.branches = nn.ModuleDict({str(s): GuidanceBranch(width, blocks) for s in self.scales})

    @property
    def reach(self) -> int:
        """Input pixels beyond a point that the enabled features there depend on: the area pool's footprint plus
        (1 + 2N) 3x3 convs at 1/s, i.e. s (2N + 2), for the coarsest enabled scale (0 when none is enabled)."""
        return max((s * (2 * self.num_blocks + 2) for s in self.enabled), default=0)

    def forward(self, blur: torch.Tensor) -> tuple[Features, Features]:
        gray = to_gray(blur)
        features: Features = {}
        predictions: Features = {}
        for s in self.enabled:
            features[s], predictions[s] = self.branches[str(s)](downsample(gray, s))
        return features, predictions

    def loss(self, predictions: Features, sharp: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """L_guide = sum over the predicted scales of the mean L1 between the prediction and
        :func:`guidance_target` of ``sharp`` (B, 3, H, W) in [0, 1]; returns (loss, {"guide_<s>": value})."""
        total = sharp.new_zeros(())
        logs: dict[str, float] = {}
        for s, pred in predictions.items():
            term = F.l1_loss(pred.float(), guidance_target(sharp, s).float())
            total = total + term
            logs[f"guide_{s}"] = float(term.detach())
        return total, logs


def encoder_factors(levels: int) -> tuple[int, ...]:
    """The downsampling factors of a UNet encoder with ``levels`` levels: 1, 2, 4, ..."""
    return tuple(2 ** level for level in range(levels))
