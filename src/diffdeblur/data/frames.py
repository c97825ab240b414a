"""Real blur from high-speed frames: the GoPro / REDS protocol.

A camera exposure integrates light over time; a high-speed video samples that integral. Averaging
N consecutive frames *in linear light* therefore gives a real dynamic-scene blurry image, and the
middle frame is its sharp reference (Nah, Kim, Lee, "Deep Multi-scale Convolutional Neural
Network for Dynamic Scene Deblurring", CVPR 2017, Sec. 3, Eq. (1)-(2); REDS, Nah et al., CVPRW
2019, the same with frame interpolation first):

    B = g( (1/N) * sum_{i=0}^{N-1} g^{-1}(S_i) ),   g(x) = x^(1/gamma),  gamma = 2.2
    sharp = S_{N // 2}

with S_i the sRGB frames in [0, 1]. GoPro averaged N = 7..13 frames at 240 fps; the pairs in
``gopro_more`` were made with this formula and N = 8 or 10. The *partial exposures* (the blurred
image after 1, 2, ..., N frames) are the running means of the same sum.

Everything here is float32 RGB in [0, 1], (H, W, 3) per frame; see ``docs/methods/frames.md``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from ..io import atomic_write_bytes, is_image_file, write_image
from .folders import META_FILE, paired_output
from .sources import ImageCache, random_crop_box

DEFAULT_GAMMA = 2.2


def check_gamma(gamma: float) -> float:
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not 0.1 <= float(gamma) <= 10.0:
        raise ConfigError(f"gamma must be a number in [0.1, 10], got {gamma!r}")
    return float(gamma)


def to_linear(frame: np.ndarray, gamma: float = DEFAULT_GAMMA) -> np.ndarray:
    """sRGB-like values in [0, 1] (any shape; uint8 is read as /255) -> linear light, float32."""
    x = frame.astype(np.float32) / 255.0 if frame.dtype == np.uint8 else np.asarray(frame, np.float32)
    return np.power(np.clip(x, 0.0, 1.0), np.float32(gamma))


def from_linear(linear: np.ndarray, gamma: float = DEFAULT_GAMMA) -> np.ndarray:
    """Inverse of :func:`to_linear`: linear light -> values in [0, 1], float32."""
    return np.power(np.clip(linear, 0.0, 1.0), np.float32(1.0 / gamma)).astype(np.float32)


def average_frames(frames: Sequence[np.ndarray], gamma: float = DEFAULT_GAMMA) -> np.ndarray:
    """The blurred image of an exposure made of ``frames`` (N arrays (H, W, 3), uint8 or float in
    [0, 1], equal shapes): the gamma-domain mean of Nah et al. 2017, Eq. (2). Returns float32."""
    if len(frames) == 0:
        raise ConfigError("need at least one frame to average")
    acc = np.zeros(frames[0].shape, np.float32)
    for f in frames:
        if f.shape != acc.shape:
            raise ConfigError(f"frames differ in size: {f.shape[1]}x{f.shape[0]} vs {acc.shape[1]}x{acc.shape[0]}")
        acc += to_linear(f, gamma)
    return from_linear(acc / len(frames), gamma)


def centred_exposures(frames: Sequence[np.ndarray], parts: int, gamma: float = DEFAULT_GAMMA) -> np.ndarray:
    """The exposure grown around its sharp middle frame in ``parts`` steps: (parts, H, W, 3) float32, item j the
    linear-light mean (as :func:`average_frames`) of the c_j = max(1, round(N (j + 1) / parts)) frames centred on frame
    N // 2 (the pair's sharp reference; the window is shifted inwards where it would leave the exposure). Item
    ``parts - 1`` is the whole blurred image, and c_j -> 1 is the sharp frame itself: the path from the sharp image
    to the blurred one that BlurDM's blur residuals follow, at the fractions (j + 1) / parts of the exposure."""
    n, mid = len(frames), len(frames) // 2
    # every frame to linear light once; a window's sum is a difference of running sums (float64)
    sums = np.cumsum(np.stack([to_linear(f, gamma) for f in frames]).astype(np.float64), axis=0)
    sums = np.concatenate([np.zeros_like(sums[:1]), sums])
    out = []
    for j in range(parts):
        c = max(1, round(n * (j + 1) / parts))
        start = min(max(0, mid - (c - 1) // 2), n - c)
        out.append(from_linear(((sums[start + c] - sums[start]) / c).astype(np.float32), gamma))
    return np.stack(out)


def sharp_index(start: int, n: int) -> int:
    """Index of the sharp reference of the exposure of frames [start, start + n): the middle one."""
    return start + n // 2


def parse_frame_range(text: str) -> tuple[int, int]:
    """'7:13' -> (7, 13) (both inclusive numbers of averaged frames); '9' -> (9, 9)."""
    try:
        parts = [int(p) for p in str(text).split(":")]
    except ValueError:
        raise ConfigError(f"frames must be N or LO:HI (numbers of averaged frames), got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    lo, hi = parts if len(parts) == 2 else (0, -1)
    if not 1 <= lo <= hi:
        raise ConfigError(f"frames must be N or LO:HI with 1 <= LO <= HI, got {text!r}")
    return lo, hi


def frame_files(root: str | os.PathLike, min_frames: int = 1) -> list[Path]:
    """The consecutive frames of a folder, sorted by name. Every file must be an image: a stray file
    in a frames folder would silently break the time order, so it is an error, not skipped."""
    r = Path(root)
    if not r.is_dir():
        raise ConfigError(f"{r}: folder of frames not found")
    files = sorted(p for p in r.iterdir() if p.is_file() and not p.name.startswith("."))
    bad = [p.name for p in files if not is_image_file(p)]
    if bad:
        raise ConfigError(f"{r}: not an image file among the frames: {bad[0]}"
                          + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    if len(files) < min_frames:
        raise ConfigError(f"{r}: {len(files)} frames found, need at least {min_frames}")
    return files


class FramesSource:
    """Real blur pairs made on the fly from consecutive high-speed frames (the GoPro protocol).

    ``root``: a folder of consecutive frames (sorted by name). Each sample draws N uniformly in
    [``min_frames``, ``max_frames``] and a start, crops one box from every frame, averages them in
    linear light (:func:`average_frames`) and pairs the result with the middle frame.
    ``focus`` in [0, 1]: the share of crops picked as the most blurred of ``focus_candidates``
    boxes (as the ``paired`` source does). ``partials`` > 0 also returns ``"partials"``
    (partials, crop, crop, 3): the exposure grown around the sharp middle frame to the fractions 1/partials,
    2/partials, ..., 1 of its frames (:func:`centred_exposures`; the last one is the blurred image), the targets of
    BlurDM's explicit partial-exposure supervision (``partials`` = its T).
    """

    def __init__(self, root: str, min_frames: int = 7, max_frames: int = 13, gamma: float = DEFAULT_GAMMA,
                 focus: float = 0.0, focus_candidates: int = 8, partials: int = 0, cache: bool = True) -> None:
        if not 1 <= min_frames <= max_frames:
            raise ConfigError(f"frames source {root}: need 1 <= min_frames <= max_frames, "
                              f"got {min_frames}, {max_frames}")
        if not 0.0 <= focus <= 1.0:
            raise ConfigError(f"focus must be in [0, 1], got {focus}")
        if partials < 0:
            raise ConfigError(f"partials must be >= 0, got {partials}")
        self.frames = ImageCache(frame_files(root, max_frames), cache)
        self.min_frames, self.max_frames, self.gamma = min_frames, max_frames, check_gamma(gamma)
        self.focus, self.focus_candidates, self.partials = focus, focus_candidates, partials

    def _crops(self, start: int, n: int, y: int, x: int, crop: int) -> list[np.ndarray]:
        crops = []
        for i in range(start, start + n):
            f = self.frames.get(i)
            if i == start:
                shape = f.shape
            elif f.shape != shape:
                raise ConfigError(f"{self.frames.paths[i]}: size {f.shape[1]}x{f.shape[0]} differs from "
                                  f"{self.frames.paths[start].name} ({shape[1]}x{shape[0]})")
            crops.append(f[y:y + crop, x:x + crop])
        return crops

    def sample(self, rng: np.random.Generator, crop: int) -> dict[str, np.ndarray]:
        n = int(rng.integers(self.min_frames, self.max_frames + 1))
        start = int(rng.integers(0, len(self.frames) - n + 1))
        h, w = self.frames.get(start).shape[:2]
        if self.focus > 0 and rng.random() < self.focus:
            best, best_score = None, -1.0
            for _ in range(max(1, self.focus_candidates)):
                y, x = random_crop_box(rng, h, w, crop)
                # cheap proxy of the blur of a box: mean |first - last| frame of the exposure
                a = self.frames.get(start)[y:y + crop, x:x + crop].astype(np.int16)
                b = self.frames.get(start + n - 1)[y:y + crop, x:x + crop]
                score = float(np.abs(a - b).mean())
                if score > best_score:
                    best, best_score = (y, x), score
            y, x = best
        else:
            y, x = random_crop_box(rng, h, w, crop)
        crops = self._crops(start, n, y, x, crop)
        out = {"blur": average_frames(crops, self.gamma),
               "sharp": crops[n // 2].astype(np.float32) / 255.0}
        if self.partials:
            out["partials"] = centred_exposures(crops, self.partials, self.gamma)
        return out


def frame_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file from its header; one-line ImageError when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    from ..errors import ImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError) as exc:
        raise ImageError(f"{path}: cannot read image ({exc.__class__.__name__})") from None


def plan_exposures(n_files: int, lo: int, hi: int, seed: int, stride: int = 0) -> list[tuple[int, int]]:
    """(start, N) of the exposures cut from ``n_files`` consecutive frames: back to back from the first
    frame (or every ``stride`` frames when stride > 0), each N drawn uniformly from [lo, hi] by a
    generator seeded with ``seed`` (fixed when lo == hi); the last exposure that does not fit is dropped."""
    rng = np.random.default_rng(seed)
    out, start = [], 0
    while True:
        n = int(rng.integers(lo, hi + 1))
        if start + n > n_files:
            return out
        out.append((start, n))
        start += stride if stride > 0 else n


def synthesize_from_frames(frames_dir: str | os.PathLike, out: str | os.PathLike, frames: str | tuple[int, int] = "7:13",
                           gamma: float = DEFAULT_GAMMA, seed: int = 0, stride: int = 0,
                           overwrite: bool = False) -> list[dict]:
    """Write real blur pairs made from consecutive frames: OUT/blur/NAME.png, OUT/sharp/NAME.png and
    OUT/meta.jsonl (one record per pair: name, source frames, N, gamma, start, sharp frame).

    Every input is checked before anything is written (every file an image, equal sizes, at least
    ``lo`` frames); the pairs are made in a temporary folder beside OUT and moved in at the end, so a
    failed run leaves OUT as it was. An OUT that holds pairs of an earlier run is refused unless
    ``overwrite`` (both as :func:`diffdeblur.data.folders.paired_output`, the rule of every paired
    folder the package writes). Returns the records of meta.jsonl."""
    lo, hi = parse_frame_range(frames) if isinstance(frames, str) else frames
    if not 1 <= lo <= hi:
        raise ConfigError(f"frames must satisfy 1 <= LO <= HI, got {lo}:{hi}")
    gamma = check_gamma(gamma)
    if stride < 0:
        raise ConfigError(f"stride must be >= 0, got {stride}")
    files = frame_files(frames_dir, lo)
    sizes = {p: frame_size(p) for p in files}
    first = sizes[files[0]]
    for p, s in sizes.items():
        if s != first:
            raise ConfigError(f"{p}: size {s[0]}x{s[1]} differs from {files[0].name} ({first[0]}x{first[1]}); "
                              "all frames of a folder must have one size")
    plan = plan_exposures(len(files), lo, hi, seed, stride)
    with paired_output(out, overwrite) as tmp:
        cache = ImageCache(files, keep=False)
        for sub in ("blur", "sharp"):
            (tmp / sub).mkdir()
        records = []
        for start, n in plan:
            window = [cache.get(i) for i in range(start, start + n)]
            name = f"{files[start].stem}_n{n:02d}"
            write_image(tmp / "blur" / f"{name}.png", average_frames(window, gamma))
            write_image(tmp / "sharp" / f"{name}.png", window[n // 2].astype(np.float32) / 255.0)
            records.append({"name": name, "frames": [p.name for p in files[start:start + n]], "n": n,
                            "gamma": gamma, "start": start, "sharp": files[sharp_index(start, n)].name,
                            "source": Path(frames_dir).name})
        atomic_write_bytes(tmp / META_FILE, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())
    return records

