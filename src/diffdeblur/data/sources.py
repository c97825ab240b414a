"""The data-source registry and what every source shares (image cache, crop boxes, sharp folders).

A *source* is an object with ``sample(rng, crop) -> dict`` returning ``"blur"`` and ``"sharp"``
float32 (crop, crop, 3) arrays in [0, 1] (optionally ``"partials"`` (K, crop, crop, 3)). Sources
register with :func:`register_source` (``register_source(name)(builder)``, or as a decorator); the
built-in ones are registered by :mod:`diffdeblur.data` from its table ``BUILTIN_SOURCES``.
This module imports no model code: loading data does not load the networks.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ..errors import ConfigError
from ..io import is_image_file, read_image
from ..registrar import name_registrar


class Source(Protocol):
    def sample(self, rng: np.random.Generator, crop: int) -> dict[str, np.ndarray]: ...


SourceBuilder = Callable[..., Source]
_SOURCES: dict[str, SourceBuilder] = {}


register_source = name_registrar(_SOURCES, "data source")


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def random_crop_box(rng: np.random.Generator, h: int, w: int, crop: int) -> tuple[int, int]:
    if h < crop or w < crop:
        raise ConfigError(f"image {w}x{h} is smaller than the training crop {crop}")
    return int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))


def sharp_images(root: str | os.PathLike) -> list[Path]:
    """Image files directly in ``root`` (sorted), or a clear error when there are none."""
    r = Path(root)
    if not r.is_dir():
        raise ConfigError(f"{r}: folder of sharp images not found")
    files = sorted(p for p in r.iterdir() if p.is_file() and is_image_file(p))
    if not files:
        raise ConfigError(f"{r}: no images found")
    return files


class ImageCache:
    """Decoded images kept as uint8 (a quarter of float32 memory), loaded lazily on first use."""

    def __init__(self, paths: list[Path], keep: bool = True) -> None:
        self.paths = paths
        self.keep = keep
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, i: int) -> np.ndarray:
        if i in self._cache:
            return self._cache[i]
        rgb, _ = read_image(self.paths[i])
        arr = _to_uint8(rgb)
        if self.keep:
            self._cache[i] = arr
        return arr
