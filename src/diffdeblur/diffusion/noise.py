"""Tiling-consistent noise for diffusion sampling: a lazily generated, seamless noise field.

The noise (:class:`NoiseField`) for sample k, step i, image b at pixel (y, x)
is a fixed function of (seed_b, k, i, y, x). The pixel grid is cut into fixed 64x64 blocks, each filled
by its own ``torch.Generator`` seeded with a hash of (seed_b, k, i, block row, block column). Any crop
(a tile) generates just the blocks it touches, so overlapping tiles see identical noise at every
step and no full-image noise tensor is ever stored (memory stays one tile per step).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

NOISE_BLOCK = 64  # side of the independently seeded noise blocks (see NoiseField)
_MASK64 = (1 << 64) - 1


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


def scaled_box(box: tuple[int, int, int, int], scale: int) -> tuple[int, int, int, int]:
    """The box on a grid ``scale`` times coarser that covers pixel box = (y0, y1, x0, x1).

    Latent models draw noise on the latent grid (scale 8); boxes whose origin is a multiple of
    ``scale`` map exactly, others are shifted by less than one coarse pixel. scale 1: ``box`` itself.
    """
    y0, y1, x0, x1 = box
    return y0 // scale, -(-y1 // scale), x0 // scale, -(-x1 // scale)
