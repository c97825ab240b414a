"""Super-resolution pairs made from sharp photos: the ``sr`` training source, the held-out photos, val folders.

- :class:`SRSource` (``data.train[].type: sr``): random high-resolution crops of the photos under a folder
  (recursive), the low-resolution input made on the fly by :func:`downscale` (PIL's bicubic, antialiased when
  reducing, as MATLAB's ``imresize``), optionally after a random Gaussian blur and with Gaussian noise
  (``degradation: blur-noise``). It yields ``"input"`` (crop / scale)^2 and ``"target"`` crop^2 float32
  (H, W, 3) arrays in [0, 1]; the loader's flips and rotations (:func:`diffdeblur.data.datasets.augment`) turn both
  alike, and batches stack each key at its own size.
- :func:`bsds_holdout`: the 20 held-out BSDS500 training photos (``holdout: bsds20`` leaves them out of
  training; the SR benchmark and the val folders use them).
- :func:`write_sr_pairs`: a paired folder (``blur/`` = low resolution, ``sharp/`` = high resolution) that
  ``diffdeblur eval`` and training's validation read.

The whole protocol on uint8 images: a high-resolution image is cropped to a multiple of the scale
(:func:`modcrop`, MATLAB's ``modcrop``: the top-left part is kept) and reduced by PIL's BICUBIC.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..io import is_image_file, read_image, write_image
from .folders import paired_output
from .kernels import convolve
from .sources import ImageCache, _to_uint8, random_crop_box

__all__ = ["SRSource", "bsds_holdout", "photo_files", "downscale", "resize", "modcrop", "write_sr_pairs",
           "DEGRADATIONS", "HOLDOUTS"]

DEGRADATIONS = ("bicubic", "blur-noise")
HOLDOUT_EVERY = 10  # bsds20: every 10th photo of the sorted names (20 of BSDS500's 200 training photos)
BLUR_SIGMA = (0.2, 2.0)  # blur-noise: Gaussian blur sigma range at x4, in high-resolution pixels (x scale / 4)
NOISE_SIGMA = (0.0, 5.0 / 255.0)  # blur-noise: Gaussian noise sigma range on the low-resolution image
BLUR_TRUNCATE = 3.0  # the blur kernel's radius in sigmas
RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
              "nearest": Image.Resampling.NEAREST}


def bsds_holdout(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The held-out photos of ``paths``: the 10th, 20th, ... of them sorted by file name (the 20 held out of
    BSDS500's 200 training photos). Pure: reads no file; returns them as Paths, in that order."""
    ordered = sorted((Path(p) for p in paths), key=lambda p: (p.name, str(p)))
    return ordered[HOLDOUT_EVERY - 1::HOLDOUT_EVERY]


HOLDOUTS: dict[str, Callable[[Sequence[str | os.PathLike]], list[Path]]] = {"bsds20": bsds_holdout}


def photo_files(root: str | os.PathLike) -> list[Path]:
    """The image files under ``root``, recursively, sorted by path; a one-line ConfigError naming the folder when it
    is missing or holds none."""
    r = Path(root)
    if not r.is_dir():
        raise ConfigError(f"{r}: folder of photos not found")
    files = sorted(p for p in r.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise ConfigError(f"{r}: no images found (JPEG or PNG photos, searched recursively)")
    return files


def modcrop(rgb: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, C) -> its top-left (H - H mod scale, W - W mod scale) part (MATLAB's ``modcrop``)."""
    h, w = rgb.shape[:2]
    return rgb[:h - h % scale, :w - w % scale]


def resize(rgb: np.ndarray, height: int, width: int, method: str = "bicubic") -> np.ndarray:
    """(H, W, 3) uint8, or float in [0, 1] (quantised to 8 bits first), -> (height, width, 3) float32 in [0, 1] by
    PIL (``method``: bicubic | lanczos | nearest; PIL widens the kernel when reducing: antialiased)."""
    img = Image.fromarray(_to_uint8(rgb) if rgb.dtype != np.uint8 else rgb)
    out = img.resize((width, height), RESAMPLING[method])
    return np.asarray(out, dtype=np.float32) / 255.0


def downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """The low-resolution image of ``hr`` (H, W, 3) (uint8, or float in [0, 1]; sides multiples of ``scale``):
    PIL BICUBIC to (H / scale, W / scale), float32 in [0, 1]."""
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ConfigError(f"image {w}x{h} is not a multiple of the scale {scale} (crop it with modcrop)")
    return resize(hr, h // scale, w // scale, "bicubic")


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalised 2-D Gaussian, radius ceil(3 sigma): (2r + 1, 2r + 1) float32 summing to 1."""
    r = max(1, math.ceil(BLUR_TRUNCATE * sigma))
    g = np.exp(-np.arange(-r, r + 1, dtype=np.float64) ** 2 / (2 * sigma ** 2))
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float32)


class SRSource:
    """Random super-resolution crops of the photos under ``root`` (see the module docstring).

    ``scale``: 2 or more (the loader's ``crop`` must be a multiple of it); ``degradation``: ``bicubic`` (the
    high-resolution crop reduced by PIL's bicubic) or ``blur-noise`` (a Gaussian blur of sigma in
    [0.2, 2.0] x scale / 4 first, then the bicubic reduction, then Gaussian noise of sigma in [0, 5] / 255; no
    JPEG); ``holdout``: ``bsds20`` leaves out the photos :func:`bsds_holdout` holds out ("" keeps all);
    ``cache``: keep decoded photos in memory.
    """

    def __init__(self, root: str, scale: int = 4, degradation: str = "bicubic", holdout: str = "",
                 cache: bool = True) -> None:
        if scale < 2:
            raise ConfigError(f"sr source: scale must be 2 or more, got {scale}")
        if degradation not in DEGRADATIONS:
            raise ConfigError(f"sr source: unknown degradation '{degradation}' (known: {', '.join(DEGRADATIONS)})")
        if holdout and holdout not in HOLDOUTS:
            raise ConfigError(f"sr source: unknown holdout '{holdout}' (known: {', '.join(HOLDOUTS)})")
        files = photo_files(root)
        if holdout:
            held = set(HOLDOUTS[holdout](files))
            files = [p for p in files if p not in held]
            if not files:
                raise ConfigError(f"{root}: no images left after holdout '{holdout}'")
        self.images = ImageCache(files, cache)
        self.scale, self.degradation = scale, degradation

    def sample(self, rng: np.random.Generator, crop: int) -> dict[str, np.ndarray]:
        """``"input"`` (crop / scale, crop / scale, 3) and ``"target"`` (crop, crop, 3) float32 in [0, 1], drawn from
        ``rng`` alone (photo, box, then the degradation's parameters)."""
        s = self.scale
        if crop % s:
            raise ConfigError(f"sr source: data.crop {crop} is not a multiple of the scale {s}")
        img = self.images.get(int(rng.integers(len(self.images))))
        if self.degradation == "bicubic":
            y, x = random_crop_box(rng, img.shape[0], img.shape[1], crop)
            hr = img[y:y + crop, x:x + crop]
            return {"input": downscale(hr, s), "target": hr.astype(np.float32) / 255.0}
        kernel = gaussian_kernel(rng.uniform(*BLUR_SIGMA) * s / 4)
        m = kernel.shape[0] // 2  # a margin for the blur, so that the crop's border is blurred from real pixels
        y, x = random_crop_box(rng, img.shape[0], img.shape[1], crop + 2 * m)
        patch = img[y:y + crop + 2 * m, x:x + crop + 2 * m].astype(np.float32) / 255.0
        blurred = convolve(patch, kernel, mode="valid")  # (crop, crop, 3)
        lr = downscale(blurred, s)
        noise = rng.uniform(*NOISE_SIGMA)
        lr = np.clip(lr + rng.normal(0.0, 1.0, lr.shape).astype(np.float32) * noise, 0.0, 1.0)
        return {"input": lr.astype(np.float32), "target": np.ascontiguousarray(patch[m:m + crop, m:m + crop])}


def write_sr_pairs(photos: Sequence[str | os.PathLike], out_dir: str | os.PathLike, scale: int,
                   overwrite: bool = False) -> Path:
    """Write a paired folder of ``photos`` for evaluation: ``out_dir/sharp/NAME.png`` the photo cropped to a
    multiple of ``scale`` (:func:`modcrop`), ``out_dir/blur/NAME.png`` its :func:`downscale` (NAME: the photo's
    stem). The folder appears whole or not at all (:func:`diffdeblur.data.folders.paired_output`: an earlier
    folder is replaced only with ``overwrite``). One-line ConfigError for no photos or two of one name."""
    if not photos:
        raise ConfigError(f"{out_dir}: no photos to write")
    names = [Path(p).stem for p in photos]
    if len(set(names)) != len(names):
        raise ConfigError(f"{out_dir}: two photos share the name '{next(n for n in names if names.count(n) > 1)}'")
    with paired_output(out_dir, overwrite) as tmp:
        for sub in ("blur", "sharp"):
            (tmp / sub).mkdir()
        for path, name in zip(photos, names):
            rgb, _ = read_image(path)
            hr = modcrop(_to_uint8(rgb), scale)
            write_image(tmp / "sharp" / f"{name}.png", hr.astype(np.float32) / 255.0)
            write_image(tmp / "blur" / f"{name}.png", downscale(hr, scale))
    return Path(out_dir)
