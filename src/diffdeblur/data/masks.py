"""Hole masks for object removal, the ``inpaint`` training source, and removal pairs on disk.

Masks are (H, W) bool arrays, True = hole (remove), drawn from a ``numpy.random.Generator`` alone (pure and
seeded: the same generator state gives the same mask):

- :func:`stroke_mask`: free-form strokes, random walks of thick lines with round joints (DeepFill v2's
  free-form masks, Yu et al., ICCV 2019, arXiv 1806.03589);
- :func:`box_mask`: axis-aligned boxes;
- :func:`object_mask`: object silhouettes: a segment-like region of ANOTHER photo (its smoothed, colour-quantised
  thumbnail, flood-filled from a random seed pixel), scaled, rotated and placed at random (as LaMa's and
  CoModGAN's object-shaped masks); without a photo, a smooth random star-shaped blob;
- :func:`random_mask`: a mix of them until the hole covers a fraction drawn from ``area``.

:class:`InpaintSource` (``type: inpaint`` in ``data.train``) crops sharp photos (any folder tree), draws a mask
per crop and yields ``{"input": photo with the hole blanked, "target": photo, "mask": (crop, crop, 1)}``.
:func:`write_removal_pairs` writes a validation / benchmark folder ``blur/`` (holed) + ``sharp/`` + ``mask/``,
which :func:`diffdeblur.evaluate.evaluate` reads (:func:`read_companion`). The 20 held-out BSDS500 photos
(``holdout: bsds20``) are those of :func:`diffdeblur.data.sr_pairs.bsds_holdout`.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import ConfigError, OutputError
from ..io import ImageInfo, is_image_file, read_image, write_image
from ..options import MASK_THRESHOLD
from .sources import ImageCache, random_crop_box
from .sr_pairs import HOLDOUTS, photo_files

MASK_KINDS = ("strokes", "boxes", "objects")
MASK_MIX = (0.4, 0.2, 0.4)  # how often random_mask draws each kind of piece
DEFAULT_AREA = (0.05, 0.40)  # hole fraction of a training mask
FILLS = ("zero", "mean")  # what the source writes into the hole of "input" (the networks never read it)
THUMB = 48  # side of the photo thumbnail that object silhouettes are cut from
MAX_PIECES = 40  # pieces random_mask tries before growing a box to reach the lower bound


# ---- the pieces ------------------------------------------------------------------------------------

def _canvas(h: int, w: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("L", (w, h), 0)
    return img, ImageDraw.Draw(img)


def stroke_mask(h: int, w: int, rng: np.random.Generator, area: float = 0.1) -> np.ndarray:
    """One free-form stroke of about ``area`` * h * w pixels: 3-9 vertices of a random walk (turns up to
    120 degrees), a brush 3-12 % of the shorter side wide, round joints. (h, w) bool."""
    side = min(h, w)
    width = max(2, int(round(rng.uniform(0.03, 0.12) * side)))
    vertices = int(rng.integers(3, 10))
    length = max(1.0, area * h * w / width) / (vertices - 1)
    img, draw = _canvas(h, w)
    y, x = rng.uniform(0, h), rng.uniform(0, w)
    angle = rng.uniform(0, 2 * math.pi)
    points = [(x, y)]
    for _ in range(vertices - 1):
        angle += rng.uniform(-2 * math.pi / 3, 2 * math.pi / 3)
        step = length * rng.uniform(0.7, 1.3)
        x = float(np.clip(x + step * math.cos(angle), 0, w - 1))
        y = float(np.clip(y + step * math.sin(angle), 0, h - 1))
        points.append((x, y))
    draw.line(points, fill=255, width=width)
    r = width / 2
    for px, py in points:  # round joints and ends
        draw.ellipse([px - r, py - r, px + r, py + r], fill=255)
    return np.asarray(img) > 0


def box_mask(h: int, w: int, rng: np.random.Generator, area: float = 0.1) -> np.ndarray:
    """One axis-aligned box of about ``area`` * h * w pixels, aspect ratio in [1/2, 2], placed at random
    (clipped to the image). (h, w) bool."""
    aspect = math.exp(rng.uniform(-math.log(2), math.log(2)))
    bh = int(np.clip(round(math.sqrt(area * h * w * aspect)), 1, h))
    bw = int(np.clip(round(area * h * w / bh), 1, w))
    y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
    mask = np.zeros((h, w), bool)
    mask[y:y + bh, x:x + bw] = True
    return mask


def _grow(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The 4-connected component of ``allowed`` around the True pixels of ``seed`` (repeated dilation)."""
    region = seed & allowed
    for _ in range(allowed.size):
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= allowed
        if np.array_equal(grown, region):
            break
        region = grown
    return region


def photo_silhouette(photo: np.ndarray, rng: np.random.Generator, tries: int = 8) -> np.ndarray | None:
    """A segment-like region of ``photo`` (H, W, 3) in [0, 1] or uint8, cropped to its bounding box (bool),
    or None when no try finds one: a random square of the photo as a :data:`THUMB`-pixel thumbnail,
    Gaussian-smoothed, colour-quantised to 3-5 levels per channel, flood-filled from a random seed pixel;
    kept when it covers 5-60 % of the thumbnail."""
    arr = np.asarray(photo)
    if arr.dtype != np.uint8:
        arr = np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8)
    h, w = arr.shape[:2]
    for _ in range(tries):
        side = int(rng.integers(max(1, min(h, w) // 3), min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        thumb = Image.fromarray(arr[y:y + side, x:x + side]).resize((THUMB, THUMB), Image.Resampling.BILINEAR)
        smooth = np.asarray(thumb.filter(ImageFilter.GaussianBlur(1.5)), np.float32) / 255.0
        levels = int(rng.integers(3, 6))
        q = np.minimum((smooth * levels).astype(np.int32), levels - 1)
        codes = (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]
        sy, sx = rng.integers(THUMB // 4, 3 * THUMB // 4, size=2)
        seed = np.zeros((THUMB, THUMB), bool)
        seed[sy, sx] = True
        region = _grow(seed, codes == codes[sy, sx])
        if 0.05 <= region.mean() <= 0.6:
            rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
            return region[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return None


def blob_silhouette(rng: np.random.Generator, size: int = THUMB) -> np.ndarray:
    """A smooth star-shaped blob (bool, size x size): radius 1 + a sum of three random harmonics of the angle."""
    theta = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    radius = np.ones_like(theta)
    for k in (2, 3, 5):
        radius += rng.uniform(0, 1.0 / k) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    radius = radius / radius.max() * (size / 2 - 1)
    img, draw = _canvas(size, size)
    draw.polygon(list(zip(size / 2 + radius * np.cos(theta), size / 2 + radius * np.sin(theta))), fill=255)
    return np.asarray(img) > 0


def object_mask(h: int, w: int, rng: np.random.Generator, area: float = 0.1,
                photo: np.ndarray | None = None) -> np.ndarray:
    """One object-shaped hole of about ``area`` * h * w pixels: the silhouette of a region of ``photo``
    (another photo than the one being masked; :func:`photo_silhouette`), or :func:`blob_silhouette` without
    one, scaled, rotated by any angle, mirrored at random and placed at random (partly off the image at
    times, as objects at the border are). (h, w) bool."""
    sil = photo_silhouette(photo, rng) if photo is not None else None
    if sil is None:
        sil = blob_silhouette(rng)
    scale = math.sqrt(area * h * w / max(1, int(sil.sum())))
    sh, sw = max(1, round(sil.shape[0] * scale)), max(1, round(sil.shape[1] * scale))
    img = Image.fromarray(sil.astype(np.uint8) * 255).resize((sw, sh), Image.Resampling.BILINEAR)
    img = img.rotate(float(rng.uniform(0, 360)), resample=Image.Resampling.BILINEAR, expand=True)
    piece = np.asarray(img) > 127
    if rng.random() < 0.5:
        piece = piece[:, ::-1]
    ph, pw = piece.shape
    y = int(rng.integers(-ph // 4, max(-ph // 4, h - 3 * ph // 4) + 1))
    x = int(rng.integers(-pw // 4, max(-pw // 4, w - 3 * pw // 4) + 1))
    mask = np.zeros((h, w), bool)
    y0, x0, y1, x1 = max(0, y), max(0, x), min(h, y + ph), min(w, x + pw)
    if y1 > y0 and x1 > x0:
        mask[y0:y1, x0:x1] = piece[y0 - y:y1 - y, x0 - x:x1 - x]
    return mask


def check_area(area: Sequence[float]) -> tuple[float, float]:
    """``area`` as (lo, hi) with 0 <= lo <= hi <= 1, else a one-line ConfigError."""
    try:
        lo, hi = (float(a) for a in area)
    except (TypeError, ValueError):
        raise ConfigError(f"area must be two fractions (lo, hi), got {area!r}") from None
    if not 0 <= lo <= hi <= 1:
        raise ConfigError(f"area must satisfy 0 <= lo <= hi <= 1, got ({lo}, {hi})")
    return lo, hi


def random_mask(h: int, w: int, rng: np.random.Generator, area: Sequence[float] = DEFAULT_AREA,
                photos: Sequence[np.ndarray] = (), kinds: Sequence[str] = MASK_KINDS) -> np.ndarray:
    """A hole mask (h, w) bool covering a fraction of the image in ``area`` = (lo, hi): a target is drawn
    uniformly in it and pieces of ``kinds`` (mixed as :data:`MASK_MIX`; objects cut from one of ``photos``,
    the other photos of the set, when given) are added, each sized to part of what is missing; a piece that
    would pass ``hi`` is dropped. If :data:`MAX_PIECES` pieces fall short of ``lo`` (tiny images), a box grows
    until it is reached. Reproducible: the same generator state gives the same mask."""
    lo, hi = check_area(area)
    unknown = [k for k in kinds if k not in MASK_KINDS]
    if unknown or not kinds:
        raise ConfigError(f"unknown mask kind '{unknown[0] if unknown else ''}' (known: {', '.join(MASK_KINDS)})")
    probs = np.array([MASK_MIX[MASK_KINDS.index(k)] for k in kinds])
    target = rng.uniform(lo, hi)
    mask = np.zeros((h, w), bool)
    for _ in range(MAX_PIECES):
        covered = mask.mean()
        if covered >= target:
            break
        part = max(target - covered, 1.0 / (h * w)) * rng.uniform(0.5, 1.1)
        kind = kinds[int(rng.choice(len(kinds), p=probs / probs.sum()))]
        if kind == "strokes":
            piece = stroke_mask(h, w, rng, part)
        elif kind == "boxes":
            piece = box_mask(h, w, rng, part)
        else:
            photo = photos[int(rng.integers(len(photos)))] if len(photos) else None
            piece = object_mask(h, w, rng, part, photo)
        grown = mask | piece
        if grown.mean() <= hi:
            mask = grown
    if mask.mean() < lo:  # a box grown from a random centre until the lower bound holds
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        for r in range(max(h, w)):
            grown = mask.copy()
            grown[max(0, cy - r):cy + r + 1, max(0, cx - r):cx + r + 1] = True
            if grown.mean() >= lo:
                return grown
        return np.ones((h, w), bool)
    return mask


# ---- the training source ---------------------------------------------------------------------------

def holed(photo: np.ndarray, mask: np.ndarray, fill: str = "zero") -> np.ndarray:
    """``photo`` (H, W, 3) float32 with the hole ``mask`` (H, W) bool blanked: 0, or the mean colour of the
    rest (``fill="mean"``). Outside the hole the values are the photo's own."""
    if fill not in FILLS:
        raise ConfigError(f"unknown hole fill '{fill}' (known: {', '.join(FILLS)})")
    value = photo[~mask].mean(axis=0) if fill == "mean" and (~mask).any() else np.zeros(3, photo.dtype)
    return np.where(mask[..., None], value.astype(photo.dtype), photo)


class InpaintSource:
    """Random crops of the sharp photos under ``root`` (sub-folders included), each with its own hole.

    ``holdout``: "bsds20" leaves out :func:`~diffdeblur.data.sr_pairs.bsds_holdout` (the benchmarks' 20 photos),
    "" keeps all;
    ``area``: the hole fraction range of :func:`random_mask`; ``fill``: what "input" holds in the hole
    (:func:`holed`); object silhouettes come from another photo of the folder. ``sample(rng, crop)`` ->
    "input", "target" (crop, crop, 3) and "mask" (crop, crop, 1) float32 in [0, 1] (flips and rotations are
    added by :class:`diffdeblur.data.datasets.TrainPairs`)."""

    def __init__(self, root: str, holdout: str = "", area: Sequence[float] = DEFAULT_AREA, fill: str = "zero",
                 cache: bool = True) -> None:
        if holdout and holdout not in HOLDOUTS:
            raise ConfigError(f"unknown holdout '{holdout}' (known: {', '.join(HOLDOUTS)}, or '' for none)")
        if fill not in FILLS:
            raise ConfigError(f"unknown hole fill '{fill}' (known: {', '.join(FILLS)})")
        files = photo_files(root)
        if holdout:
            held = set(HOLDOUTS[holdout](files))
            files = [f for f in files if f not in held]
        self.images = ImageCache(files, cache)
        self.area, self.fill = check_area(area), fill

    def sample(self, rng: np.random.Generator, crop: int) -> dict[str, np.ndarray]:
        n = len(self.images)
        i = int(rng.integers(n))
        img = self.images.get(i)
        y, x = random_crop_box(rng, img.shape[0], img.shape[1], crop)
        photo = img[y:y + crop, x:x + crop].astype(np.float32) / 255.0
        other = self.images.get((i + 1 + int(rng.integers(n - 1))) % n) if n > 1 else img
        mask = random_mask(crop, crop, rng, self.area, photos=[other])
        return {"input": holed(photo, mask, self.fill), "target": photo,
                "mask": mask[..., None].astype(np.float32)}


# ---- removal pairs on disk -------------------------------------------------------------------------

def mask_values(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """(H, W) float: the mean of the colour channels, times alpha where there is one (transparent = keep)."""
    value = rgb.mean(axis=2)
    return value * alpha if alpha is not None else value


def read_companion(blur_path: str | os.PathLike, name: str = "mask") -> np.ndarray:
    """The per-pixel input ``name`` of a pair: ``<root>/<name>/<stem>.*`` beside ``<root>/blur/<stem>.*``,
    read as (H, W) bool by the rule of every removal mask (:func:`mask_values` above :data:`MASK_THRESHOLD`). A
    one-line ConfigError when absent."""
    p = Path(blur_path)
    folder = p.parent.parent / name
    found = sorted(f for f in folder.glob(f"{p.stem}.*") if is_image_file(f)) if folder.is_dir() else []
    if not found:
        raise ConfigError(f"{p}: no {name}/{p.stem}.png beside its folder (the model needs a per-pixel {name})")
    rgb, info = read_image(found[0])
    return mask_values(rgb, info.alpha) > MASK_THRESHOLD


def write_removal_pairs(photos: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                        area: Sequence[float] = (0.10, 0.25), seed: int = 0) -> Path:
    """Write ``out_dir/{blur,sharp,mask}/<stem>.png`` for every photo: the photo with a hole (blanked to 0),
    the photo, and the hole (white = remove). Photo i's mask is :func:`random_mask` from
    ``default_rng([seed, i])`` with objects cut from photo i + 1 (fixed by the seed and the photo order).
    The folder appears whole or not at all (written beside it, then renamed); an existing ``out_dir`` is a
    one-line OutputError. Returns ``out_dir``."""
    out = Path(out_dir)
    if out.exists():
        raise OutputError(f"{out}: already exists; choose another folder or remove it")
    paths = [Path(p) for p in photos]
    if not paths:
        raise ConfigError("write_removal_pairs: no photos given")
    if len({p.stem for p in paths}) != len(paths):
        raise ConfigError("write_removal_pairs: photos must have distinct file names")
    area = check_area(area)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for sub in ("blur", "sharp", "mask"):
            (tmp / sub).mkdir()
        for i, path in enumerate(paths):
            photo = read_image(path)[0]
            other = read_image(paths[(i + 1) % len(paths)])[0]
            mask = random_mask(photo.shape[0], photo.shape[1], np.random.default_rng([seed, i]), area, photos=[other])
            write_image(tmp / "blur" / f"{path.stem}.png", holed(photo, mask))
            write_image(tmp / "sharp" / f"{path.stem}.png", photo)
            write_image(tmp / "mask" / f"{path.stem}.png", np.repeat(mask[..., None], 3, 2).astype(np.float32),
                        ImageInfo(grey=True))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


__all__ = ["MASK_KINDS", "stroke_mask", "box_mask", "object_mask", "photo_silhouette",
           "blob_silhouette", "random_mask", "InpaintSource", "holed", "read_companion", "write_removal_pairs"]
