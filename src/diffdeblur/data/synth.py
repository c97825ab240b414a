"""Dynamic-scene blur synthesis from one sharp image (GoPro-style), seeded and pure.

Real dynamic-scene blur is the average of many sharp high-speed frames, in linear light, of a
scene where the camera shakes and objects move on their own (Nah et al., CVPR 2017). From a single
sharp photo this module builds such a scene: the photo is the background, moved by a random
camera shake (shift, in-plane rotation, zoom; see :mod:`.trajectories`), and zero or more
foreground blobs (textures cut from the photo itself or from a second photo) move in front of it
with their own motion. The exposure is rendered as ``subframes`` frames (see :mod:`.exposure`),
integrated in linear RGB, clipped (sensor saturation; highlights may first be boosted above 1 so
that bright streaks stay saturated, as in real photos), then sensor noise (shot + read) and
optional JPEG are applied. (``integration="srgb"`` averages sRGB-encoded values instead, the common
non-physical shortcut, for comparison.)

Outputs: the blurred image; the sharp reference (the instant t = 0.5, i.e. the middle sub-frame as
in GoPro, without its own small blur and without noise); optionally partial exposures (the mean of
the first k sub-frames, through the same sensor with the same noise draw, so the partial k = N is
exactly the blurred image) and the motion maps (per-pixel displacement over the exposure, and the
camera's blur kernel at the image centre).

Everything random is drawn from a ``numpy.random.Generator`` passed in: first
:func:`sample_params` draws all parameters (JSON-serialisable), then :func:`render` is a pure
function of (image, params).
"""
from __future__ import annotations

import dataclasses
import io as _io
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .exposure import (Layer, displacement_field, iter_subframes, linear_to_srgb, partial_exposures,
                       srgb_to_linear, subframe_times)
from .trajectories import KNOTS, Motion, knot_times, sample_camera_motion, sample_object_motion, splat_kernel

Range = tuple[float, float]
STEP_PX = 1.0  # most a point may move between two rendered instants: bilinear footprints 1 px apart
# tile a streak evenly, so blur is continuous (no ghost copies)
MAX_SUBSTEPS = 64  # cap on instants per sub-frame (compute bound for extreme motions)
MARGIN_EXTRA = 2  # px of canvas beyond the farthest sampled point (bilinear support + rounding)
BLOB_HARMONICS = 4  # shape harmonics 2..5 of a foreground blob's outline
BLOB_EDGE_PX = 1.5  # anti-aliased edge width of a foreground blob
INTEGRATIONS = ("linear", "srgb")


@dataclass(frozen=True)
class SynthPreset:
    """Ranges the parameters of one sample are drawn from (uniformly, ``(lo, hi)`` inclusive).

    Lengths are in pixels of the output image. ``layers`` is the (min, max) number of moving
    foreground objects. Noise: ``shot_noise`` is the variance per unit of linear signal,
    ``read_noise`` the standard deviation, both in linear units of full scale.
    """

    name: str
    subframes: int = 11  # high-speed frames averaged per blurred image (GoPro: 7-13 at 240 fps)
    camera_length: Range = (4.0, 30.0)  # arc length of the camera path, px
    camera_curvature: Range = (0.0, 1.0)  # RMS heading deviation, rad (0 = straight)
    camera_jerk_prob: float = 0.1
    rotation_deg: Range = (0.0, 0.5)  # in-plane rotation range over the exposure
    zoom: Range = (0.0, 0.01)  # relative scale change over the exposure
    layers: tuple[int, int] = (0, 2)
    layer_length: Range = (5.0, 40.0)
    layer_curvature: Range = (0.0, 0.5)
    layer_rotation_deg: Range = (0.0, 5.0)
    layer_size: Range = (0.08, 0.3)  # blob radius as a fraction of the output's shorter side
    layer_other_prob: float = 0.5  # chance that the layers' texture comes from a second image
    highlight_prob: float = 0.5  # chance of boosting near-saturated pixels above 1 (linear)
    highlight_gain: Range = (1.5, 6.0)
    highlight_threshold: float = 0.95  # sRGB value from which a pixel counts as saturated
    shot_noise: Range = (0.0, 2e-3)
    read_noise: Range = (0.0, 3e-3)
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (70, 95)
    # "linear": sub-frames are averaged in linear light (physical); "srgb": averaged as sRGB-encoded
    # values (the common shortcut, kept as an ablation; noise is still added in linear light)
    integration: str = "linear"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, SynthPreset] = {p.name: p for p in (
    SynthPreset("gopro-like"),
    SynthPreset("mild", subframes=7, camera_length=(1.0, 10.0), camera_curvature=(0.0, 0.5), camera_jerk_prob=0.0,
                rotation_deg=(0.0, 0.2), zoom=(0.0, 0.003), layers=(0, 1), layer_length=(2.0, 12.0),
                highlight_prob=0.3, shot_noise=(0.0, 1e-3), read_noise=(0.0, 2e-3)),
    SynthPreset("severe", subframes=13, camera_length=(15.0, 60.0), camera_curvature=(0.3, 2.0), camera_jerk_prob=0.3,
                rotation_deg=(0.0, 2.0), zoom=(0.0, 0.03), layers=(1, 3), layer_length=(10.0, 60.0),
                layer_curvature=(0.0, 1.0), layer_rotation_deg=(0.0, 15.0), highlight_prob=0.7,
                highlight_gain=(2.0, 10.0), shot_noise=(5e-4, 5e-3), read_noise=(1e-3, 8e-3), jpeg_prob=0.3),
    SynthPreset("camera-shake-only", camera_length=(3.0, 35.0), camera_curvature=(0.0, 1.5), camera_jerk_prob=0.2,
                rotation_deg=(0.0, 1.0), zoom=(0.0, 0.0), layers=(0, 0)),
    # calibrated on the real GoPro + REDS train pairs by benchmarks/studies/synth_calibration.py (grid search;
    # docs/results/synth_calibration.md): `gopro-like` with the extent, noise and highlights the
    # real pairs show. No highlight boost (real blur averages already-clipped frames, so its clipped
    # area shrinks), no shot noise and faint read noise (averaged frames are nearly noise-free),
    # a camera path from 0 px (static parts) and shorter layer paths. Linear light stays: real REDS
    # blur is brighter than its sharp frame as linear averaging predicts (GoPro's is not; use
    # integration="srgb" to match GoPro alone).
    SynthPreset("real-like", camera_length=(0.0, 32.0), layer_length=(4.0, 24.0), highlight_prob=0.0,
                shot_noise=(0.0, 0.0), read_noise=(0.0, 1e-3)),
)}


def get_preset(name: str, **overrides: Any) -> SynthPreset:
    """The named preset, with fields replaced by ``overrides`` (lists become tuples)."""
    if name not in PRESETS:
        raise ValueError(f"unknown synth preset '{name}'; known: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(SynthPreset)} - {"name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown synth option '{unknown[0]}' (allowed: {', '.join(sorted(fields))})")
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    preset = dataclasses.replace(PRESETS[name], **clean)
    if preset.subframes < 1:
        raise ValueError(f"synth subframes must be >= 1, got {preset.subframes}")
    if preset.integration not in INTEGRATIONS:
        raise ValueError(f"synth integration must be one of {', '.join(INTEGRATIONS)}, got '{preset.integration}'")
    return preset


@dataclass(frozen=True)
class LayerParams:
    """One foreground blob. centre (x, y) px in output coordinates at t = 0.5; radius px;
    aspect >= 1 squashes it; orientation rad; harmonics ((amplitude, phase), ...) for outline
    frequencies 2, 3, ...; source "self" | "other" and texture_at (u, v) in [0, 1]: where in the
    source image the texture window lies; motion: its own motion about its centre."""

    centre: tuple[float, float]
    radius: float
    aspect: float
    orientation: float
    harmonics: tuple[tuple[float, float], ...]
    source: str
    texture_at: tuple[float, float]
    motion: Motion

    def to_dict(self) -> dict[str, Any]:
        return {"centre": [round(c, 3) for c in self.centre], "radius": round(self.radius, 3),
                "aspect": round(self.aspect, 4), "orientation": round(self.orientation, 4),
                "harmonics": [[round(a, 4), round(p, 4)] for a, p in self.harmonics], "source": self.source,
                "texture_at": [round(u, 4) for u in self.texture_at], "motion": self.motion.summary()}


@dataclass(frozen=True)
class SynthParams:
    """Everything one sample needs; with the image it fully determines the output."""

    subframes: int
    camera: Motion
    layers: tuple[LayerParams, ...] = ()
    highlight_gain: float = 1.0  # 1 = no boost
    highlight_threshold: float = 0.95
    shot_noise: float = 0.0
    read_noise: float = 0.0
    jpeg_quality: int = 0  # 0 = no JPEG
    noise_seed: int = 0
    other_pick: float = 0.0  # in [0, 1): which second image supplies "other" textures
    integration: str = "linear"  # see SynthPreset.integration

    def to_dict(self) -> dict[str, Any]:
        return {"subframes": self.subframes, "camera": self.camera.summary(),
                "layers": [lp.to_dict() for lp in self.layers], "highlight_gain": round(self.highlight_gain, 4),
                "highlight_threshold": self.highlight_threshold, "shot_noise": self.shot_noise,
                "read_noise": self.read_noise, "jpeg_quality": self.jpeg_quality, "noise_seed": self.noise_seed,
                "other_pick": round(self.other_pick, 6), "integration": self.integration}


def still_params(subframes: int = 11) -> SynthParams:
    """No motion, no layers, no highlight boost, no noise: render() returns the input."""
    return SynthParams(subframes=subframes, camera=Motion.still())


def _uniform(rng: np.random.Generator, r: Sequence[float]) -> float:
    lo, hi = float(r[0]), float(r[1])
    return lo if hi <= lo else float(rng.uniform(lo, hi))


def sample_params(rng: np.random.Generator, preset: SynthPreset, height: int, width: int,
                  allow_other: bool = False) -> SynthParams:
    """Draw one sample's parameters for an output of ``height`` x ``width`` px.

    ``allow_other``: a second image is available for foreground textures. The draws happen in a
    fixed order and their number does not depend on the image content, so a seed gives the same
    parameters for every image of the same size.
    """
    camera = sample_camera_motion(
        rng, _uniform(rng, preset.camera_length), _uniform(rng, preset.camera_curvature),
        rotation_deg=_uniform(rng, preset.rotation_deg), zoom=_uniform(rng, preset.zoom),
        jerk_prob=preset.camera_jerk_prob)
    n_layers = int(rng.integers(preset.layers[0], preset.layers[1] + 1))
    use_other = allow_other and rng.random() < preset.layer_other_prob
    layers = []
    short = min(height, width)
    for _ in range(n_layers):
        radius = max(2.0, _uniform(rng, preset.layer_size) * short)
        layers.append(LayerParams(
            centre=(float(rng.uniform(0, width - 1)), float(rng.uniform(0, height - 1))),
            radius=radius, aspect=float(rng.uniform(1.0, 2.0)), orientation=float(rng.uniform(0, math.pi)),
            harmonics=tuple((float(rng.uniform(0, 0.2 / k)), float(rng.uniform(0, 2 * math.pi)))
                            for k in range(2, 2 + BLOB_HARMONICS)),
            source="other" if use_other else "self",
            texture_at=(float(rng.random()), float(rng.random())),
            motion=sample_object_motion(rng, _uniform(rng, preset.layer_length), _uniform(rng, preset.layer_curvature),
                                        rotation_deg=_uniform(rng, preset.layer_rotation_deg))))
    boost = rng.random() < preset.highlight_prob
    gain = _uniform(rng, preset.highlight_gain)
    shot, read = _uniform(rng, preset.shot_noise), _uniform(rng, preset.read_noise)
    jpeg = rng.random() < preset.jpeg_prob
    quality = int(rng.integers(preset.jpeg_quality[0], preset.jpeg_quality[1] + 1))
    return SynthParams(
        subframes=preset.subframes, camera=camera, layers=tuple(layers),
        highlight_gain=gain if boost else 1.0, highlight_threshold=preset.highlight_threshold,
        shot_noise=shot, read_noise=read, jpeg_quality=quality if jpeg else 0,
        noise_seed=int(rng.integers(0, 2 ** 63 - 1)), other_pick=float(rng.random()),
        integration=preset.integration)


# ---- geometry helpers -------------------------------------------------------------------------

def crop_reflect(image: np.ndarray, y0: int, x0: int, height: int, width: int) -> np.ndarray:
    """(height, width, C) window of ``image`` at (y0, x0); parts outside are mirrored (no edge repeat)."""
    h, w = image.shape[:2]

    def idx(start: int, n: int, size: int) -> np.ndarray:
        i = np.arange(start, start + n)
        if size == 1:
            return np.zeros_like(i)
        period = 2 * (size - 1)
        i = np.mod(i, period)
        return np.where(i >= size, period - i, i)

    return image[idx(y0, height, h)[:, None], idx(x0, width, w)[None, :]]


def _layer_maps(layer: LayerParams, camera: Motion, out_centre: tuple[float, float]) -> np.ndarray:
    """(KNOTS, 3, 3) forward maps (object then camera) in output coordinates."""
    return camera.forward_affine(knot_times(), out_centre) @ layer.motion.forward_affine(knot_times(), layer.centre)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0, 1.0], [x1, y0, 1.0], [x0, y1, 1.0], [x1, y1, 1.0]])


def _blob_reach(layer: LayerParams) -> float:
    """Largest distance (px) from a blob's centre to its outline."""
    return layer.radius * (1 + sum(a for a, _ in layer.harmonics))


def required_margin(params: SynthParams, height: int, width: int) -> int:
    """Canvas border (px) so that every background point the camera brings into the output, and
    every foreground blob whole, lies inside the canvas (a blob is only ever sampled where it is)."""
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    m = params.camera.forward_affine(knot_times(), centre)
    src = _rect(0, 0, width - 1, height - 1) @ np.linalg.inv(m).transpose(0, 2, 1)  # (KNOTS, 4, 3)
    reach = max(0.0, float(np.max(-src[..., 0])), float(np.max(src[..., 0] - (width - 1))),
                float(np.max(-src[..., 1])), float(np.max(src[..., 1] - (height - 1))))
    for lp in params.layers:
        r, (cx, cy) = _blob_reach(lp), lp.centre
        reach = max(reach, r - cx, cx + r - (width - 1), r - cy, cy + r - (height - 1))
    return int(math.ceil(reach)) + MARGIN_EXTRA


def required_substeps(params: SynthParams, height: int, width: int) -> tuple[int, ...]:
    """Instants for each sub-frame so that no visible point moves more than STEP_PX between two
    instants (fast parts of the path get more instants than slow ones)."""
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    probes = [(params.camera.forward_affine(knot_times(), centre), _rect(0, 0, width - 1, height - 1))]
    for lp in params.layers:
        r = _blob_reach(lp)
        probes.append((_layer_maps(lp, params.camera, centre),
                       _rect(lp.centre[0] - r, lp.centre[1] - r, lp.centre[0] + r, lp.centre[1] + r)))
    speed = np.zeros(KNOTS - 1)  # px per unit exposure time, per knot interval
    for m, pts in probes:
        pos = pts @ m.transpose(0, 2, 1)  # (KNOTS, 4, 3)
        step = np.linalg.norm(np.diff(pos[..., :2], axis=0), axis=-1).max(axis=1)
        speed = np.maximum(speed, step * (KNOTS - 1))
    n = params.subframes
    edges = np.linspace(0.0, 1.0, KNOTS)
    out = []
    for j in range(n):
        inside = (edges[1:] > j / n) & (edges[:-1] < (j + 1) / n)
        need = float(speed[inside].max(initial=0.0)) / (n * STEP_PX)
        out.append(int(min(MAX_SUBSTEPS, max(1, math.ceil(need)))))
    return tuple(out)


def blob_alpha(height: int, width: int, layer: LayerParams, offset: float) -> np.ndarray:
    """(height, width) float32 alpha of a blob whose output-coordinate centre is shifted by ``offset``."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    dx, dy = xs - (layer.centre[0] + offset), ys - (layer.centre[1] + offset)
    c, s = math.cos(layer.orientation), math.sin(layer.orientation)
    u, v = c * dx + s * dy, (-s * dx + c * dy) * layer.aspect
    theta = np.arctan2(v, u)
    r = np.full_like(theta, layer.radius)
    for k, (a, p) in enumerate(layer.harmonics, start=2):
        r += layer.radius * a * np.cos(k * theta + p)
    return np.clip((r - np.hypot(u, v)) / BLOB_EDGE_PX + 0.5, 0.0, 1.0).astype(np.float32)


def boost_highlights(srgb: np.ndarray, linear: np.ndarray, gain: float, threshold: float) -> np.ndarray:
    """Scale linear radiance of near-saturated pixels (max sRGB channel above ``threshold``) by up to
    ``gain``: a clipped pixel in a photo stands for an unknown, brighter radiance."""
    if gain <= 1.0:
        return linear
    v = srgb.max(axis=2, keepdims=True)
    w = np.clip((v - threshold) / max(1.0 - threshold, 1e-6), 0.0, 1.0)
    return (linear * (1.0 + (gain - 1.0) * w)).astype(np.float32)


# ---- sensor -----------------------------------------------------------------------------------

def jpeg_roundtrip(srgb: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, 3) float sRGB -> the same after 8-bit JPEG encoding at ``quality``, float32 in [0, 1]."""
    buf = _io.BytesIO()
    Image.fromarray(np.round(np.clip(srgb, 0, 1) * 255).astype(np.uint8)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def apply_sensor(linear: np.ndarray, noise: np.ndarray | None, shot: float, read: float,
                 jpeg_quality: int = 0) -> np.ndarray:
    """Linear exposure (..., H, W, 3) -> recorded sRGB float32 in [0, 1].

    Saturation clip, then heteroscedastic Gaussian noise x + sqrt(shot * x + read^2) * n (the
    usual Poisson-Gaussian approximation) with ``noise`` a standard-normal (H, W, 3) draw, clip,
    sRGB encoding, optional JPEG.
    """
    x = np.clip(linear, 0.0, 1.0)
    if noise is not None and (shot > 0 or read > 0):
        x = np.clip(x + np.sqrt(shot * x + read ** 2) * noise, 0.0, 1.0)
    y = linear_to_srgb(x)
    if jpeg_quality:
        y = np.stack([jpeg_roundtrip(im, jpeg_quality) for im in y.reshape(-1, *y.shape[-3:])]).reshape(y.shape)
    return y.astype(np.float32)


# ---- rendering --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SynthResult:
    """One synthetic pair. Images are (H, W, 3) float32 sRGB in [0, 1].

    partials: (K, H, W, 3) for ``partial_ks`` (or None); motion: (H, W, 2) float32 px
    displacement (dx, dy) of each pixel's scene point from exposure start to end (or None);
    kernel: the camera's blur kernel at the image centre, (k, k) float64 summing to 1 (or None).
    subframes: (N, H, W, 3) linear sub-frames, kept only when asked for (tests, analysis).
    """

    blur: np.ndarray
    sharp: np.ndarray
    params: SynthParams
    substeps: tuple[int, ...]  # instants rendered per sub-frame
    margin: int
    partial_ks: tuple[int, ...] = ()
    partials: np.ndarray | None = None
    motion: np.ndarray | None = None
    kernel: np.ndarray | None = None
    subframes: np.ndarray | None = None


def render(image: np.ndarray, params: SynthParams, box: tuple[int, int, int, int] | None = None, *,
           other: np.ndarray | None = None, partials: Sequence[int] = (), motion: bool = False,
           keep_subframes: bool = False) -> SynthResult:
    """Render the blurred exposure of ``image`` (H, W, 3) sRGB (float in [0, 1] or uint8) under ``params``.

    box: (y0, x0, height, width) output window in image coordinates (default: the whole image);
    the window may extend past the image (mirrored). The canvas is the window plus the margin the
    motion needs, taken from the image itself (mirrored only beyond the image border). other: the
    second image for "other" textures (falls back to ``image``). partials: k values in 1..subframes.
    """
    h_img, w_img = image.shape[:2]
    y0, x0, height, width = box if box is not None else (0, 0, h_img, w_img)
    n = params.subframes
    ks = tuple(int(k) for k in partials)
    if any(not 1 <= k <= n for k in ks):
        raise ValueError(f"partial exposures must be in 1..{n} (the number of sub-frames), got {list(ks)}")
    m = required_margin(params, height, width)
    substeps = required_substeps(params, height, width)
    ch, cw = height + 2 * m, width + 2 * m

    def linear_window(src: np.ndarray, wy: int, wx: int) -> np.ndarray:
        srgb = np.ascontiguousarray(crop_reflect(src, wy, wx, ch, cw), dtype=np.float32)
        if src.dtype == np.uint8:
            srgb /= 255.0
        values = srgb_to_linear(srgb) if params.integration == "linear" else srgb
        return boost_highlights(srgb, values, params.highlight_gain, params.highlight_threshold)

    background = linear_window(image, y0 - m, x0 - m)
    layers = []
    for lp in params.layers:
        src = other if lp.source == "other" and other is not None else image
        wy = int(round(lp.texture_at[1] * max(src.shape[0] - ch, 0)))
        wx = int(round(lp.texture_at[0] * max(src.shape[1] - cw, 0)))
        centre = (lp.centre[0] + m, lp.centre[1] + m)
        layers.append(Layer(linear_window(src, wy, wx), blob_alpha(ch, cw, lp, m), lp.motion, centre))

    frames = (f[m:m + height, m:m + width] for f in iter_subframes(background, params.camera, layers, n, substeps))
    if keep_subframes:
        frames = np.stack(list(frames))
    # t = 0.5: every motion is the identity, so the sharp frame is the plain back-to-front composite
    sharp_lin = background[m:m + height, m:m + width]
    for layer in layers:
        a = layer.alpha[m:m + height, m:m + width, None]
        sharp_lin = layer.texture[m:m + height, m:m + width] * a + (1.0 - a) * sharp_lin
    noise = None
    if params.shot_noise > 0 or params.read_noise > 0:
        noise = np.random.default_rng(params.noise_seed).standard_normal((height, width, 3), dtype=np.float32)
    exposures = partial_exposures(frames, (n, *ks))
    if params.integration == "srgb":  # averaged as encoded values: decode for the sensor model
        exposures = srgb_to_linear(np.clip(exposures, 0.0, 1.0))
        sharp_lin = srgb_to_linear(np.clip(sharp_lin, 0.0, 1.0))
    recorded = apply_sensor(exposures, noise, params.shot_noise, params.read_noise, params.jpeg_quality)
    flow = kernel = None
    if motion:
        flow = displacement_field(params.camera, layers, ch, cw)[m:m + height, m:m + width]
        times = subframe_times(n, substeps)
        weights = np.concatenate([np.full(len(t), 1.0 / (n * len(t))) for t in times])
        kernel = splat_kernel(params.camera.at(np.concatenate(times))[0], weights=weights)
    return SynthResult(
        blur=recorded[0], sharp=linear_to_srgb(np.clip(sharp_lin, 0.0, 1.0)), params=params, substeps=substeps,
        margin=m, partial_ks=ks, partials=recorded[1:] if ks else None, motion=flow, kernel=kernel,
        subframes=frames if keep_subframes else None)


def random_box(rng: np.random.Generator, height: int, width: int, size: int | None) -> tuple[int, int, int, int]:
    """A uniformly placed (y0, x0, h, w) window of ``size`` (clamped to the image), or the whole image."""
    if not size:
        return 0, 0, height, width
    h, w = min(size, height), min(size, width)
    return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w


def synthesize(image: np.ndarray, rng: np.random.Generator, preset: SynthPreset | str = "gopro-like", *,
               crop: int | None = None, other: np.ndarray | None = None, partials: Sequence[int] = (),
               motion: bool = False) -> SynthResult:
    """Draw parameters from ``rng`` and render one blurred / sharp pair from ``image``.

    image: (H, W, 3) float sRGB in [0, 1]; crop: output size (a random window) or None for the
    whole image; other: a second image for foreground textures.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    box = random_box(rng, image.shape[0], image.shape[1], crop)
    params = sample_params(rng, preset, box[2], box[3], allow_other=other is not None)
    return render(image, params, box, other=other, partials=partials, motion=motion)


def sample_seed(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` under a run seed: independent of order and worker count."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
