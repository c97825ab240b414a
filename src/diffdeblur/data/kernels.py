"""Uniform blur kernels and their application (the classic, spatially invariant blur model)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def linear_motion_kernel(rng: np.random.Generator, max_len: float = 21.0, min_len: float = 3.0) -> np.ndarray:
    """A random straight-line motion kernel (odd size, sums to 1), rasterised with sub-pixel steps."""
    length = rng.uniform(min_len, max_len)
    angle = rng.uniform(0, np.pi)
    size = int(np.ceil(length)) | 1
    c = (size - 1) / 2
    s = np.linspace(-length / 2, length / 2, int(length * 4) + 1)
    return rasterise_path(c + s * np.cos(angle), c + s * np.sin(angle), size)


def rasterise_path(xs: np.ndarray, ys: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly splat equally weighted points (xs, ys) into a (size, size) kernel summing to 1."""
    k = np.zeros((size, size), dtype=np.float64)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for dy, dx, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < size) & (xx >= 0) & (xx < size)
        np.add.at(k, (yy[ok], xx[ok]), w[ok])
    return (k / k.sum()).astype(np.float32)


def convolve(image: np.ndarray, kernel: np.ndarray, mode: str = "reflect") -> np.ndarray:
    """Convolve an (H, W, 3) float image with a (kh, kw) kernel; output has the input's size
    (``mode`` pads the borders) or is 'valid' (``mode="valid"``)."""
    t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))[:, None]
    kh, kw = kernel.shape
    if mode != "valid":
        t = F.pad(t, (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2), mode=mode)
    w = torch.from_numpy(np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32))[None, None]
    return F.conv2d(t, w)[:, 0].permute(1, 2, 0).numpy()
