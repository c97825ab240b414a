"""Conditional pixel-space diffusion for deblurring: the SR3 UNet and its diffusion wrapper.

SR3 (Saharia et al. 2021, "Image Super-Resolution via Iterative Refinement", arXiv 2104.07636; reference
code Janspiry/Image-Super-Resolution-via-Iterative-Refinement ``model/sr3_modules/unet.py``): a UNet whose
input is the noisy image concatenated with the condition (here the blurry image), with a sinusoidal
time / noise-level embedding added in every residual block, GroupNorm + Swish residual blocks, optional
single-head self-attention at chosen levels, and channel multipliers per level.

:class:`ConditionalDiffusion` holds the UNet and the diffusion configuration and implements the model
protocol of :mod:`diffdeblur.registry` (``restore``, ``stochastic``, ``noise_like``, ``slice_noise``):
- ``mode="sr3"``: diffuse the sharp image, conditioned on the blurry one (SR3).
- ``mode="residual"``: predict-and-refine (DvSR, Whang et al. CVPR 2022, arXiv 2112.02475): a
  deterministic predictor g (a small NAFNet) gives an initial estimate, diffusion generates the
  residual sharp - g(blur), conditioned on blur and g(blur). Both are trained jointly by the single
  diffusion loss (gradients reach g through the residual target and the condition).
Images at the boundary are (B, 3, H, W) float in [0, 1]; diffusion runs in [-1, 1].

Tiling-consistent noise (:class:`NoiseField`): the noise for sample k, step i, image b at pixel (y, x)
is a fixed function of (seed_b, k, i, y, x). The pixel grid is cut into fixed 64x64 blocks, each filled
by its own ``torch.Generator`` seeded with a hash of (seed_b, k, i, block row, block column). Any crop
(a tile) generates just the blocks it touches, so overlapping tiles see identical noise at every
step and no full-image noise tensor is ever stored (memory stays one tile per step).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion import process  # noqa: F401  (registers the "diffusion" objective)
from ..diffusion.process import check_objective, make_denoiser, to_signed, to_unit
from ..diffusion.samplers import SAMPLER_NAMES, average_samples, run_sampler
from ..diffusion.schedules import alpha_bar_from_betas, make_beta_schedule, make_timesteps
from ..registry import build_model, register_model
from .blocks import pad_to_multiple, timestep_embedding

TIME_SCALE = 1000.0  # the network sees t * 1000 / T, so embeddings span the same range for any T
NOISE_BLOCK = 64  # side of the independently seeded noise blocks (see NoiseField)
ATTN_QUERY_CHUNK = 4096  # attention runs over query chunks of this many positions: memory O(chunk x HW)
_MASK64 = (1 << 64) - 1


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
            raise ValueError(f"attention: {channels} channels not divisible by {heads} heads")
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


# ---- tiling-consistent noise ---------------------------------------------------------------------

def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _hash_seed(*values: int) -> int:
    h = 0
    for v in values:
        h = _splitmix64(h ^ (v & _MASK64))
    return h >> 1  # 63 bits: a valid torch seed


@dataclass(frozen=True)
class NoiseField:
    """Standard normal noise defined on an unbounded pixel grid, for every (sample, step), generated lazily.

    ``seeds``: one base seed per batch item; ``offset``: (y, x) of this view's top-left pixel in the full
    image (set by :meth:`crop`); ``channels``: noise channels. ``sample(k, i, h, w)`` returns the
    (B, channels, h, w) noise of sample k, step index i (0 = x_T, i = the noise injected by step i-1)
    at pixels [y, y+h) x [x, x+w). Identical pixels give identical values whatever the crop.
    """

    seeds: tuple[int, ...]
    channels: int = 3
    offset: tuple[int, int] = (0, 0)
    device: str = "cpu"
    block: int = NOISE_BLOCK

    def crop(self, box: tuple[int, int, int, int]) -> "NoiseField":
        """The view of pixels box = (y0, y1, x0, x1) relative to this view."""
        return replace(self, offset=(self.offset[0] + box[0], self.offset[1] + box[2]))

    def to(self, device: torch.device | str) -> "NoiseField":
        return replace(self, device=str(device))

    def sample(self, k: int, i: int, h: int, w: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        y0, x0, n = self.offset[0], self.offset[1], self.block
        by0, by1, bx0, bx1 = y0 // n, (y0 + h - 1) // n, x0 // n, (x0 + w - 1) // n
        canvas = torch.empty(len(self.seeds), self.channels, (by1 - by0 + 1) * n, (bx1 - bx0 + 1) * n)
        for b, seed in enumerate(self.seeds):
            for by in range(by0, by1 + 1):
                for bx in range(bx0, bx1 + 1):
                    g = torch.Generator().manual_seed(_hash_seed(seed, k, i, by, bx))
                    canvas[b, :, (by - by0) * n:(by - by0 + 1) * n, (bx - bx0) * n:(bx - bx0 + 1) * n] = \
                        torch.randn(self.channels, n, n, generator=g)
        oy, ox = y0 - by0 * n, x0 - bx0 * n
        return canvas[:, :, oy:oy + h, ox:ox + w].to(device=self.device, dtype=dtype)


def new_noise_field(batch: int, generator: torch.Generator | None = None, channels: int = 3) -> NoiseField:
    """A fresh :class:`NoiseField` with per-image base seeds drawn from ``generator``."""
    seeds = torch.randint(0, 2 ** 62, (batch,), generator=generator, dtype=torch.int64).tolist()
    return NoiseField(tuple(int(s) for s in seeds), channels)


def sampling_inputs(blur: torch.Tensor, num_train_steps: int, steps: int, spacing: str,
                    timesteps: Sequence[float] | None, noise: NoiseField | None,
                    noise_like: Callable[[torch.Tensor, torch.Generator | None], NoiseField],
                    generator: torch.Generator | None) -> tuple[list[float], NoiseField]:
    """The timesteps and the noise field of one restore call, shared by the pixel and latent models.

    ``timesteps`` (explicit) win over ``steps`` spaced by ``spacing``; ``noise`` (a tile's slice) wins
    over a fresh field from ``noise_like(blur, generator)``. Raises ValueError when the field's batch
    differs from ``blur``'s (B, C, H, W). The field is moved to ``blur``'s device.
    """
    ts = list(timesteps) if timesteps is not None else make_timesteps(num_train_steps, int(steps), spacing).tolist()
    if noise is None:
        noise = noise_like(blur, generator)
    if len(noise.seeds) != blur.shape[0]:
        raise ValueError(f"noise field has {len(noise.seeds)} images, input batch has {blur.shape[0]}")
    return ts, noise.to(blur.device)


# ---- the registered diffusion model --------------------------------------------------------------

class ConditionalDiffusion(nn.Module):
    """SR3 / DvSR conditional diffusion deblurring model (see the module docstring).

    UNet kwargs: ``base_channels, channel_mults, num_res_blocks, attn_levels, mid_attn, attn_heads, dropout,
    norm_groups``. Diffusion kwargs: ``num_train_steps`` (T), ``schedule`` (linear | cosine), ``beta_start``,
    ``beta_end`` (linear only; None = DDPM values scaled to T), ``objective`` (eps | x0 | v | x0-precond), ``loss_type``
    (l1 | l2), ``clip_x0`` (clamp x0 estimates to the data range while sampling). Conditioning: ``mode``
    (sr3 | residual), ``predictor`` / ``predictor_kwargs`` (registered regression model for residual mode, or
    ``"identity"`` to diffuse the residual sharp - blur over the blurry image itself),
    ``residual_scale`` (residual multiplied by this before diffusion), ``predictor_weight`` (optional extra
    L1 on the predictor; 0 = the single diffusion loss). Sampling defaults: ``default_steps``,
    ``default_sampler``.
    """

    stochastic = True
    loss_hint = "diffusion"

    def __init__(self, base_channels: int = 64, channel_mults: Sequence[int] = (1, 2, 4, 8, 8),
                 num_res_blocks: int = 2, attn_levels: Sequence[int] = (3,), mid_attn: bool = True,
                 attn_heads: int = 1, dropout: float = 0.0, norm_groups: int = 32,
                 num_train_steps: int = 1000, schedule: str = "linear", beta_start: float | None = None,
                 beta_end: float | None = None, objective: str = "eps", loss_type: str = "l1",
                 clip_x0: bool = True, mode: str = "sr3", predictor: str = "nafnet-tiny",
                 predictor_kwargs: dict[str, Any] | None = None, residual_scale: float = 1.0,
                 predictor_weight: float = 0.0, default_steps: int = 50, default_sampler: str = "ddim") -> None:
        super().__init__()
        if mode not in ("sr3", "residual"):
            raise ValueError(f"mode must be 'sr3' or 'residual', got '{mode}'")
        check_objective(objective)
        if default_sampler not in SAMPLER_NAMES:
            raise ValueError(f"default_sampler must be one of {SAMPLER_NAMES}, got '{default_sampler}'")
        self.mode, self.objective, self.loss_type = mode, objective, loss_type
        self.num_train_steps = num_train_steps
        self.residual_scale = float(residual_scale)
        self.predictor_weight = float(predictor_weight)
        self.default_steps, self.default_sampler = default_steps, default_sampler
        betas = make_beta_schedule(schedule, num_train_steps, beta_start=beta_start, beta_end=beta_end)
        self.register_buffer("alpha_bar", alpha_bar_from_betas(betas), persistent=False)  # (T,)
        cond_channels = 6 if mode == "residual" else 3  # residual: [blur, g(blur)]
        self.unet = SR3UNet(3, cond_channels, 3, base_channels, channel_mults, num_res_blocks, attn_levels,
                            mid_attn, attn_heads, dropout, norm_groups)
        self.predictor: nn.Module | None = None
        if mode == "residual":  # "identity": diffuse sharp - blur (the blurry image is the initial estimate)
            self.predictor = nn.Identity() if predictor == "identity" else build_model(predictor, **(predictor_kwargs or {}))
        multiple = self.unet.size_multiple
        if self.predictor is not None:
            multiple = math.lcm(multiple, int(getattr(self.predictor, "size_multiple", 1)))
        self.size_multiple = multiple
        # clamp range of x0 estimates in diffusion space: images in [-1, 1]; residuals in [-2, 2] * scale
        self.clip = (1.0 if mode == "sr3" else 2.0 * self.residual_scale) if clip_x0 else None

    # -- pieces shared by training and sampling --
    def net(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Raw UNet output (eps | x0 | v) for timestep indices t (B,) float in [0, T-1]."""
        return self.unet(x_t, t.float() * (TIME_SCALE / self.num_train_steps), cond)

    forward = net

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
        """Training: (x0 to diffuse, condition, auxiliary loss or None); see diffusion.process."""
        cond, base = self.condition(blur)
        target = to_signed(sharp)
        if base is None:
            return target, cond, None
        aux = self.predictor_weight * F.l1_loss(to_unit(base), sharp) if self.predictor_weight > 0 else None
        return (target - base) * self.residual_scale, cond, aux

    # -- registry protocol --
    def noise_like(self, blur: torch.Tensor, generator: torch.Generator | None = None) -> NoiseField:
        """Noise for the full image ``blur`` (B,3,H,W): a lazily generated :class:`NoiseField`."""
        return new_noise_field(blur.shape[0], generator)

    @staticmethod
    def slice_noise(noise: NoiseField, box: tuple[int, int, int, int]) -> NoiseField:
        """The noise of the tile box = (y0, y1, x0, x1): same values as the full image there."""
        return noise.crop(box)

    @torch.inference_mode()
    def restore(self, blur: torch.Tensor, steps: int | None = None, sampler: str | None = None, eta: float = 0.0,
                num_samples: int = 1, noise: NoiseField | None = None, generator: torch.Generator | None = None,
                callback: Callable[[dict[str, Any]], None] | None = None, spacing: str = "trailing",
                timesteps: Sequence[float] | None = None, **_: Any) -> torch.Tensor:
        """Deblur (B,3,H,W) in [0,1] -> (B,3,H,W) in [0,1] by sampling the reverse process.

        steps: number of denoiser calls (default ``default_steps``), timesteps spaced by ``spacing``
        (or give ``timesteps`` explicitly); sampler: ddim | ddpm | sde; eta: DDIM noise (0 = deterministic);
        num_samples: draws averaged (DvSR's sample averaging); noise: a :class:`NoiseField` (tiling passes
        the slice for this tile) or None to draw one from ``generator``; callback: per-step hook, see
        :mod:`diffdeblur.diffusion.samplers` (adds "x0_image", "x_t_image", "sample").
        """
        sampler = sampler or self.default_sampler
        ts, noise = sampling_inputs(blur, self.num_train_steps, steps or self.default_steps, spacing, timesteps,
                                    noise, self.noise_like, generator)
        x, h, w = pad_to_multiple(blur, self.size_multiple)
        cond, base = self.condition(x)
        hp, wp = x.shape[-2:]
        denoise = make_denoiser(self.net, self.alpha_bar, self.objective, self.clip)

        def one_sample(k: int) -> torch.Tensor:
            def hook(info: dict[str, Any]) -> None:
                info = dict(info, sample=k,
                            x0_image=self.to_image(info["x0"], base)[..., :h, :w].clamp(0, 1),
                            x_t_image=self.to_image(info["x_t"], base)[..., :h, :w].clamp(0, 1))
                callback(info)
            x_T = noise.sample(k, 0, hp, wp, dtype=blur.dtype)
            out = run_sampler(sampler, denoise, x_T, ts, alpha_bar=self.alpha_bar, cond=cond, eta=eta,
                              noise=lambda i: noise.sample(k, i, hp, wp, dtype=blur.dtype),
                              callback=hook if callback is not None else None)
            return self.to_image(out, base)[..., :h, :w]

        return average_samples(one_sample, num_samples).clamp(0, 1)


# ---- presets -------------------------------------------------------------------------------------

def _register(name: str, description: str, **kwargs: Any) -> None:
    register_model(name, ConditionalDiffusion, description=description, kind="diffusion", **kwargs)


TINY = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn_levels=(), mid_attn=False,
            norm_groups=8, num_train_steps=100, default_steps=10)
SMALL = dict(base_channels=32, channel_mults=(1, 2, 4, 4), num_res_blocks=2, attn_levels=(), mid_attn=True,
             norm_groups=16, num_train_steps=1000, default_steps=20)
BASE = dict(base_channels=64, channel_mults=(1, 2, 4, 8, 8), num_res_blocks=2, attn_levels=(3,), mid_attn=True,
            dropout=0.2, norm_groups=32, num_train_steps=2000, beta_start=1e-6, beta_end=1e-2, default_steps=100)

_register("sr3-tiny", "Tiny SR3 conditional diffusion for tests (base 8, 2 levels, no attention, T=100)", **TINY)
_register("sr3-small", "CPU-sized SR3 conditional diffusion (base 32, mults 1,2,4,4, attention in the middle only)",
          **SMALL)
_register("sr3-base", "SR3 as published (base 64, mults 1,2,4,8,8, attention at level 3 = 16x16 on 128 crops, "
          "dropout 0.2, linear betas 1e-6..1e-2, T=2000)", **BASE)
_register("sr3-small-residual", "sr3-small diffusing the residual sharp - blur (identity predictor, no extra "
          "parameters): the blurry image is the starting estimate", mode="residual", predictor="identity", **SMALL)
_register("dvsr-tiny", "Tiny predict-and-refine diffusion (DvSR) for tests: nafnet-tiny + sr3-tiny residual",
          mode="residual", predictor="nafnet-tiny", **TINY)
_register("dvsr-small", "Predict-and-refine diffusion (DvSR): nafnet-small predictor + sr3-small residual denoiser",
          mode="residual", predictor="nafnet-small", **SMALL)
_register("dvsr-base", "DvSR-like: NAFNet width 32 predictor + SR3 base-32 residual denoiser, T=2000",
          mode="residual", predictor="nafnet-small", predictor_kwargs={"width": 32},
          **dict(BASE, base_channels=32))
