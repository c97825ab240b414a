"""Training data: sources of (blur, sharp) crops, mixed by weight, deterministic given a seed.

A *source* is an object with ``sample(rng, crop) -> dict`` returning ``"blur"`` and ``"sharp"``
float32 (crop, crop, 3) arrays in [0, 1] (optionally ``"partials"`` (K, crop, crop, 3)). Sources
are registered by name with :func:`register_source`; built-in ones:

- ``paired``: random crops of a paired folder (every layout ``eval`` reads);
- ``blur-kernels``: sharp photos convolved on the fly with a uniform blur kernel (kernels from an
  ``.npz`` file of 2-D arrays such as ``kernels_npy.npz``, or random linear motion kernels), plus
  Gaussian noise. This is the classic non-physical synthetic pair (blur applied in sRGB).

:class:`TrainPairs` draws item ``i`` from ``numpy.random.default_rng([seed, i])`` alone, so the
data of every step is fixed by (seed, step): training resumes exactly and DDP ranks shard the
global batch by index with no communication.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..config import DataSource
from ..errors import ConfigError, ImageError, UnknownNameError
from ..registry import check_keywords
from . import frames, synth_source  # noqa: F401  (register the frames source and those built on blur synthesis)
from .kernels import convolve, linear_motion_kernel
from .pairs import find_pairs
from .sources import _SOURCES, ImageCache, Source, random_crop_box, register_source, sharp_images

__all__ = ["ImageCache", "Source", "register_source", "sharp_images", "build_source", "PairedSource",
           "KernelBlurSource", "TrainPairs", "StepBatchSampler", "build_train_dataset"]


def build_source(spec: DataSource) -> Source:
    if spec.type not in _SOURCES:
        raise UnknownNameError(f"unknown data source type '{spec.type}'; known: {', '.join(sorted(_SOURCES))}")
    builder = _SOURCES[spec.type]
    check_keywords(builder, spec.options, f"data source '{spec.type}' ({spec.root})", "option", skip=("root",))
    return builder(spec.root, **spec.options)


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


@register_source("paired")
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


@register_source("blur-kernels")
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


def augment(sample: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The same random flip / 90-degree rotation for every image of a sample (H, W, C) or (K, H, W, C)."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = {}
    for key, arr in sample.items():
        axes = (-3, -2)
        a = np.rot90(arr, k, axes=axes)
        if flip:
            a = np.flip(a, axis=-2)
        out[key] = np.ascontiguousarray(a)
    return out


class TrainPairs(Dataset):
    """Infinite-index dataset of augmented crops mixed from several sources by weight.

    Item i is a dict of float32 tensors: "blur", "sharp" (3, crop, crop) and possibly "partials"
    (K, 3, crop, crop), determined by (seed, i) only.
    """

    def __init__(self, sources: list[Source], weights: list[float], crop: int, seed: int,
                 augment_data: bool = True) -> None:
        if len(sources) != len(weights) or not sources:
            raise ValueError("TrainPairs needs one weight per source")
        w = np.asarray(weights, dtype=np.float64)
        self.probs = w / w.sum()
        self.sources, self.crop, self.seed, self.augment = sources, crop, seed, augment_data

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(i)])
        src = self.sources[int(rng.choice(len(self.sources), p=self.probs))]
        sample = src.sample(rng, self.crop)
        if self.augment:
            sample = augment(sample, rng)
        return {k: torch.from_numpy(np.ascontiguousarray(np.moveaxis(v, -1, -3))) for k, v in sample.items()}


class StepBatchSampler(Sampler[list[int]]):
    """Yields, for steps start_step, start_step+1, ..., this rank's share of the global batch.

    Global batch of step s = indices [s*G, (s+1)*G); rank r takes [s*G + r*b, s*G + (r+1)*b)
    with b = G / world_size. So the data depends on (seed, step) only.
    """

    def __init__(self, global_batch: int, start_step: int = 0, rank: int = 0, world_size: int = 1,
                 steps: int | None = None) -> None:
        if global_batch % world_size:
            raise ConfigError(f"data.batch_size {global_batch} must be divisible by the number of processes {world_size}")
        self.g, self.b = global_batch, global_batch // world_size
        self.start, self.rank, self.steps = start_step, rank, steps

    def __iter__(self) -> Iterator[list[int]]:
        s = self.start
        while self.steps is None or s < self.steps:
            base = s * self.g + self.rank * self.b
            yield list(range(base, base + self.b))
            s += 1

    def __len__(self) -> int:
        return (self.steps - self.start) if self.steps is not None else 2 ** 62


def build_train_dataset(sources: tuple[DataSource, ...], crop: int, seed: int, cache: bool = True) -> TrainPairs:
    built = []
    for spec in sources:
        options: dict[str, Any] = dict(spec.options)
        if spec.type in ("paired", "blur-kernels", "frames"):
            options.setdefault("cache", cache)
        built.append(build_source(DataSource(spec.type, spec.root, spec.weight, options)))
    return TrainPairs(built, [s.weight for s in sources], crop, seed)
