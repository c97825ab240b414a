"""The built-in examples.

- :func:`builtin_example`: the one ``diffdeblur deblur`` runs when no input is given, a small crop of
  a real blurry frame and its sharp reference shipped in the package (``examples/``, with its credit
  and licence in ``examples/CREDITS.md``), chosen by ``benchmarks/studies/example_crop.py``.
- :func:`example_pair`: a procedural scene blurred by a motion kernel, made on the fly at any size,
  for the tests and the benchmarks (nothing downloaded, any size, any seed).
"""
from __future__ import annotations

import json
from importlib import resources

import numpy as np

from .data.kernels import convolve, rasterise_path
from .io import read_image


def builtin_example() -> tuple[np.ndarray, np.ndarray, dict]:
    """(blurry, sharp, source) of the shipped real example: float32 (H, W, 3) arrays in [0, 1] and
    a dict naming the dataset, the frame and the crop box it was cut from."""
    folder = resources.files("diffdeblur") / "examples"
    with resources.as_file(folder / "blur.png") as b, resources.as_file(folder / "sharp.png") as s:
        blur, sharp = read_image(b)[0], read_image(s)[0]
    return blur, sharp, json.loads((folder / "source.json").read_text())


def procedural_scene(height: int = 256, width: int = 384, seed: int = 0) -> np.ndarray:
    """A sharp synthetic scene with edges, textures and smooth shading: float32 (H, W, 3) in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), dtype=np.float32)
    top, bottom = rng.uniform(0.2, 0.9, 3), rng.uniform(0.1, 0.6, 3)
    a = (yy / max(1, height - 1))[:, :, None]
    img[:] = (1 - a) * top + a * bottom
    n_shapes = max(6, (height * width) // 6000)
    for _ in range(n_shapes):
        colour = rng.uniform(0, 1, 3).astype(np.float32)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(0.03, 0.15) * min(height, width)
        kind = rng.integers(3)
        if kind == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
        elif kind == 1:
            mask = (np.abs(yy - cy) < r * rng.uniform(0.3, 1)) & (np.abs(xx - cx) < r)
        else:  # striped patch: fine texture that blur destroys
            period = rng.uniform(3, 9)
            mask = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r) & (np.sin((xx + yy) / period * np.pi) > 0)
        img[mask] = colour
    img += rng.normal(0, 0.01, img.shape).astype(np.float32)  # a little sensor-like grain
    return np.clip(img, 0, 1)


def shake_kernel(seed: int = 0, size: int = 17) -> np.ndarray:
    """A curved camera-shake kernel (smooth random walk), sums to 1."""
    rng = np.random.default_rng(seed)
    n = 64
    vel = np.cumsum(rng.normal(0, 1, (n, 2)), axis=0)
    pos = np.cumsum(vel, axis=0)
    pos -= pos.mean(axis=0)
    pos *= (size * 0.4) / max(1e-6, np.abs(pos).max())
    c = (size - 1) / 2
    return rasterise_path(c + pos[:, 0], c + pos[:, 1], size)


def example_pair(height: int = 256, width: int = 384, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(blurry, sharp) float32 (H, W, 3) arrays in [0, 1]: the scene blurred by a shake kernel."""
    sharp = procedural_scene(height, width, seed)
    blur = np.clip(convolve(sharp, shake_kernel(seed), mode="reflect"), 0, 1)
    return blur.astype(np.float32), sharp
