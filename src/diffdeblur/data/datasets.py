"""Training data: sources of (blur, sharp) crops, mixed by weight, deterministic given a seed.

A *source* is an object with ``sample(rng, crop) -> dict`` returning ``"blur"`` and ``"sharp"``
float32 (crop, crop, 3) arrays in [0, 1] (optionally ``"partials"`` (K, crop, crop, 3)). Sources
are registered by name with :func:`register_source`; the built-in ones are listed, and registered,
in :data:`diffdeblur.data.BUILTIN_SOURCES` (``paired``, ``blur-kernels``: :mod:`.image_sources`;
``frames``: :mod:`.frames`; ``synth``, ``uniform-kernel``: :mod:`.synth_source`).

:class:`TrainPairs` draws item ``i`` from ``numpy.random.default_rng([seed, i])`` alone, so the
data of every step is fixed by (seed, step): training resumes exactly and DDP ranks shard the
global batch by index with no communication.
"""
from __future__ import annotations

import inspect
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..config import DataSource
from ..errors import ConfigError, UnknownNameError
from ..typecheck import check_keys, signature_target
from .image_sources import KernelBlurSource, PairedSource, blur_focused_box
from .sources import _SOURCES, ImageCache, Source, register_source, sharp_images

__all__ = ["ImageCache", "Source", "register_source", "sharp_images", "build_source", "PairedSource",
           "KernelBlurSource", "blur_focused_box", "TrainPairs", "StepBatchSampler", "build_train_dataset"]


def build_source(spec: DataSource) -> Source:
    if spec.type not in _SOURCES:
        raise UnknownNameError(f"unknown data source type '{spec.type}'; known: {', '.join(sorted(_SOURCES))}")
    builder = _SOURCES[spec.type]
    check_keys(builder, spec.options, f"data source '{spec.type}' ({spec.root})", "option", skip=("root",))
    return builder(spec.root, **spec.options)


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


def takes_cache(source_type: str) -> bool:
    """Whether the builder of data source ``source_type`` takes a ``cache`` option (keep decoded images in
    memory): paired, blur-kernels, frames, sr and inpaint do; an unknown type is left to :func:`build_source`."""
    builder = _SOURCES.get(source_type)
    return builder is not None and "cache" in inspect.signature(signature_target(builder)).parameters


def build_train_dataset(sources: tuple[DataSource, ...], crop: int, seed: int, cache: bool = True) -> TrainPairs:
    """The training dataset of ``sources`` (``data.train``); ``cache`` (``data.cache_images``) goes to every
    source whose builder takes it (:func:`takes_cache`), unless the source's own options set it."""
    built = []
    for spec in sources:
        options: dict[str, Any] = dict(spec.options)
        if takes_cache(spec.type):
            options.setdefault("cache", cache)
        built.append(build_source(DataSource(spec.type, spec.root, spec.weight, options)))
    return TrainPairs(built, [s.weight for s in sources], crop, seed)
