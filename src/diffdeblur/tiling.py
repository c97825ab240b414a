"""Any-size inference with overlapping tiles and smooth blending.

The image is cut into tiles of ``tile`` pixels that overlap by ``overlap`` pixels; each tile, grown by
a ``context`` margin that the network sees but whose output is dropped, is restored by ``fn`` and
blended with a separable raised-cosine weight that ramps from ~0 at a tile edge shared with a
neighbour to 1 at the end of the overlap (image borders keep weight 1). The output may be ``scale``
times the input's size (super-resolution): tiles map to boxes ``scale`` times larger and blend there.
Memory stays bounded by one grown tile on the device plus the (C', scale H, scale W) float32 output
on the CPU, a running weighted mean updated in place (the summed weight is separable and kept as 1-D
sums: no full-size weight map); where the tiles agree it keeps their value exactly.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from .errors import ConfigError

from .options import AUTO_TILE, AUTO_WHOLE_PIXELS, DEFAULT_OVERLAP

TileFn = Callable[[torch.Tensor, tuple[int, int, int, int]], torch.Tensor]


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
                show_progress: bool = False, desc: str = "tiles", *, scale: int = 1,
                context: int = 0) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``image`` and blend the results on the output grid.

    image: (1, C, H, W) float on the CPU (one copy: tiles are views of it). Tiles are ``tile`` x
    ``tile`` boxes (y0, y1, x0, x1) of the input grid that overlap their neighbours by ``overlap`` pixels;
    each is grown by ``context`` pixels on every side (clipped to the image) and
    ``fn(image[:, :, gy0:gy1, gx0:gx1], (gy0, gy1, gx0, gx1))`` gets that grown crop and its box (to
    slice per-pixel inputs, a mask or a noise field, the same way). It must return (1, C', scale *
    (gy1 - gy0), scale * (gx1 - gx0)), any device; only its part over the tile's own box is kept, so
    ``context`` at least the pixels a model's output depends on beyond a point makes tiled equal whole.
    ``tile`` <= 0 (or one tile covering the image) runs ``fn(image, (0, H, 0, W))`` once.
    Returns (1, C', scale * H, scale * W) float32 on the CPU.
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"tiled_apply expects a (1, C, H, W) tensor, got {tuple(image.shape)}")
    if scale < 1 or context < 0:
        raise ConfigError(f"tiled_apply needs scale >= 1 and context >= 0, got scale {scale}, context {context}")
    _, _, h, w = image.shape
    if tile <= 0 or (tile >= h and tile >= w):
        return _checked(fn(image, (0, h, 0, w)), h, w, scale).float().cpu()
    overlap = max(0, min(overlap, tile // 2))
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    # ramp only on sides that overlap a neighbouring tile, by the actual overlap there (both on the output
    # grid, scale x the input's); a tile's weight is ramp_y(y) * ramp_x(x) (positive over the tile)
    ramps_y = {y0: _ramp(scale * (min(y0 + tile, h) - y0), scale * _overlap_before(ys, y0, tile, h),
                         scale * _overlap_after(ys, y0, tile, h)) for y0 in ys}
    ramps_x = {x0: _ramp(scale * (min(x0 + tile, w) - x0), scale * _overlap_before(xs, x0, tile, w),
                         scale * _overlap_after(xs, x0, tile, w)) for x0 in xs}
    sum_x = torch.zeros(scale * w)
    for x0, r in ramps_x.items():
        sum_x[scale * x0:scale * x0 + len(r)] += r
    # The output is a running weighted mean, updated in place tile by tile (out += (result - out) * w / W,
    # W the weight summed so far): no normalising pass, and a pixel on which the tiles agree keeps their
    # value bit for bit (the first tile's t is exactly 1; then result - out is 0), so that, e.g., pixels a
    # mask leaves alone come out equal to the input. The tiles go row by row, so W is separable:
    # W = (ramps of the finished tile rows)(y) * sum_x(x) + ramp_y(y) * (ramps of this row's tiles so far)(x)
    # and only 1-D sums are held, no (H, W) weight map.
    out: torch.Tensor | None = None
    done_y = torch.zeros(scale * h)
    bar = tqdm(total=len(ys) * len(xs), desc=desc, disable=not show_progress, leave=False)
    for y0 in ys:
        y1, ry = min(y0 + tile, h), ramps_y[y0]
        gy0, gy1 = max(0, y0 - context), min(h, y1 + context)
        done_x = torch.zeros(scale * w)
        for x0 in xs:
            x1, rx = min(x0 + tile, w), ramps_x[x0]
            gx0, gx1 = max(0, x0 - context), min(w, x1 + context)
            grown = _checked(fn(image[:, :, gy0:gy1, gx0:gx1], (gy0, gy1, gx0, gx1)), gy1 - gy0, gx1 - gx0, scale)
            # the tile's own box, on the output grid (cropped on the device: only that part is copied back)
            result = grown[:, :, scale * (y0 - gy0):scale * (y1 - gy0), scale * (x0 - gx0):scale * (x1 - gx0)]
            result = result.float().cpu()
            del grown
            if out is None:
                out = torch.zeros(1, result.shape[1], scale * h, scale * w, dtype=torch.float32)
            rows, cols = slice(scale * y0, scale * y1), slice(scale * x0, scale * x1)
            done_x[cols] += rx
            summed = torch.outer(done_y[rows], sum_x[cols]).add_(torch.outer(ry, done_x[cols]))
            region = out[:, :, rows, cols]
            region += (result - region).mul_(torch.outer(ry, rx).div_(summed))
            bar.update(1)
        done_y[scale * y0:scale * y1] += ry
    bar.close()
    assert out is not None
    return out


def _checked(result: torch.Tensor, h: int, w: int, scale: int) -> torch.Tensor:
    """``result`` if it is (B, C', scale * h, scale * w); a ConfigError naming the sizes otherwise."""
    if result.ndim != 4 or tuple(result.shape[-2:]) != (scale * h, scale * w):
        got = f"{result.shape[-1]}x{result.shape[-2]}" if result.ndim == 4 else f"shaped {tuple(result.shape)}"
        raise ConfigError(f"a {w}x{h} input came back {got}, not {scale * w}x{scale * h} (scale {scale}): "
                          f"does the model declare its scale?")
    return result


def _overlap_before(starts: list[int], s: int, tile: int, size: int) -> int:
    i = starts.index(s)
    return 0 if i == 0 else max(0, min(starts[i - 1] + tile, size) - s)


def _overlap_after(starts: list[int], s: int, tile: int, size: int) -> int:
    i = starts.index(s)
    return 0 if i == len(starts) - 1 else max(0, min(s + tile, size) - starts[i + 1])
