"""On-the-fly training sources built on blur synthesis (registered by name in :data:`diffdeblur.data.BUILTIN_SOURCES`).

- ``synth``: the physically motivated dynamic-scene generator of :mod:`diffdeblur.data.synth`
  (camera shake + moving foreground layers, integrated in linear light, sensor noise), rendered on
  a crop (plus the margin its motion needs) of a cached decoded photo, so a sample costs about as
  much as the crop, not the photo. Can return partial exposures for BlurDM-style supervision.
- ``uniform-kernel``: the naive baseline with the *same* length range and sensor noise: one random
  straight-line motion kernel convolved with the photo in sRGB (no linear light, no rotation, no
  moving objects, no highlights). Used by benchmarks/studies/synth_transfer.py.

Config example (``data.train`` entry)::

    - type: synth
      root: /path/to/sharp/photos
      options: {preset: gopro-like, partials: [1, 3, 6, 11], camera_length: [4, 20]}

Options: ``preset`` (gopro-like | mild | severe | camera-shake-only | real-like), ``partials`` (k values in
1..subframes), ``cache`` (keep decoded photos in memory), and any :class:`SynthPreset` field to
override (e.g. ``subframes``, ``layers``, ``shot_noise``).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from .exposure import srgb_to_linear
from .kernels import convolve
from .sources import ImageCache, sharp_images
from .synth import apply_sensor, crop_reflect, get_preset, render, sample_params
from .trajectories import splat_kernel


def _box(rng: np.random.Generator, h: int, w: int, crop: int) -> tuple[int, int, int, int]:
    """A random (y0, x0, crop, crop) window; photos smaller than the crop are mirrored to fill it."""
    return int(rng.integers(0, max(h - crop, 0) + 1)), int(rng.integers(0, max(w - crop, 0) + 1)), crop, crop


def synth_preset(name: str, overrides: dict[str, Any]):
    """:func:`.synth.get_preset`, its ValueErrors (unknown preset or option) as one-line ConfigErrors."""
    try:
        return get_preset(name, **overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class SynthSource:
    """Dynamic-scene synthetic pairs from a folder of sharp photos.

    ``sample(rng, crop)`` -> {"blur", "sharp": (crop, crop, 3) float32 in [0, 1]} plus
    "partials": (K, crop, crop, 3) when ``partials`` is given (the last k = subframes equals blur).
    """

    def __init__(self, root: str, preset: str = "gopro-like", partials: Sequence[int] = (), cache: bool = True,
                 **overrides: Any) -> None:
        self.preset = synth_preset(preset, overrides)
        self.partials = tuple(int(k) for k in partials)
        bad = [k for k in self.partials if not 1 <= k <= self.preset.subframes]
        if bad:
            raise ConfigError(f"synth partials must be in 1..{self.preset.subframes} (subframes), got {bad[0]}")
        self.images = ImageCache(sharp_images(root), cache)

    def sample(self, rng: np.random.Generator, crop: int) -> dict[str, np.ndarray]:
        n = len(self.images)
        i = int(rng.integers(n))
        image = self.images.get(i)
        box = _box(rng, image.shape[0], image.shape[1], crop)
        params = sample_params(rng, self.preset, crop, crop, allow_other=n > 1)
        other = None
        if any(lp.source == "other" for lp in params.layers):
            j = min(int(params.other_pick * (n - 1)), n - 2)
            other = self.images.get(j + (j >= i))
        res = render(image, params, box, other=other, partials=self.partials)
        out = {"blur": res.blur, "sharp": res.sharp}
        if self.partials:
            out["partials"] = res.partials
        return out


class UniformKernelSource:
    """Naive synthetic pairs: a random linear motion kernel (length from the preset's
    ``camera_length``), convolved in sRGB, then the preset's sensor noise and JPEG."""

    def __init__(self, root: str, preset: str = "gopro-like", cache: bool = True, **overrides: Any) -> None:
        self.preset = synth_preset(preset, overrides)
        self.images = ImageCache(sharp_images(root), cache)

    def sample(self, rng: np.random.Generator, crop: int) -> dict[str, np.ndarray]:
        p = self.preset
        image = self.images.get(int(rng.integers(len(self.images))))
        y0, x0, _, _ = _box(rng, image.shape[0], image.shape[1], crop)
        length = float(rng.uniform(*p.camera_length))
        angle = float(rng.uniform(0.0, math.pi))
        s = np.linspace(-length / 2, length / 2, max(2, int(math.ceil(length / 0.25)) + 1))
        kernel = splat_kernel(np.stack([s * math.cos(angle), s * math.sin(angle)], axis=1))
        r = kernel.shape[0] // 2
        canvas = crop_reflect(image, y0 - r, x0 - r, crop + 2 * r, crop + 2 * r).astype(np.float32) / 255.0
        blurred = convolve(canvas, kernel, mode="valid")
        shot, read = float(rng.uniform(*p.shot_noise)), float(rng.uniform(*p.read_noise))
        quality = int(rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1)) if rng.random() < p.jpeg_prob else 0
        noise = rng.standard_normal(blurred.shape, dtype=np.float32)
        blur = apply_sensor(srgb_to_linear(np.clip(blurred, 0.0, 1.0)), noise, shot, read, quality)
        return {"blur": blur, "sharp": np.ascontiguousarray(canvas[r:r + crop, r:r + crop])}


def build_synth(root: str, **options: Any) -> SynthSource:
    return SynthSource(root, **options)


def build_uniform_kernel(root: str, **options: Any) -> UniformKernelSource:
    return UniformKernelSource(root, **options)
