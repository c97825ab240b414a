"""Render a moving layered scene over one exposure and integrate it in linear light.

The scene is a background (moved by the camera) and foreground layers in front of it (each moved
by its own object motion, then by the camera), composited back to front at every instant, so
nearer layers occlude farther ones. An exposure of ``n_subframes`` high-speed frames is rendered;
each sub-frame is itself the average of ``substeps`` instants, so that long motions give
continuous streaks instead of ghost copies. Warping is bilinear (``torch.nn.functional.grid_sample``).
All radiance here is linear RGB, float32, unbounded above (boosted highlights may exceed 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .trajectories import Motion, knot_times

MAX_PIXELS_PER_BATCH = 4_000_000  # instants x pixels warped in one grid_sample call (memory bound)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light (IEC 61966-2-1 transfer function), float32."""
    x = np.asarray(x, dtype=np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((np.maximum(x, 0.04045) + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] -> sRGB-encoded values in [0, 1], float32 (input is clipped to [0, 1])."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.maximum(x, 0.0031308) ** (1 / 2.4) - 0.055).astype(np.float32)


@dataclass(frozen=True)
class Layer:
    """A foreground layer on the canvas. texture: (H, W, 3) linear RGB; alpha: (H, W) in [0, 1]
    (its footprint at t = 0.5); motion: the object's own motion about ``centre`` (x, y) px."""

    texture: np.ndarray
    alpha: np.ndarray
    motion: Motion
    centre: tuple[float, float]


def subframe_times(n_subframes: int, substeps: int | Sequence[int]) -> list[np.ndarray]:
    """Instants of each sub-frame: sub-frame j covers [j/N, (j+1)/N) and is sampled at the centres
    of ``substeps[j]`` equal slices (one int = the same for all). Returns N arrays of float64."""
    steps = [int(substeps)] * n_subframes if np.isscalar(substeps) else [int(s) for s in substeps]
    if len(steps) != n_subframes or min(steps) < 1:
        raise ValueError(f"need {n_subframes} positive substep counts, got {steps}")
    return [(j + (np.arange(s) + 0.5) / s) / n_subframes for j, s in enumerate(steps)]


def _normalise(offset: float, size: int) -> np.ndarray:
    """3x3 map on one axis pair: pixel coordinate -> grid_sample coordinate of a window that starts
    at ``offset`` and spans ``size`` pixels (align_corners=False: pixel centres at (2i + 1) / size - 1)."""
    return np.array([2.0 / size, (2.0 * -offset + 1.0) / size - 1.0])


def _sampling_grid(inverse: np.ndarray, region: tuple[int, int, int, int],
                   source: tuple[int, int, int, int]) -> torch.Tensor:
    """Grid for grid_sample (align_corners=False).

    inverse: (T, 3, 3) maps from output pixel to source pixel, both in canvas coordinates.
    region: (y0, y1, x0, x1) output pixels to fill; source: (y0, y1, x0, x1) canvas window the
    sampled planes hold. Returns (T, y1 - y0, x1 - x0, 2).
    """
    rh, rw = region[1] - region[0], region[3] - region[2]
    sh, sw = source[1] - source[0], source[3] - source[2]
    (ax, bx), (ay, by) = _normalise(source[2], sw), _normalise(source[0], sh)
    to_src = np.array([[ax, 0, bx], [0, ay, by], [0, 0, 1.0]])
    (ox, px), (oy, py) = _normalise(region[2], rw), _normalise(region[0], rh)
    from_out = np.linalg.inv(np.array([[ox, 0, px], [0, oy, py], [0, 0, 1.0]]))
    theta = (to_src @ inverse @ from_out)[:, :2, :]  # normalised output -> normalised source
    return F.affine_grid(torch.from_numpy(theta.astype(np.float32)), [len(inverse), 1, rh, rw], align_corners=False)


def _warp(planes: torch.Tensor, inverse: np.ndarray, region: tuple[int, int, int, int],
          source: tuple[int, int, int, int], padding: str) -> torch.Tensor:
    """planes (1, C, h, w) holding canvas window ``source``; inverse (T, 3, 3) -> (T, C, rh, rw)."""
    _, c, h, w = planes.shape
    grid = _sampling_grid(inverse, region, source)
    return F.grid_sample(planes.expand(len(inverse), c, h, w), grid, mode="bilinear",
                         padding_mode=padding, align_corners=False)


class _Scene:
    """The scene prepared once for many instants: planes as tensors, each layer cropped to its
    footprint, and the canvas region each layer can reach during the exposure."""

    def __init__(self, background: np.ndarray, camera: Motion, layers: Sequence[Layer]) -> None:
        h, w, _ = background.shape
        self.size = (h, w)
        self.centre = ((w - 1) / 2.0, (h - 1) / 2.0)
        self.camera = camera
        self.background = torch.from_numpy(np.ascontiguousarray(background.transpose(2, 0, 1), dtype=np.float32))[None]
        self.layers = []
        knots = camera.forward_affine(knot_times(), self.centre)
        for layer in layers:
            ys, xs = np.nonzero(layer.alpha > 0)
            if len(ys) == 0:
                continue
            src = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
            premult = np.concatenate([layer.texture * layer.alpha[:, :, None], layer.alpha[:, :, None]], axis=2)
            planes = premult[src[0]:src[1], src[2]:src[3]].transpose(2, 0, 1)
            # footprint corners (pixel edges) moved by every knot's map -> the region to render
            corners = np.array([[x, y, 1.0] for x in (src[2] - 1, src[3]) for y in (src[0] - 1, src[1])])
            pos = corners @ (knots @ layer.motion.forward_affine(knot_times(), layer.centre)).transpose(0, 2, 1)
            region = (max(0, int(np.floor(pos[..., 1].min())) - 1), min(h, int(np.ceil(pos[..., 1].max())) + 2),
                      max(0, int(np.floor(pos[..., 0].min())) - 1), min(w, int(np.ceil(pos[..., 0].max())) + 2))
            if region[0] >= region[1] or region[2] >= region[3]:
                continue
            tensor = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32))[None]
            self.layers.append((layer, tensor, src, region))

    def render(self, times: np.ndarray) -> torch.Tensor:
        """(T,) instants -> (T, 3, H, W) float32 linear RGB composited back to front."""
        h, w = self.size
        cam = self.camera.forward_affine(np.asarray(times, dtype=np.float64), self.centre)  # (T, 3, 3)
        full = (0, h, 0, w)
        out = _warp(self.background, np.linalg.inv(cam), full, full, "reflection")
        for layer, planes, src, region in self.layers:
            fwd = cam @ layer.motion.forward_affine(np.asarray(times, dtype=np.float64), layer.centre)
            warped = _warp(planes, np.linalg.inv(fwd), region, src, "zeros")
            y0, y1, x0, x1 = region
            a = warped[:, 3:4]
            out[:, :, y0:y1, x0:x1] = warped[:, :3] + (1.0 - a) * out[:, :, y0:y1, x0:x1]  # premultiplied "over"
        return out


def render_instants(background: np.ndarray, camera: Motion, layers: Sequence[Layer],
                    times: np.ndarray) -> np.ndarray:
    """Composite the scene at each of ``times`` (T,) -> (T, H, W, 3) float32 linear RGB.

    background: (H, W, 3) linear RGB; the camera rotates / zooms about the canvas centre. Pixels
    whose source falls outside the canvas are filled by reflection (callers add a margin so that
    this never reaches the cropped output).
    """
    return _Scene(background, camera, layers).render(times).permute(0, 2, 3, 1).numpy()


def iter_subframes(background: np.ndarray, camera: Motion, layers: Sequence[Layer],
                   n_subframes: int, substeps: int | Sequence[int]) -> Iterator[np.ndarray]:
    """Yield the (H, W, 3) float32 linear sub-frames in time order; sub-frame j is the mean of
    ``substeps[j]`` instants spread evenly over its time slice. Only one sub-frame is held at a time."""
    h, w, _ = background.shape
    scene = _Scene(background, camera, layers)
    slices = subframe_times(n_subframes, substeps)
    times = np.concatenate(slices)
    owner = np.repeat(np.arange(n_subframes), [len(t) for t in slices])
    per_batch = max(1, MAX_PIXELS_PER_BATCH // (h * w))
    acc = torch.zeros((3, h, w), dtype=torch.float32)
    for s0 in range(0, len(times), per_batch):  # batches may span sub-frames; sums stay in time order
        batch = scene.render(times[s0:s0 + per_batch])
        for i, frame in enumerate(batch):
            acc += frame
            j = owner[s0 + i]
            if s0 + i + 1 == len(times) or owner[s0 + i + 1] != j:
                yield (acc / len(slices[j])).permute(1, 2, 0).numpy()
                acc = torch.zeros((3, h, w), dtype=torch.float32)


def render_subframes(background: np.ndarray, camera: Motion, layers: Sequence[Layer],
                     n_subframes: int, substeps: int | Sequence[int]) -> np.ndarray:
    """All sub-frames of :func:`iter_subframes` stacked: (n_subframes, H, W, 3) float32 linear RGB."""
    return np.stack(list(iter_subframes(background, camera, layers, n_subframes, substeps)))


def partial_exposures(subframes: Iterable[np.ndarray], ks: Sequence[int]) -> np.ndarray:
    """Average of the first k sub-frames for each k in ``ks`` -> (K, H, W, 3) float32.

    subframes: (N, H, W, 3) array or an iterable of (H, W, 3) linear RGB sub-frames in time order
    (consumed only up to max(ks)); k = N is the full blurred exposure. Accumulated in float64 in
    sub-frame order, so the result does not depend on thread count.
    """
    wanted = sorted({int(k) for k in ks})
    if wanted and wanted[0] < 1:
        raise ValueError(f"partial exposure k={wanted[0]} must be >= 1")
    sums: dict[int, np.ndarray] = {}
    acc = None
    count = 0
    for frame in subframes:
        if count == (wanted[-1] if wanted else 0):
            break
        acc = frame.astype(np.float64) if acc is None else acc + frame
        count += 1
        if count in wanted:
            sums[count] = (acc / count).astype(np.float32)
    missing = [k for k in wanted if k not in sums]
    if missing:
        raise ValueError(f"partial exposure k={missing[0]} is outside 1..{count} (the number of sub-frames)")
    if not ks:
        return np.zeros((0,), dtype=np.float32)
    return np.stack([sums[int(k)] for k in ks])


def displacement_field(camera: Motion, layers: Sequence[Layer], height: int, width: int,
                       t0: float = 0.0, t1: float = 1.0) -> np.ndarray:
    """(H, W, 2) float32 displacement (dx, dy) px, from time t0 to t1, of the scene point seen at
    each pixel of the sharp (t = 0.5) frame; the topmost layer with alpha >= 0.5 owns a pixel."""
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    pts = np.stack([xs, ys, np.ones_like(xs)], axis=-1)  # (H, W, 3)
    cam = camera.forward_affine(np.array([t0, t1]), centre)

    def move(m: np.ndarray) -> np.ndarray:
        return (pts @ m[1].T)[..., :2] - (pts @ m[0].T)[..., :2]

    field = move(cam)
    for layer in layers:
        fwd = cam @ layer.motion.forward_affine(np.array([t0, t1]), layer.centre)
        field = np.where((layer.alpha >= 0.5)[:, :, None], move(fwd), field)
    return field.astype(np.float32)
