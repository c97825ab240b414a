"""Small labelled image figures drawn with Pillow alone (no plotting library): a label on a thumbnail,
and a row of equally sized images side by side (the built-in example, the reverse-step traces)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] (H, W, 3) -> uint8; uint8 input is returned as it is."""
    return img if img.dtype == np.uint8 else np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def label(img: np.ndarray, text: str) -> Image.Image:
    """The image (uint8 or float in [0, 1], (H, W, 3)) with ``text`` in white on a black band, top left."""
    im = Image.fromarray(to_uint8(img))
    draw = ImageDraw.Draw(im)
    draw.rectangle([0, 0, min(im.width, 7 * len(text) + 6), 13], fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 255))
    return im


def side_by_side(images: Sequence[np.ndarray], labels: Sequence[str], gap: int = 4) -> np.ndarray:
    """One row of labelled images of equal size (H, W, 3) with ``gap`` white pixels between them:
    uint8 (H, n * W + (n - 1) * gap, 3)."""
    h, w = images[0].shape[:2]
    if any(im.shape[:2] != (h, w) for im in images):
        raise ValueError("side_by_side needs images of one size")
    row = Image.new("RGB", (len(images) * (w + gap) - gap, h), (255, 255, 255))
    for i, (im, text) in enumerate(zip(images, labels)):
        row.paste(label(im, text), (i * (w + gap), 0))
    return np.asarray(row)
