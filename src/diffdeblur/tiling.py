"""Any-size inference with overlapping tiles and smooth blending.

The image is cut into tiles of ``tile`` pixels that overlap by ``overlap`` pixels; each tile is
restored by ``fn`` and blended with a separable raised-cosine weight that ramps from ~0 at a tile
edge shared with a neighbour to 1 at the end of the overlap (image borders keep weight 1).
Memory stays bounded by one tile on the device plus one (C, H, W) float32 accumulator on the CPU
(the summed weight is separable and kept as two 1-D sums; the result is normalised in place).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from .errors import ConfigError

from .options import AUTO_TILE, AUTO_WHOLE_PIXELS, DEFAULT_OVERLAP

TileFn = Callable[[torch.Tensor, tuple[int, int, int, int]], torch.Tensor]
NORMALISE_ROWS = 256  # rows of the output normalised at once (bounds the temporary of the last pass)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering [0, size): stride tile - overlap, last tile flush with the end."""
    if tile >= size:
        return [0]
    stride = max(1, tile - overlap)
    n = math.ceil((size - tile) / stride) + 1
    starts = [min(i * stride, size - tile) for i in range(n)]
    return sorted(set(starts))


def resolve_tile(tile: int | str, height: int, width: int) -> int:
    """A tile size for an (height, width) image: an int as given; ``"auto"`` is 0 (the whole image, the
    fastest: no overlap is computed twice) up to :data:`AUTO_WHOLE_PIXELS` pixels, else :data:`AUTO_TILE`."""
    if isinstance(tile, str):
        if tile != "auto":
            raise ConfigError(f"tile must be 'auto', 0 (whole image) or a positive size, got '{tile}'")
        return 0 if height * width <= AUTO_WHOLE_PIXELS else AUTO_TILE
    return int(tile)


def check_tile(tile: int | str, overlap: int, multiple: int = 1) -> None:
    """ConfigError unless ``tile`` is 0 (whole image) or a size that tiles sensibly: more than twice
    ``overlap`` (each tile must add new pixels) and at least the model's ``multiple``."""
    if overlap < 0:
        raise ConfigError(f"overlap must be >= 0, got {overlap}")
    if isinstance(tile, str):
        resolve_tile(tile, 1, 1)  # 'auto' or an error
        tile = AUTO_TILE
    if tile < 0:
        raise ConfigError(f"tile must be 0 (whole image) or a positive size, got {tile}")
    if tile and tile <= 2 * overlap:
        raise ConfigError(f"tile {tile} must be larger than twice the overlap ({overlap}): use a larger tile, "
                          f"a smaller overlap, or tile 0 (whole image)")
    if tile and tile < multiple:
        raise ConfigError(f"tile {tile} is smaller than the model's size multiple {multiple}")


def count_tiles(h: int, w: int, tile: int, overlap: int) -> int:
    """How many tiles :func:`tiled_apply` runs on an (h, w) image."""
    if tile <= 0 or (tile >= h and tile >= w):
        return 1
    overlap = max(0, min(overlap, tile // 2))
    return len(tile_starts(h, tile, overlap)) * len(tile_starts(w, tile, overlap))


def reflect_index(size: int, target: int) -> torch.Tensor:
    """Indices 0..target-1 folded back into [0, size) by mirror reflection without repeating the edge
    (numpy's ``reflect``), repeated as often as needed: a side may grow past twice its size."""
    if size == 1:
        return torch.zeros(target, dtype=torch.long)
    i = torch.arange(target) % (2 * size - 2)
    return torch.where(i < size, i, 2 * size - 2 - i)


def pad_reflect(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., H, W) -> (..., height, width): pad bottom and right by reflection (any amount)."""
    h, w = image.shape[-2:]
    return image[..., reflect_index(h, height), :][..., reflect_index(w, width)]


def _ramp(length: int, lo_overlap: int, hi_overlap: int) -> torch.Tensor:
    """1-D blend weight: raised-cosine ramps over the first lo_overlap / last hi_overlap samples."""
    w = torch.ones(length, dtype=torch.float32)
    for n, sl in ((lo_overlap, slice(0, lo_overlap)), (hi_overlap, slice(length - hi_overlap, length))):
        if n > 0:
            r = torch.sin(0.5 * math.pi * (torch.arange(n, dtype=torch.float32) + 0.5) / n) ** 2
            w[sl] = r if sl.start == 0 else r.flip(0)
    return w


def tiled_apply(fn: TileFn, image: torch.Tensor, tile: int, overlap: int = DEFAULT_OVERLAP,
                show_progress: bool = False, desc: str = "tiles") -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``image`` and blend the results.

    image: (1, C, H, W) float on the CPU. fn(tile_tensor, (y0, y1, x0, x1)) must return a tensor
    of the same spatial size (any device). Returns (1, C', H, W) float32 on the CPU.
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"tiled_apply expects a (1, C, H, W) tensor, got {tuple(image.shape)}")
    _, _, h, w = image.shape
    if tile <= 0 or (tile >= h and tile >= w):
        return fn(image, (0, h, 0, w)).float().cpu()
    overlap = max(0, min(overlap, tile // 2))
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    # ramp only on sides that overlap a neighbouring tile, by the actual overlap there; a tile's weight is
    # ramp_y(y) * ramp_x(x) and the tiles form a grid, so the summed weight is the outer product of the
    # 1-D sums: no (H, W) weight map is held
    ramps_y = {y0: _ramp(min(y0 + tile, h) - y0, _overlap_before(ys, y0, tile, h), _overlap_after(ys, y0, tile, h))
               for y0 in ys}
    ramps_x = {x0: _ramp(min(x0 + tile, w) - x0, _overlap_before(xs, x0, tile, w), _overlap_after(xs, x0, tile, w))
               for x0 in xs}
    sum_y, sum_x = torch.zeros(h), torch.zeros(w)
    for y0, r in ramps_y.items():
        sum_y[y0:y0 + len(r)] += r
    for x0, r in ramps_x.items():
        sum_x[x0:x0 + len(r)] += r
    out: torch.Tensor | None = None
    boxes = [(y, min(y + tile, h), x, min(x + tile, w)) for y in ys for x in xs]
    for y0, y1, x0, x1 in tqdm(boxes, desc=desc, disable=not show_progress, leave=False):
        result = fn(image[:, :, y0:y1, x0:x1], (y0, y1, x0, x1)).float().cpu()
        if out is None:
            out = torch.zeros(1, result.shape[1], h, w, dtype=torch.float32)
        out[:, :, y0:y1, x0:x1] += result * (ramps_y[y0][:, None] * ramps_x[x0][None, :])
    assert out is not None
    inv_x = 1.0 / sum_x.clamp_min(1e-8)
    for r0 in range(0, h, NORMALISE_ROWS):  # in place, a band of rows at a time: no full-size temporary
        r1 = min(r0 + NORMALISE_ROWS, h)
        out[:, :, r0:r1].mul_((1.0 / sum_y[r0:r1].clamp_min(1e-8))[:, None] * inv_x[None, :])
    return out


def _overlap_before(starts: list[int], s: int, tile: int, size: int) -> int:
    i = starts.index(s)
    return 0 if i == 0 else max(0, min(starts[i - 1] + tile, size) - s)


def _overlap_after(starts: list[int], s: int, tile: int, size: int) -> int:
    i = starts.index(s)
    return 0 if i == len(starts) - 1 else max(0, min(s + tile, size) - starts[i + 1])
