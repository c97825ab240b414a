"""Training sources that crop image files as they are: ``paired`` (random aligned crops of a paired
folder) and ``blur-kernels`` (sharp photos convolved on the fly with a uniform blur kernel).

- ``paired``: random crops of a paired folder (every layout ``eval`` reads);
- ``blur-kernels``: sharp photos convolved on the fly with a uniform blur kernel (kernels from an
  ``.npz`` file of 2-D arrays such as ``kernels_npy.npz``, or random linear motion kernels), plus
  Gaussian noise. This is the classic non-physical synthetic pair (blur applied in sRGB).

Both return float32 (crop, crop, 3) arrays in [0, 1]; they are registered by name in
:data:`diffdeblur.data.BUILTIN_SOURCES`.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError, ImageError
from .kernels import convolve, linear_motion_kernel
from .pairs import find_pairs
from .sources import ImageCache, random_crop_box, sharp_images

__all__ = ["PairedSource", "KernelBlurSource", "blur_focused_box"]


def blur_focused_box(rng: np.random.Generator, blur: np.ndarray, sharp: np.ndarray, crop: int,
                     candidates: int) -> tuple[int, int]:
    """The most degraded of ``candidates`` uniformly drawn crop boxes (largest mean |blur - sharp|).

    In dynamic scenes most of a frame is nearly sharp, so uniform crops make the identity a strong
    local optimum; picking crops where the pair differs puts the moving, blurred regions in front
    of the model. ``blur``/``sharp``: (H, W, 3) uint8; returns the top-left corner (y, x)."""
    best, best_score = (0, 0), -1.0
    for _ in range(max(1, candidates)):
        y, x = random_crop_box(rng, blur.shape[0], blur.shape[1], crop)
        diff = np.abs(blur[y:y + crop, x:x + crop].astype(np.int16) - sharp[y:y + crop, x:x + crop])
        score = float(diff.mean())
        if score > best_score:
            best, best_score = (y, x), score
    return best


class PairedSource:
    """Random aligned crops from a paired folder.

    ``focus`` in [0, 1]: the share of crops chosen by :func:`blur_focused_box` among
    ``focus_candidates`` candidates; the rest are uniform crops.
    """

    def __init__(self, root: str, cache: bool = True, focus: float = 0.0, focus_candidates: int = 8) -> None:
        if not 0.0 <= focus <= 1.0:
            raise ConfigError(f"focus must be in [0, 1], got {focus}")
        pairs, _ = find_pairs(root)
        self.blur = ImageCache([p.blur for p in pairs], cache)
        self.sharp = ImageCache([p.sharp for p in pairs], cache)
        self.focus, self.focus_candidates = focus, focus_candidates

    def sample(self, rng: np.random.Generator, crop: int) -> dict[str, np.ndarray]:
        i = int(rng.integers(len(self.blur)))
        b, s = self.blur.get(i), self.sharp.get(i)
        if b.shape != s.shape:
            raise ImageError(f"{self.blur.paths[i]}: size {b.shape[1]}x{b.shape[0]} differs from its sharp "
                             f"image {s.shape[1]}x{s.shape[0]}")
        if self.focus > 0 and rng.random() < self.focus:
            y, x = blur_focused_box(rng, b, s, crop, self.focus_candidates)
        else:
            y, x = random_crop_box(rng, b.shape[0], b.shape[1], crop)
        return {"blur": b[y:y + crop, x:x + crop].astype(np.float32) / 255.0,
                "sharp": s[y:y + crop, x:x + crop].astype(np.float32) / 255.0}


class KernelBlurSource:
    """Sharp photos blurred by a uniform kernel (from ``kernels`` .npz, or random linear motion)."""

    def __init__(self, root: str, kernels: str = "", noise: float = 0.01, max_len: int = 21,
                 cache: bool = True) -> None:
        self.images = ImageCache(sharp_images(root), cache)
        self.kernels: list[np.ndarray] = []
        if kernels:
            try:
                with np.load(kernels) as npz:
                    self.kernels = [np.asarray(npz[k], dtype=np.float32) / float(np.sum(npz[k])) for k in sorted(npz.files)]
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{kernels}: cannot read blur kernels ({exc})") from None
        self.noise = noise
        self.max_len = max_len

    def sample(self, rng: np.random.Generator, crop: int) -> dict[str, np.ndarray]:
        img = self.images.get(int(rng.integers(len(self.images))))
        kernel = (self.kernels[int(rng.integers(len(self.kernels)))] if self.kernels
                  else linear_motion_kernel(rng, self.max_len))
        kh, kw = kernel.shape
        m = max(kh, kw)
        y, x = random_crop_box(rng, img.shape[0], img.shape[1], crop + m - 1)
        patch = img[y:y + crop + m - 1, x:x + crop + m - 1].astype(np.float32) / 255.0
        kpad = np.zeros((m, m), dtype=np.float32)
        kpad[(m - kh) // 2:(m - kh) // 2 + kh, (m - kw) // 2:(m - kw) // 2 + kw] = kernel
        blur = convolve(patch, kpad, mode="valid")
        half = (m - 1) // 2
        sharp = patch[half:half + crop, half:half + crop]
        sigma = rng.uniform(0, self.noise) if self.noise > 0 else 0.0
        blur = np.clip(blur + rng.normal(0, 1, blur.shape).astype(np.float32) * sigma, 0, 1)
        return {"blur": blur.astype(np.float32), "sharp": np.ascontiguousarray(sharp)}
