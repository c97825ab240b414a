"""Conditional pixel-space diffusion for deblurring: the SR3 UNet and its diffusion wrapper.

SR3 (Saharia et al. 2021, "Image Super-Resolution via Iterative Refinement", arXiv 2104.07636; reference
code Janspiry/Image-Super-Resolution-via-Iterative-Refinement ``model/sr3_modules/unet.py``): a UNet whose
input is the noisy image concatenated with the condition (here the blurry image), with a sinusoidal
time / noise-level embedding added in every residual block, GroupNorm + Swish residual blocks, optional
single-head self-attention at chosen levels, and channel multipliers per level.

:class:`ConditionalDiffusion` holds the UNet and the conditioning; it implements the model protocol of
:mod:`diffdeblur.models.protocol` through :class:`~.diffusion_model.DiffusionModel`:
- ``mode="sr3"``: diffuse the sharp image, conditioned on the blurry one (SR3).
- ``mode="residual"``: predict-and-refine (DvSR, Whang et al. CVPR 2022, arXiv 2112.02475): a
  deterministic predictor g (a small NAFNet) gives an initial estimate, diffusion generates the
  residual sharp - g(blur), conditioned on blur and g(blur). Both are trained jointly by the single
  diffusion loss (gradients reach g through the residual target and the condition).
Images at the boundary are (B, 3, H, W) float in [0, 1]; diffusion runs in [-1, 1].

The sampling loop, noise field and parameterisation are the shared :class:`~.diffusion_model.DiffusionModel`'s;
the tiling-consistent noise field is :class:`diffdeblur.diffusion.noise.NoiseField`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion.process import to_signed, to_unit
from ..errors import ConfigError
from .blocks import timestep_embedding
from .diffusion_model import TIME_SCALE, DiffusionModel, ToImage
from .protocol import SubmodelFactory, spec

ATTN_QUERY_CHUNK = 4096  # attention runs over query chunks of this many positions: memory O(chunk x HW)


# ---- network -------------------------------------------------------------------------------------

def _groups(channels: int, norm_groups: int) -> int:
    return math.gcd(channels, norm_groups)


class ResBlock(nn.Module):
    """SR3 ResnetBlock: GN-Swish-conv, + Linear(time embedding), GN-Swish-dropout-conv, 1x1 skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, norm_groups: int, dropout: float) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.GroupNorm(_groups(c_in, norm_groups), c_in), nn.SiLU(),
                                    nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb = nn.Linear(emb_dim, c_out)
        self.block2 = nn.Sequential(nn.GroupNorm(_groups(c_out, norm_groups), c_out), nn.SiLU(),
                                    nn.Dropout(dropout), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x) + self.emb(emb)[:, :, None, None]
        return self.block2(h) + self.skip(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over all H*W positions (SR3: one head), GN first, residual add.

    Queries are processed in chunks of ``ATTN_QUERY_CHUNK`` so that memory stays O(chunk * H*W) at
    large test sizes (a 90x160 map at 1/8 of 720p has 14,400 positions); the cost is still O(HW^2).
    """

    def __init__(self, channels: int, norm_groups: int, heads: int = 1) -> None:
        super().__init__()
        if channels % heads:
            raise ConfigError(f"attention: {channels} channels not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels, norm_groups), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        # q, k, v: (B, heads, HW, c/heads)
        y = torch.cat([F.scaled_dot_product_attention(q[:, :, i:i + ATTN_QUERY_CHUNK], k, v)
                       for i in range(0, h * w, ATTN_QUERY_CHUNK)], dim=2)
        return x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))


class ResAttnBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, norm_groups: int, dropout: float,
                 attn: bool, heads: int) -> None:
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim, norm_groups, dropout)
        self.attn = SelfAttention(c_out, norm_groups, heads) if attn else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class SR3UNet(nn.Module):
    """Conditional diffusion UNet. forward(x_t (B,C,H,W), t (B,) float, cond (B,Cc,H,W)) -> (B,C,H,W).

    Levels l = 0..L-1 run at 1/2^l resolution with ``base_channels * channel_mults[l]`` channels and
    ``num_res_blocks`` residual blocks (decoder: one more, fed by the skips). ``attn_levels``: the levels
    with self-attention after each residual block (level 3 is 16x16 on 128x128 training crops, SR3's
    choice); ``mid_attn``: attention in the middle block. H and W must be multiples of 2^(L-1).
    """

    def __init__(self, in_channels: int = 3, cond_channels: int = 3, out_channels: int = 3,
                 base_channels: int = 64, channel_mults: Sequence[int] = (1, 2, 4, 8, 8), num_res_blocks: int = 2,
                 attn_levels: Sequence[int] = (3,), mid_attn: bool = True, attn_heads: int = 1,
                 dropout: float = 0.0, norm_groups: int = 32) -> None:
        super().__init__()
        mults = list(channel_mults)
        self.base_channels = base_channels
        self.size_multiple = 2 ** (len(mults) - 1)
        emb_dim = base_channels * 4
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.init_conv = nn.Conv2d(in_channels + cond_channels, base_channels, 3, padding=1)
        blk = dict(emb_dim=emb_dim, norm_groups=norm_groups, dropout=dropout, heads=attn_heads)

        self.downs = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        skips, ch = [base_channels], base_channels
        for level, m in enumerate(mults):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResAttnBlock(ch, base_channels * m, attn=level in attn_levels, **blk))
                ch = base_channels * m
                skips.append(ch)
            self.downs.append(blocks)
            if level < len(mults) - 1:
                self.downsamplers.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = nn.ModuleList([ResAttnBlock(ch, ch, attn=mid_attn, **blk), ResAttnBlock(ch, ch, attn=False, **blk)])

        self.ups = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level in reversed(range(len(mults))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                out = base_channels * mults[level]
                blocks.append(ResAttnBlock(ch + skips.pop(), out, attn=level in attn_levels, **blk))
                ch = out
            self.ups.append(blocks)
            if level > 0:
                self.upsamplers.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.final = nn.Sequential(nn.GroupNorm(_groups(ch, norm_groups), ch), nn.SiLU(),
                                   nn.Conv2d(ch, out_channels, 3, padding=1))
        nn.init.zeros_(self.final[-1].weight)  # start as a zero predictor (ADM's zero_module)
        nn.init.zeros_(self.final[-1].bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.base_channels).to(x_t.dtype))  # (B, 4*base)
        x = self.init_conv(torch.cat([x_t, cond], dim=1) if cond is not None else x_t)
        hs = [x]
        for i, blocks in enumerate(self.downs):
            for block in blocks:
                x = block(x, emb)
                hs.append(x)
            if i < len(self.downsamplers):
                x = self.downsamplers[i](x)
                hs.append(x)
        for block in self.mid:
            x = block(x, emb)
        for i, blocks in enumerate(self.ups):
            for block in blocks:
                x = block(torch.cat([x, hs.pop()], dim=1), emb)
            if i < len(self.upsamplers):
                x = self.upsamplers[i](F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.final(x)


# ---- the registered diffusion model --------------------------------------------------------------

class ConditionalDiffusion(DiffusionModel):
    """SR3 / DvSR conditional diffusion deblurring model (see the module docstring).

    UNet kwargs: ``base_channels, channel_mults, num_res_blocks, attn_levels, mid_attn, attn_heads, dropout,
    norm_groups``. Diffusion kwargs: ``num_train_steps`` (T), ``schedule`` (linear | cosine), ``beta_start``,
    ``beta_end`` (linear only; None = DDPM values scaled to T), ``objective`` (eps | x0 | v | x0-precond), ``loss_type``
    (l1 | l2), ``clip_x0`` (clamp x0 estimates to the data range while sampling). Conditioning: ``mode``
    (sr3 | residual), ``predictor`` / ``predictor_kwargs`` (registered regression model for residual mode, or
    ``"identity"`` to diffuse the residual sharp - blur over the blurry image itself),
    ``residual_scale`` (residual multiplied by this before diffusion), ``predictor_weight`` (optional extra
    L1 on the predictor; 0 = the single diffusion loss). Sampling defaults: ``default_steps``,
    ``default_sampler``. ``submodel``: the registry's factory that builds the named predictor
    (given by :func:`diffdeblur.build_model`; the network never imports the registry).
    """

    loss_hint = "diffusion"

    def __init__(self, base_channels: int = 64, channel_mults: Sequence[int] = (1, 2, 4, 8, 8),
                 num_res_blocks: int = 2, attn_levels: Sequence[int] = (3,), mid_attn: bool = True,
                 attn_heads: int = 1, dropout: float = 0.0, norm_groups: int = 32,
                 num_train_steps: int = 1000, schedule: str = "linear", beta_start: float | None = None,
                 beta_end: float | None = None, objective: str = "eps", loss_type: str = "l1",
                 clip_x0: bool = True, mode: str = "sr3", predictor: str = "nafnet-tiny",
                 predictor_kwargs: dict[str, Any] | None = None, residual_scale: float = 1.0,
                 predictor_weight: float = 0.0, default_steps: int = 50, default_sampler: str = "ddim",
                 submodel: SubmodelFactory | None = None) -> None:
        if mode not in ("sr3", "residual"):
            raise ConfigError(f"mode must be 'sr3' or 'residual', got '{mode}'")
        super().__init__(num_train_steps=num_train_steps, schedule=schedule, beta_start=beta_start,
                         beta_end=beta_end, objective=objective, loss_type=loss_type, default_steps=default_steps,
                         default_sampler=default_sampler, noise_channels=3)
        self.mode = mode
        self.residual_scale = float(residual_scale)
        self.predictor_weight = float(predictor_weight)
        cond_channels = 6 if mode == "residual" else 3  # residual: [blur, g(blur)]
        self.unet = SR3UNet(3, cond_channels, 3, base_channels, channel_mults, num_res_blocks, attn_levels,
                            mid_attn, attn_heads, dropout, norm_groups)
        self.predictor: nn.Module | None = None
        if mode == "residual":  # "identity": diffuse sharp - blur (the blurry image is the initial estimate)
            self.predictor = nn.Identity() if predictor == "identity" else self._build_predictor(
                submodel, predictor, predictor_kwargs)
        multiple = self.unet.size_multiple
        if self.predictor is not None:
            multiple = math.lcm(multiple, int(getattr(self.predictor, "size_multiple", 1)))
        self.size_multiple = multiple
        # clamp range of x0 estimates in diffusion space: images in [-1, 1]; residuals in [-2, 2] * scale
        self.clip = (1.0 if mode == "sr3" else 2.0 * self.residual_scale) if clip_x0 else None

    @staticmethod
    def _build_predictor(submodel: SubmodelFactory | None, name: str, kwargs: dict[str, Any] | None) -> nn.Module:
        if submodel is None:
            raise ConfigError("a residual ConditionalDiffusion builds its predictor by name: "
                              "build it with diffdeblur.build_model")
        return submodel(name, kinds=("regression",), **(kwargs or {}))

    def condition(self, blur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """blur (B,3,H,W) in [0,1] -> (cond for the UNet, base estimate in [-1,1] or None for sr3)."""
        y = to_signed(blur)
        if self.predictor is None:
            return y, None
        base = to_signed(self.predictor(blur))
        return torch.cat([y, base], dim=1), base

    def to_image(self, x: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
        """A sample (or x_t) in diffusion space -> image in [0, 1] (not clamped)."""
        return to_unit(x if base is None else base + x / self.residual_scale)

    def diffusion_inputs(self, blur: torch.Tensor, sharp: torch.Tensor):
        """Training: (x0 to diffuse, condition, auxiliary loss or None); see :mod:`diffdeblur.objectives`."""
        cond, base = self.condition(blur)
        target = to_signed(sharp)
        if base is None:
            return target, cond, None
        aux = self.predictor_weight * F.l1_loss(to_unit(base), sharp) if self.predictor_weight > 0 else None
        return (target - base) * self.residual_scale, cond, aux

    def sampling_context(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], ToImage]:
        cond, base = self.condition(x)
        return cond, (x.shape[-2], x.shape[-1]), lambda state, final: self.to_image(state, base)

    # restore(blur, steps=, sampler=, eta=, num_samples=, noise=, generator=, callback=, spacing=, timesteps=):
    # the shared ChainModel.restore (sampler: ddim | ddpm | sde).


# ---- presets -------------------------------------------------------------------------------------

TINY = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn_levels=(), mid_attn=False,
            norm_groups=8, num_train_steps=100, default_steps=10)
SMALL = dict(base_channels=32, channel_mults=(1, 2, 4, 4), num_res_blocks=2, attn_levels=(), mid_attn=True,
             norm_groups=16, num_train_steps=1000, default_steps=20)
BASE = dict(base_channels=64, channel_mults=(1, 2, 4, 8, 8), num_res_blocks=2, attn_levels=(3,), mid_attn=True,
            dropout=0.2, norm_groups=32, num_train_steps=2000, beta_start=1e-6, beta_end=1e-2, default_steps=100)


def _preset(name: str, description: str, **kwargs: Any):
    return spec(name, ConditionalDiffusion, description, kind="diffusion", composite=True, **kwargs)


PRESETS = (
    _preset("sr3-tiny", "Tiny SR3 conditional diffusion for tests (base 8, 2 levels, no attention, T=100)", **TINY),
    _preset("sr3-small", "CPU-sized SR3 conditional diffusion (base 32, mults 1,2,4,4, attention in the middle "
            "only)", **SMALL),
    _preset("sr3-base", "SR3 as published (base 64, mults 1,2,4,8,8, attention at level 3 = 16x16 on 128 crops, "
            "dropout 0.2, linear betas 1e-6..1e-2, T=2000)", **BASE),
    _preset("sr3-small-residual", "sr3-small diffusing the residual sharp - blur (identity predictor, no extra "
            "parameters): the blurry image is the starting estimate", mode="residual", predictor="identity", **SMALL),
    _preset("dvsr-tiny", "Tiny predict-and-refine diffusion (DvSR) for tests: nafnet-tiny + sr3-tiny residual",
            mode="residual", predictor="nafnet-tiny", **TINY),
    _preset("dvsr-small", "Predict-and-refine diffusion (DvSR): nafnet-small predictor + sr3-small residual "
            "denoiser", mode="residual", predictor="nafnet-small", **SMALL),
    _preset("dvsr-base", "DvSR-like: NAFNet width 32 predictor + SR3 base-32 residual denoiser, T=2000",
            mode="residual", predictor="nafnet-small", predictor_kwargs={"width": 32}, **dict(BASE, base_channels=32)),
)
